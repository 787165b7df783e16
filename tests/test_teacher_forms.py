"""The teacher a user already has: a state_dict (both stems, kdsweep's or torchvision's, .pt or
.safetensors), a TorchScript file, an ONNX file; its own preprocessing; and what is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import torchvision.models as tvm
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file
from test_sweep import TINY_SPACE, refused, sweep, write_space
from torch import nn
from torch.nn import functional

from kdsweep import teacher as teacher_command
from kdsweep.config import load_config
from kdsweep.data import DataSpec, load_dataset, split_images
from kdsweep.errors import ConfigError
from kdsweep.models import create_model
from kdsweep.shipping.onnx_export import export_onnx
from kdsweep.shipping.torchscript_export import export_torchscript
from kdsweep.sweep.teacher_stage import find_teachers, teacher_stage
from kdsweep.teachers import TeacherSpec, build_teacher_cache, prepare_teacher
from kdsweep.teachers.brought import near_chance, weights_mismatch
from kdsweep.teachers.preprocess import InputAdapter, InputStats, dataset_input, to_teacher_input
from kdsweep.tracking.models import load_logged_model
from kdsweep.tracking.teacher_run import log_teacher

CPU = torch.device("cpu")
# How the "elsewhere" teacher was trained: its own pipeline's statistics, 3 channels, 32 px.
ELSEWHERE = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "channels": 3, "image_size": 32}


FILES = {
    "kdsweep_state_dict": "kdsweep.pt",
    "torchvision_state_dict": "torchvision.pth",
    "safetensors": "teacher.safetensors",
    "resnet8_state_dict": "resnet8.pt",
    "torchscript": "teacher.ts",
    "onnx": "teacher.onnx",
}
FORMS = ["kdsweep_state_dict", "torchvision_state_dict", "safetensors", "torchscript", "onnx"]
# The state_dict form of the same teacher: what each form's logits must equal.
REFERENCE = {"torchscript": "resnet8_state_dict", "onnx": "resnet8_state_dict"}


def quiet(_line: str) -> None:
    pass


def fitted(build: Callable[[], nn.Module], data, theirs: InputStats, ridge: float = 1.0) -> nn.Module:
    """A teacher as a user's own pipeline might make one in a second, on its own input `theirs`: seeded random
    features, batch-norm statistics of its training images, then a ridge-regression head (`model.fc`)."""
    torch.manual_seed(0)
    model = build()
    adapt = InputAdapter(dataset_input(data), theirs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the one batch
            module.reset_running_stats()
    head, model.fc = model.fc, nn.Identity()
    with torch.no_grad():
        model.train()(adapt(split_images(data, data.train)))
        features = model.eval()(adapt(split_images(data, data.train)))
    features = torch.cat([features, torch.ones(len(features), 1)], 1)
    targets = functional.one_hot(data.train.labels, data.num_classes).float()
    weights = torch.linalg.solve(features.T @ features + ridge * torch.eye(features.shape[1]), features.T @ targets)
    head.weight.data, head.bias.data = weights[:-1].T.contiguous(), weights[-1].contiguous()
    model.fc = head
    return model.eval()


@pytest.fixture(scope="module")
def files(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Two teachers in every form a user may hold them: a resnet18 as state_dicts, a resnet8 exported."""
    root = tmp_path_factory.mktemp("teacher-forms")
    own = dataset_input(tiny_data)
    resnet18 = fitted(lambda: create_model("resnet18", tiny_data.num_classes, 1, tiny_data.image_size), tiny_data, own)
    torchvision_small = tvm.resnet18(num_classes=tiny_data.num_classes)  # the CIFAR recipe, done by hand
    torchvision_small.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    torchvision_small.maxpool = nn.Identity()
    torchvision_small.load_state_dict(resnet18.state_dict())
    resnet8 = fitted(lambda: create_model("resnet8", tiny_data.num_classes, 1, tiny_data.image_size), tiny_data, own)
    paths = {form: root / name for form, name in FILES.items()}
    torch.save(resnet18.state_dict(), paths["kdsweep_state_dict"])
    torch.save(torchvision_small.state_dict(), paths["torchvision_state_dict"])
    save_file({k: v.contiguous() for k, v in resnet18.state_dict().items()}, str(paths["safetensors"]))
    torch.save(resnet8.state_dict(), paths["resnet8_state_dict"])
    example = split_images(tiny_data, tiny_data.val)[:4]
    export_torchscript(resnet8, example, paths["torchscript"])
    export_onnx(resnet8, example, paths["onnx"])
    return paths


