"""timm as a model source: `timm/NAME` as a student or a teacher, its small-input stem, its pretrained
weights (from the cache, or refused offline before anything runs), and a sweep of timm students."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from kdsweep import search
from kdsweep.config import load_config, pretrained_students
from kdsweep.data import split_images
from kdsweep.errors import ConfigError
from kdsweep.models import count_flops, count_params, create_model, list_models, load_pretrained, require_model
from kdsweep.models.timm_models import LIGHTWEIGHT_STUDENTS, image_readers
from kdsweep.teachers import TeacherSpec, load_teacher, prepare_teacher

STUDENTS = [f"timm/{name}" for name in LIGHTWEIGHT_STUDENTS]


def test_the_lightweight_timm_students_are_listed_as_students_and_the_rest_resolve_by_name():
    assert set(STUDENTS) <= set(list_models("student"))
    assert "timm/resnet10t" not in list_models()  # timm's catalogue is not registered name by name
    model = create_model("timm/resnet10t", num_classes=7, in_channels=3, image_size=32)
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", STUDENTS)
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 32)])
def test_a_timm_student_builds_for_the_data_and_gives_batch_by_classes_logits(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_on_small_inputs_the_stem_runs_at_stride_one_with_timms_own_weight_shapes():
    small = create_model("timm/mobilenetv3_small_100", 10, 3, 32)
    large = create_model("timm/mobilenetv3_small_100", 10, 3, 224)
    assert small.conv_stem.stride == (1, 1)
    assert large.conv_stem.stride == (2, 2)
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in large.state_dict().items()}
    seen = {}
    small.conv_stem.register_forward_hook(lambda module, inputs, output: seen.update(shape=output.shape))
    small.eval()(torch.zeros(1, 3, 32, 32))
    assert seen["shape"] == (1, 16, 32, 32)  # the full image reaches the first block


def test_a_multi_branch_stem_gets_stride_one_on_every_branch_that_reads_the_image():
    readers = image_readers(timm.create_model("fastvit_t8", num_classes=10), 3, 32)
    assert len(readers) == 2  # MobileOne's 3x3 and 1x1 branches
    assert {conv.stride for conv in readers} == {(2, 2)}
    model = create_model("timm/fastvit_t8", 10, 3, 32)
    assert {conv.stride for conv in image_readers(model, 3, 32)} == {(1, 1)}
    assert model.training  # finding the readers runs the model in eval mode, then restores it


def test_an_unknown_timm_name_suggests_the_close_timm_name():
    with pytest.raises(ConfigError) as refused:
        require_model("search.student", "timm/mobilenetv3_smal_100")
    assert str(refused.value) == (
        "search.student: unknown model 'timm/mobilenetv3_smal_100'; did you mean 'timm/mobilenetv3_small_100'? "
        "(timm/NAME: any model timm.list_models() lists)"
    )
    with pytest.raises(ConfigError, match=r"or timm/NAME \(any model timm.list_models\(\) lists\)\)$"):
        require_model("teacher.arch", "resnet1800")


def fake_hub_cache(root: Path, name: str, tag: str, value: float) -> None:
    """timm's ImageNet weights for name.tag as Hugging Face's cache holds them after a download (every
    tensor filled with `value`): what a machine without network finds when they were copied there."""
    repo = root / f"models--timm--{name}.{tag}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    state = {k: torch.full_like(v, value) for k, v in timm.create_model(name).state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """No network for Hugging Face's hub (where timm's weights come from), and an empty cache of its own."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_pretrained_timm_weights_in_the_cache_are_copied_where_shapes_agree(offline_hub):
    fake_hub_cache(offline_hub, "mobilenetv3_small_050", "lamb_in1k", 0.25)
    model = create_model("timm/mobilenetv3_small_050", 10, 1, 32)  # one channel, ten classes, stride-1 stem
    skipped = load_pretrained(model, "timm/mobilenetv3_small_050", True)
    assert set(skipped) == {"conv_stem.weight", "classifier.weight", "classifier.bias"}
    assert torch.all(model.blocks[0][0].conv_dw.weight == 0.25)
    assert not torch.all(model.conv_stem.weight == 0.25)
    assert load_pretrained(model, "timm/mobilenetv3_small_050", "lamb_in1k") == skipped  # the default, by its tag
    with pytest.raises(ValueError, match=r"unknown weights 'in22k' for timm/mobilenetv3_small_050 \(choose from: true"):
        load_pretrained(model, "timm/mobilenetv3_small_050", "in22k")


