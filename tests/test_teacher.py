"""The teacher stage: checkpoints (weights-only, checked against the data), reuse, pretrained weights, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error

import pytest
import torch
from mlflow.tracking import MlflowClient

from kdsweep import teacher as teacher_command
from kdsweep.data import DataSpec, load_dataset, split_images
from kdsweep.errors import ConfigError
from kdsweep.models import create_model, load_pretrained
from kdsweep.teachers import TeacherMeta, TeacherSpec, cache_path, load_teacher, prepare_teacher, save_teacher


def meta_for(data, **change) -> TeacherMeta:
    fields = dict(
        arch="small_cnn",
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        dataset=data.name,
        test_accuracy=0.5,
        seed=0,
    )
    return TeacherMeta(**{**fields, **change})


def test_a_saved_teacher_loads_with_the_same_outputs(tiny_data, tmp_path):
    module = create_model("small_cnn", tiny_data.num_classes, tiny_data.in_channels, tiny_data.image_size).eval()
    save_teacher(tmp_path / "t.pt", module, meta_for(tiny_data))
    loaded, meta = load_teacher(str(tmp_path / "t.pt"), tiny_data)
    images = split_images(tiny_data, tiny_data.val)[:8]
    assert torch.equal(loaded(images), module(images))
    assert meta.input_shape == tiny_data.input_shape
    assert meta.test_accuracy == 0.5


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/kdsweep-pwned",))


def test_a_checkpoint_carrying_a_pickled_payload_is_refused_not_run(tiny_data, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "kdsweep-teacher/1", "meta": {}, "state_dict": {}, "x": Payload()}, path)
    with pytest.raises(ConfigError, match=r"teacher.checkpoint: .*refused"):
        load_teacher(str(path), tiny_data)
    assert not os.path.exists("/tmp/kdsweep-pwned")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 7}, "predicts 7 classes but synthetic has 4"),
        ({"input_shape": (3, 8, 8)}, r"expects inputs \(3, 8, 8\) but synthetic has \(1, 8, 8\)"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_data_is_refused(tiny_data, tmp_path, change, message):
    classes = change.get("num_classes", tiny_data.num_classes)
    channels = change.get("input_shape", tiny_data.input_shape)[0]
    module = create_model("small_cnn", classes, channels, tiny_data.image_size)
    save_teacher(tmp_path / "t.pt", module, meta_for(tiny_data, **change))
    with pytest.raises(ConfigError, match=message):
        load_teacher(str(tmp_path / "t.pt"), tiny_data)


def test_files_that_are_not_teachers_are_refused(tiny_data, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_teacher(str(tmp_path / "junk.pt"), tiny_data)
    with pytest.raises(ConfigError, match="not a kdsweep teacher file"):
        load_teacher(str(tmp_path / "plain.pt"), tiny_data)
    with pytest.raises(ConfigError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.pt"), tiny_data)


def test_a_trained_teacher_is_reused_by_the_next_sweep_on_the_same_data(tiny_data, tmp_path):
    spec = TeacherSpec(arch="small_cnn", epochs=1, cache_dir=str(tmp_path))
    lines: list[str] = []
    first = prepare_teacher(spec, tiny_data, log=lines.append)
    assert first.source.startswith("trained:")
    assert first.history
    second = prepare_teacher(spec, tiny_data, log=lines.append)
    assert second.source.startswith("cache:")
    assert any("reusing" in line for line in lines)
    for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other_seed = prepare_teacher(spec.model_copy(update={"seed": 1}), tiny_data, log=lines.append)
    assert other_seed.source.startswith("trained:")


def test_a_teacher_kept_under_a_path_with_quotes_has_one_mlflow_run(tiny_data, tmp_path):
    from kdsweep.tracking.teacher_run import log_teacher

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = TeacherSpec(arch="small_cnn", epochs=1, cache_dir=str(tmp_path / "o'brien's \"teachers\""))
    trained = prepare_teacher(spec, tiny_data, log=lambda _: None)
    first, _ = log_teacher(uri, trained, tiny_data)
    reused = prepare_teacher(spec, tiny_data, log=lambda _: None)  # the same file, found in the cache
    assert reused.source.startswith("cache:")
    assert "o'brien's" in reused.source
    assert log_teacher(uri, reused, tiny_data)[0] == first
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("kdsweep-teachers").experiment_id])) == 1


def test_the_cache_key_changes_with_everything_that_makes_the_teacher_and_nothing_else(tmp_path):
    base = DataSpec(name="synthetic", channels=1, image_size=8, num_classes=4, num_samples=160)
    spec = TeacherSpec(arch="small_cnn", epochs=1, cache_dir=str(tmp_path))
    reference = cache_path(spec, load_dataset(base))
    other_data = [{"val_fraction": 0.2}, {"test_fraction": 0.3}, {"num_samples": 200}, {"image_size": 12}, {"seed": 1}]
    for change in other_data:
        assert cache_path(spec, load_dataset(base.model_copy(update=change))) != reference, change
    other_training = [{"lr": 0.1}, {"batch_size": 32}, {"optimizer": "adamw"}, {"epochs": 2}, {"seed": 3}]
    for change in other_training:
        assert cache_path(spec.model_copy(update=change), load_dataset(base)) != reference, change
    for change in ({"mode": "online"}, {"cache_limit_mb": 8}):  # how trials get its outputs: the same teacher
        assert cache_path(spec.model_copy(update=change), load_dataset(base)) == reference, change


def test_two_folders_of_the_same_name_do_not_share_a_teacher(tmp_path):
    from PIL import Image

    paths = []
    for parent, shade in (("one", 10), ("two", 200)):
        root = tmp_path / parent / "pets"
        for split in ("train", "test"):
            for label in ("a", "b"):
                (root / split / label).mkdir(parents=True)
                for i in range(4):
                    Image.new("L", (8, 8), color=shade + i).save(root / split / label / f"{i}.png")
        paths.append(cache_path(TeacherSpec(), load_dataset(DataSpec(name=str(root), image_size=8, val_fraction=0.25))))
    assert paths[0] != paths[1]
    assert paths[0].name.startswith("pets-")


def test_a_teacher_trained_on_other_data_of_the_same_shape_is_refused(tiny_data, tmp_path):
    spec = TeacherSpec(arch="small_cnn", epochs=1, cache_dir=str(tmp_path))
    trained = prepare_teacher(spec, tiny_data, log=lambda _: None)
    assert trained.meta.data_digest == tiny_data.digest
    assert trained.meta.lr == spec.lr
    path = trained.source.removeprefix("trained:")
    other = load_dataset(tiny_data.spec.model_copy(update={"seed": 1}))  # same shape and classes, other splits
    with pytest.raises(ConfigError, match=r"teacher.checkpoint: .* was trained on other data than this sweep's"):
        prepare_teacher(TeacherSpec(checkpoint=path), other)
    assert prepare_teacher(TeacherSpec(checkpoint=path), tiny_data).meta == trained.meta


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"format": "kdsweep-teacher/1", "meta": {}, "state_dict": {}}, "an older kdsweep teacher file"),
        ({"format": "kdsweep-teacher/2", "meta": {"arch": "small_cnn"}, "state_dict": {}}, "malformed metadata"),
        ({"format": "kdsweep-teacher/2", "meta": "arch", "state_dict": {}}, "malformed metadata"),
        ({"meta": {"arch": "resnet1800"}}, "holds a 'resnet1800', which is not a registered model"),
        ({"state_dict": {"conv.weight": torch.zeros(2)}}, "does not hold the weights of a small_cnn"),
    ],
)
def test_teacher_files_with_bad_metadata_or_weights_are_one_line_errors(tiny_data, tmp_path, payload, message):
    good = {"format": "kdsweep-teacher/2", "meta": meta_for(tiny_data).model_dump(), "state_dict": {}}
    if "meta" in payload and isinstance(payload["meta"], dict) and "format" not in payload:
        payload = {**good, "meta": {**good["meta"], **payload["meta"]}}
    torch.save({**good, **payload}, tmp_path / "t.pt")
    with pytest.raises(ConfigError, match=message) as caught:
        load_teacher(str(tmp_path / "t.pt"), tiny_data)
    assert caught.value.field == "teacher.checkpoint"
    assert "\n" not in str(caught.value)


def test_pretrained_torchvision_weights_are_copied_where_shapes_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = create_model("resnet18", 1000, 3, 224)  # torchvision's own layout
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.fill_(0.25)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")  # as if downloaded before
    model = create_model("resnet18", 10, 1, 32)  # small stem, one channel, ten classes
    skipped = load_pretrained(model, "resnet18", "IMAGENET1K_V1")
    assert set(skipped) >= {"conv1.weight", "fc.weight", "fc.bias"}
    assert torch.all(model.layer1[0].conv1.weight == 0.25)
    assert not torch.all(model.conv1.weight == 0.25)


def test_pretrained_weights_without_network_say_where_to_put_the_file(tmp_path, monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(ValueError, match=r"without network, put resnet18-f37072fd.pth from https://download"):
        load_pretrained(create_model("resnet18", 10, 3, 32), "resnet18", "IMAGENET1K_V1")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'"):
        load_pretrained(create_model("resnet18", 10, 3, 32), "resnet18", "IMAGENET9K")
    with pytest.raises(ValueError, match="'resnet8' has no pretrained weights"):
        load_pretrained(create_model("resnet8", 10, 3, 32), "resnet8", "IMAGENET1K_V1")


@pytest.mark.slow  # a subprocess that trains and logs a teacher
def test_teacher_cli_trains_saves_and_logs_a_teacher_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdsweep.teacher",
            "--dataset",
            "digits",
            "--teacher-arch",
            "small_cnn",
            "--teacher-epochs",
            "2",
            "--output",
            str(tmp_path / "teacher.pt"),
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test_accuracy" in out.stdout
    assert (tmp_path / "teacher.pt").exists()
    data = load_dataset(DataSpec(name="digits"))
    _module, meta = load_teacher(str(tmp_path / "teacher.pt"), data)
    assert meta.arch == "small_cnn"
    assert meta.num_classes == 10
    assert 0.1 < meta.test_accuracy <= 1.0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("kdsweep-teachers").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.metrics["test_accuracy"] == pytest.approx(meta.test_accuracy)
    assert "val_accuracy" in runs[0].data.metrics


def test_teacher_cli_refuses_an_unknown_arch_with_exit_2(capsys):
    assert teacher_command.main(["--teacher-arch", "resnet1800"]) == 2
    assert "teacher.arch: unknown model 'resnet1800'" in capsys.readouterr().err


def test_a_teacher_registered_in_mlflow_is_accepted_by_uri_and_checked_against_the_data(tiny_data, tmp_path):
    import mlflow

    from kdsweep.tracking.teacher_run import log_teacher

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    teacher = prepare_teacher(
        TeacherSpec(arch="small_cnn", epochs=1, cache_dir=str(tmp_path)), tiny_data, log=lambda _: None
    )
    run_id, _ = log_teacher(uri, teacher, tiny_data)
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(f"runs:/{run_id}/model", "tiny-teacher")
    MlflowClient(uri).set_registered_model_alias("tiny-teacher", "best", version.version)

    loaded = prepare_teacher(TeacherSpec(checkpoint="models:/tiny-teacher@best"), tiny_data)
    images = split_images(tiny_data, tiny_data.val)[:4]
    assert torch.allclose(loaded.module(images), teacher.module(images), atol=1e-5)
    assert loaded.meta.num_classes == 4
    assert log_teacher(uri, loaded, tiny_data)[0] == run_id  # linked, not logged again

    other = load_dataset(DataSpec(name="synthetic", channels=1, image_size=8, num_classes=3, num_samples=120))
    with pytest.raises(ConfigError, match="predicts 4 classes but synthetic has 3"):
        prepare_teacher(TeacherSpec(checkpoint="models:/tiny-teacher@best"), other)
    same_shape = load_dataset(tiny_data.spec.model_copy(update={"seed": 2}))
    with pytest.raises(ConfigError, match="models:/tiny-teacher@best was trained on other data than this sweep's"):
        prepare_teacher(TeacherSpec(checkpoint="models:/tiny-teacher@best"), same_shape)
    with pytest.raises(ConfigError, match=r"teacher.checkpoint: cannot load models:/tiny-teacher@nope"):
        prepare_teacher(TeacherSpec(checkpoint="models:/tiny-teacher@nope"), tiny_data)


def test_a_teacher_fine_tuned_from_pretrained_weights_starts_from_them(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = create_model("resnet18", 1000, 3, 224)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    spec = TeacherSpec(arch="resnet18", weights="IMAGENET1K_V1", epochs=1, cache_dir=str(tmp_path / "teachers"))
    teacher = prepare_teacher(spec, tiny_data, log=lambda _: None)
    assert "IMAGENET1K_V1" in teacher.source
    # one epoch of SGD moves the weights a little: they still correlate with the pretrained ones
    started = reference.layer4[1].conv2.weight.flatten()
    trained = teacher.module.layer4[1].conv2.weight.flatten()
    assert torch.corrcoef(torch.stack([started, trained]))[0, 1] > 0.9
    with pytest.raises(ConfigError, match=r"teacher.weights: unknown weights 'NOPE'"):
        prepare_teacher(spec.model_copy(update={"weights": "NOPE"}), tiny_data, log=lambda _: None)