@pytest.fixture(scope="module")
def elsewhere(tiny_data, tmp_path_factory) -> Path:
    """A torchvision resnet18 as its own pipeline made it: ImageNet stem, 3 channels, 32 px, its statistics."""
    theirs = InputStats(tuple(ELSEWHERE["mean"]), tuple(ELSEWHERE["std"]), ELSEWHERE["image_size"])
    path = tmp_path_factory.mktemp("elsewhere") / "resnet18.pth"
    torch.save(fitted(lambda: tvm.resnet18(num_classes=tiny_data.num_classes), tiny_data, theirs).state_dict(), path)
    return path


def spec_for(path: Path, form: str, **fields) -> TeacherSpec:
    archs = {"resnet8_state_dict": "resnet8", "kdsweep_state_dict": "resnet18", "torchvision_state_dict": "resnet18"}
    arch = {"arch": archs.get(form, "resnet18")} if "state_dict" in form or form == "safetensors" else {}
    return TeacherSpec(checkpoint=str(path), **arch, **fields)


@pytest.mark.parametrize("form", FORMS)
def test_each_form_gives_the_logits_of_the_teacher_it_holds(files, tiny_data, form):
    same = REFERENCE.get(form, "kdsweep_state_dict")
    reference = prepare_teacher(spec_for(files[same], same), tiny_data)
    brought = prepare_teacher(spec_for(files[form], form), tiny_data)
    images = split_images(tiny_data, tiny_data.test)[:16]
    with torch.no_grad():
        torch.testing.assert_close(brought.module(images), reference.module(images), atol=1e-4, rtol=1e-4)
    assert brought.meta.test_accuracy == pytest.approx(reference.meta.test_accuracy)
    assert brought.meta.test_accuracy > 0.4  # chance: 0.25
    assert brought.form == {"torchscript": "torchscript", "onnx": "onnx"}.get(form, "pytorch")


def test_cached_logits_of_the_pytorch_and_onnx_forms_agree_within_float16(files, tiny_data):
    caches = [
        build_teacher_cache(prepare_teacher(spec_for(files[f], f), tiny_data).module, tiny_data, 2, CPU, 64, log=quiet)
        for f in ("resnet8_state_dict", "onnx")
    ]
    for split in ("train", "val", "test"):
        pytorch, onnx = (getattr(cache, split).astype(np.float32) for cache in caches)
        assert np.abs(pytorch).max() > 1  # logits of a trained teacher, not all near 0
        # float16 keeps 11 significant bits: the two runtimes' float32 logits round to within one step
        np.testing.assert_allclose(onnx, pytorch, rtol=2**-10, atol=2**-14)
    np.testing.assert_array_equal(caches[0].views, caches[1].views)


@pytest.mark.parametrize("form", FORMS)
def test_the_sweeps_teacher_stage_caches_each_form_on_a_ray_worker(files, tiny_data, tmp_path, ray_session, form):
    space = {**TINY_SPACE, "teacher": spec_for(files[form], form).model_dump(exclude_unset=True)}
    config = load_config(write_space(tmp_path, space))
    found = find_teachers(config, tiny_data, in_store=False, log=quiet)
    staged = next(iter(teacher_stage(config, tiny_data, ray.put(tiny_data), found, log=quiet).values()))
    alone = build_teacher_cache(found[next(iter(found))].module, tiny_data, 2, CPU, 1024, log=quiet)
    np.testing.assert_array_equal(ray.get(staged.logit_source).test, alone.test)
    predicted = torch.from_numpy(alone.val.astype(np.float32)).argmax(1)
    assert staged.val_accuracy == pytest.approx(float((predicted == tiny_data.val.labels).double().mean()))


def test_a_torchvision_imagenet_stem_state_dict_is_refused_naming_the_stem_then_loads_when_asked(elsewhere, tiny_data):
    declared = {"input": ELSEWHERE}
    with pytest.raises(ConfigError) as caught:
        prepare_teacher(TeacherSpec(arch="resnet18", checkpoint=str(elsewhere), **declared), tiny_data)
    message = str(caught.value)
    assert message.startswith("teacher.checkpoint: ")
    assert "conv1.weight [64, 3, 7, 7] here [64, 3, 3, 3]" in message
    assert "kdsweep built the small-input stem" in message
    assert "the file holds the other: set teacher.small_input_stem: false" in message
    spec = TeacherSpec(arch="resnet18", checkpoint=str(elsewhere), small_input_stem=False, **declared)
    teacher = prepare_teacher(spec, tiny_data)
    assert teacher.meta.input_shape == (3, 32, 32)
    assert teacher.meta.mean == tuple(ELSEWHERE["mean"])
    assert teacher.meta.test_accuracy > 0.5