def test_a_pretrained_timm_student_offline_is_one_line_exit_2_before_ray_or_mlflow(offline_hub, tmp_path, capsys):
    code = search.main(
        [
            "--space",
            "timm",
            "--set",
            "fixed.pretrained=true",
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert line.startswith(
        "error: fixed.pretrained: cannot download timm/mobilenetv3_small_050's pretrained weights "
    ), line
    assert "copy Hugging Face's cache (HF_HOME) here" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_timm_student_is_one_line_exit_2_before_anything_runs(tmp_path, capsys):
    argv = ["--space", "timm", "--set", "search.student={choice: [timm/lcnet_050, timm/ghsotnet_100]}"]
    code = search.main([*argv, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert line.startswith(
        "error: search.student: unknown model 'timm/ghsotnet_100'; did you mean 'timm/ghostnet_100'?"
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_a_pretrained_timm_teacher_offline_is_bad_input_of_teacher_weights(offline_hub, tiny_data, tmp_path):
    spec = TeacherSpec(arch="timm/lcnet_050", weights=True, epochs=1, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^teacher.weights: cannot download timm/lcnet_050's pretrained weights"):
        prepare_teacher(spec, tiny_data, log=lambda _: None)


def test_a_timm_teacher_is_trained_kept_in_one_file_and_loaded_back(tiny_data, tmp_path):
    spec = TeacherSpec(arch="timm/lcnet_050", epochs=1, lr=0.01, optimizer="adamw", cache_dir=str(tmp_path))
    teacher = prepare_teacher(spec, tiny_data, log=lambda _: None)
    (kept,) = tmp_path.iterdir()
    assert kept.is_file()
    assert kept.name.startswith("synthetic-timm_lcnet_050-")
    module, meta = load_teacher(str(kept), tiny_data)
    assert meta.arch == "timm/lcnet_050"
    images = split_images(tiny_data, tiny_data.val)[:4]
    assert torch.equal(module(images), teacher.module(images))


@pytest.mark.parametrize(
    ("search_space", "expected"),
    [
        ({"student": {"choice": ["timm/lcnet_050", "resnet8"]}}, []),
        (
            {"student": {"choice": ["timm/lcnet_050", "resnet8"]}, "pretrained": {"choice": [True, False]}},
            [("search.pretrained", "timm/lcnet_050", True), ("search.pretrained", "resnet8", True)],
        ),
        (
            {
                "student": {"choice": ["timm/lcnet_050", "resnet8"]},
                "pretrained": {"choice": [True, "ra2_in1k"], "when": {"student": "timm/lcnet_050"}},
            },
            [("search.pretrained", "timm/lcnet_050", True), ("search.pretrained", "timm/lcnet_050", "ra2_in1k")],
        ),
    ],
)
def test_pretrained_students_are_every_student_a_trial_may_start_from_pretrained_weights(search_space, expected):
    config = load_config("timm", **{"search": search_space})
    assert pretrained_students(config) == expected
    fixed = load_config("timm", **{"fixed.pretrained": True, "search": {"student": {"choice": ["timm/lcnet_050"]}}})
    assert pretrained_students(fixed) == [("fixed.pretrained", "timm/lcnet_050", True)]


def test_the_shipped_timm_space_sweeps_its_timm_students(ray_session, mlflow_server, tmp_path):
    """`--space timm`, shrunk to seconds: synthetic 3x16x16 data, a one-epoch small_cnn teacher, one trial
    per timm student; each trains and is logged with its cost as kdsweep measures it (the champion's
    selection is no different for timm's models: left out)."""
    tiny = {
        "data": {"name": "synthetic", "channels": 3, "image_size": 16, "num_classes": 4, "num_samples": 160},
        "teacher": {"arch": "small_cnn", "epochs": 1},
        "budget": {"epochs": 2, "num_samples": 1},  # one sample of the grid: one trial per student
        "scheduler": {"name": "none"},
        "search.student": {"grid": ["timm/mobilenetv3_small_050", "timm/lcnet_050"]},
        "fixed.stop_at_chance": False,
    }
    argv = ["--space", "timm", "--storage", str(tmp_path / "results"), "--tracking-uri", mlflow_server]
    argv += ["--name", "timm-students", "--no-baselines", "--no-select", "--confirm-top", "0"]
    for key, value in tiny.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    code = search.main([*argv, "--output-json", str(tmp_path / "rows.json")])
    assert code == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert sorted(row["config"]["student"] for row in rows) == ["timm/lcnet_050", "timm/mobilenetv3_small_050"]
    client = MlflowClient(mlflow_server)
    for row in rows:
        assert row["status"] == "FINISHED"
        assert row["metrics"]["epoch"] == 2
        student = create_model(row["config"]["student"], 4, 3, 16)
        assert row["metrics"]["params"] == count_params(student)
        assert row["metrics"]["flops"] == count_flops(student, (3, 16, 16))
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.params["student"] == row["config"]["student"]
        assert "kdsweep.model_uri" in run.data.tags


def test_the_stem_is_left_alone_on_large_inputs_and_for_strides_other_than_two():
    assert create_model("timm/convnext_atto", 10, 3, 32).stem[0].stride == (4, 4)  # a 4x4 patchify stem
    assert create_model("timm/lcnet_050", 10, 3, 96).conv_stem.stride == (2, 2)