def test_a_teacher_given_the_wrong_normalisation_is_caught_naming_the_likely_causes(elsewhere, tiny_data):
    # The dataset's own statistics (the default), which this teacher never saw: it is silently fed the wrong inputs.
    wrong = {**ELSEWHERE, "mean": list(tiny_data.mean) * 3, "std": list(tiny_data.std) * 3}
    spec = TeacherSpec(arch="resnet18", checkpoint=str(elsewhere), small_input_stem=False, input=wrong)
    with pytest.raises(ConfigError) as caught:
        prepare_teacher(spec, tiny_data)
    message = str(caught.value)
    assert "near chance (0.250)" in message
    assert "class i the dataset's class i" in message
    assert "teacher.input" in message
    assert "\n" not in message


def test_teacher_input_converts_the_students_images_to_the_teachers_own(tiny_data):
    source = InputStats(mean=(2.0,), std=(4.0,), image_size=2)
    target = InputStats(mean=(1.0, 0.0, 0.5), std=(0.5, 1.0, 2.0), image_size=2)
    images = torch.tensor([[[[0.0, 0.5], [-0.25, 1.0]]]])  # pixels 2, 4, 1, 6
    pixels = torch.tensor([[2.0, 4.0], [1.0, 6.0]])
    expected = torch.stack([(pixels - 1.0) / 0.5, pixels, (pixels - 0.5) / 2.0])[None]
    torch.testing.assert_close(to_teacher_input(images, source, target), expected)
    gray = to_teacher_input(expected, target, InputStats((0.0,), (1.0,), 1))  # RGB -> luma, 2 px -> 1 px (mean)
    torch.testing.assert_close(gray, torch.tensor([[[[3.25]]]]))  # equal channels: luma = the pixel


def test_near_chance_is_a_tenth_of_the_way_from_chance_to_perfect():
    assert near_chance(0.32, 4)
    assert not near_chance(0.33, 4)
    assert near_chance(0.189, 10)
    assert not near_chance(0.191, 10)


def test_a_state_dict_mismatch_names_the_first_differing_keys():
    own = {"a": torch.zeros(2, 3), "b": torch.zeros(1), "c": torch.zeros(1), "d": torch.zeros(1)}
    given = {"a": torch.zeros(2, 4), "b": torch.zeros(1), "x": torch.zeros(1)}
    assert weights_mismatch(own, given) == "shapes differ: a [2, 4] here [2, 3]; missing: c, d; unexpected: x"
    assert weights_mismatch(own, own) == ""


class Reshaped(nn.Module):
    """An ONNX file of the wrong output: [batch, pixels, 1], or 3 classes."""

    def __init__(self, shape_of: str) -> None:
        super().__init__()
        self.shape_of = shape_of

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        return flat[:, :, None] if self.shape_of == "3d" else flat[:, :3]


@pytest.fixture(scope="module")
def bad_files(files, tiny_data, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-teachers")
    for shape_of in ("3d", "3_classes"):
        export_onnx(Reshaped(shape_of).eval(), split_images(tiny_data, tiny_data.val)[:2], root / f"{shape_of}.onnx")
    torch.save(tvm.resnet18(num_classes=10).state_dict(), root / "ten.pth")
    (root / "junk.onnx").write_bytes(b"not a model")
    return {
        "state_dict": str(files["kdsweep_state_dict"]),
        "onnx": str(files["onnx"]),
        "onnx_3d": str(root / "3d.onnx"),
        "onnx_3_classes": str(root / "3_classes.onnx"),
        "state_dict_10": str(root / "ten.pth"),
        "junk_onnx": str(root / "junk.onnx"),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher.arch": None}, "teacher.arch: '{state_dict}' is a state_dict: name the model it holds"),
        ({"teacher.checkpoint": "{onnx_3d}"}, "outputs [2, 64, 1] for 2 images: a teacher gives [batch, classes]"),
        ({"teacher.checkpoint": "{onnx_3_classes}"}, "predicts 3 classes but synthetic has 4"),
        ({"teacher.checkpoint": "{state_dict_10}"}, "predicts 10 classes but synthetic has 4"),
        ({"teacher.checkpoint": "{junk_onnx}"}, "'{junk_onnx}' is not a readable onnx file"),
        ({"teacher.mode": "online", "teacher.checkpoint": "{onnx}"}, "teacher.mode: online runs the teacher in every"),
        ({"teacher.small_input_stem": True, "teacher.arch": "resnet8"}, "teacher.small_input_stem: resnet8 has one"),
        ({"teacher.small_input_stem": False, "teacher.checkpoint": "{onnx}"}, "small_input_stem: is for a state_dict"),
        ({"teacher.checkpoint": None, "teacher.input": {"image_size": 16}}, "teacher.input: describes a teacher you"),
    ],
)
def test_bad_teachers_exit_2_with_one_line_before_anything_runs(bad_files, tmp_path, capsys, change, message):
    paths = bad_files
    teacher = {"checkpoint": paths["state_dict"], "arch": "resnet18"}
    for key, value in change.items():
        field = key.removeprefix("teacher.")
        teacher[field] = value.format(**paths) if isinstance(value, str) else value
    teacher = {k: v for k, v in teacher.items() if v is not None}
    line = refused(tmp_path, capsys, space={**TINY_SPACE, "teacher": teacher})
    assert message.format(**paths) in line


def test_the_teacher_command_refuses_a_state_dict_without_its_arch(files, capsys):
    assert teacher_command.main(["--teacher-checkpoint", str(files["kdsweep_state_dict"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: teacher.arch: ")
    assert "is a state_dict" in err[0]


@pytest.mark.slow  # the command as a user runs it: digits, its private MLflow server, the teacher's run (~45 s)
def test_the_teacher_command_evaluates_and_logs_a_torchscript_teacher(tmp_path, capsys):
    digits = load_dataset(DataSpec(name="digits"))
    resnet8 = fitted(lambda: create_model("resnet8", 10, 1, 8), digits, dataset_input(digits))
    export_torchscript(resnet8, split_images(digits, digits.val)[:4], tmp_path / "digits.ts")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = teacher_command.main(["--teacher-checkpoint", str(tmp_path / "digits.ts"), "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "teacher digits.ts on digits: test_accuracy" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("kdsweep-teachers").experiment_id])
    assert [f.path for f in client.list_artifacts(run.info.run_id, "teacher")] == ["teacher/digits.ts"]
    assert run.data.metrics["test_accuracy"] > 0.5  # chance: 0.1


def test_an_onnx_teachers_run_holds_its_file_and_latency(files, tiny_data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    teacher = prepare_teacher(spec_for(files["onnx"], "onnx"), tiny_data)
    run_id, reference = log_teacher(uri, teacher, tiny_data)
    assert set(reference) == {"test_accuracy", "latency_ms"}
    client = MlflowClient(uri)
    assert [f.path for f in client.list_artifacts(run_id, "teacher")] == ["teacher/teacher.onnx"]
    assert client.get_run(run_id).data.params["arch"] == "teacher.onnx"


@pytest.mark.slow  # a whole sweep (Ray, MLflow, trials) taught by every brought form, one one-epoch trial each
def test_a_sweep_distils_from_brought_teachers_and_logs_them(
    files, elsewhere, tiny_data, ray_session, mlflow_server, tmp_path
):
    teachers = {form: spec_for(files[form], form).model_dump(exclude_unset=True) for form in FORMS}
    teachers["elsewhere"] = {
        "checkpoint": str(elsewhere),
        "arch": "resnet18",
        "small_input_stem": False,
        "input": ELSEWHERE,
    }
    space = {
        **{k: v for k, v in TINY_SPACE.items() if k != "teacher"},
        "teachers": teachers,
        "budget": {"epochs": 1, "num_samples": 1},
        "scheduler": {"name": "none"},
        "search": {**TINY_SPACE["search"], "teacher": {"grid": sorted(teachers)}},
    }
    code, rows, uri = sweep(tmp_path, space, name="taught-by-brought", uri=mlflow_server)
    assert code == 0
    assert sorted(row["config"]["teacher"] for row in rows) == sorted(teachers)
    assert all(row["status"] == "FINISHED" for row in rows), rows
    assert all(0 <= row["metrics"]["teacher_agreement"] <= 1 for row in rows)
    client = MlflowClient(uri)
    parent = client.get_run(client.get_run(rows[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"])
    onnx_run = parent.data.tags["kdsweep.teacher_run_id.onnx"]
    assert [f.path for f in client.list_artifacts(onnx_run, "teacher")] == ["teacher/teacher.onnx"]
    teacher = prepare_teacher(TeacherSpec.model_validate(teachers["elsewhere"]), tiny_data)
    logged = load_logged_model(f"runs:/{parent.data.tags['kdsweep.teacher_run_id.elsewhere']}/model", uri)
    images = split_images(tiny_data, tiny_data.test)[
        :8
    ]  # the students' images: the logged model converts them as the sweep did
    with torch.no_grad():
        torch.testing.assert_close(logged(images), teacher.module(images), atol=1e-4, rtol=1e-4)
