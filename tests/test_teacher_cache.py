"""The teacher-logit cache: exact logits for the very views a trial trains on, bounded memory, the sweep's modes."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from kdsweep.config import load_config
from kdsweep.data import DataSpec, FolderSplit, load_dataset, split_images, train_batches
from kdsweep.errors import ConfigError
from kdsweep.models import create_model
from kdsweep.sweep.object_store import USABLE_SHARE, describe_cut, node_object_store_bytes, plan_view_epochs
from kdsweep.sweep.teacher_stage import plan_caches
from kdsweep.teachers import (
    OnlineTeacher,
    Teacher,
    TeacherLogitCache,
    TeacherSpec,
    build_teacher_cache,
    teacher_outputs,
)
from kdsweep.teachers.cache import CacheSize, cache_size
from kdsweep.trial import TrialConfig, run_trial

CPU = torch.device("cpu")
LIMIT_MB = 64.0


class Scaled(nn.Module):
    """A random network's logits are tiny; a trained teacher's span tens, where float16 is coarser."""

    def __init__(self, module: nn.Module, scale: float) -> None:
        super().__init__()
        self.module, self.scale = module, scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images) * self.scale


@pytest.fixture(scope="module")
def data():
    """3x16x16 images with crops and flips (pad 1, flip: 18 views per image)."""
    return load_dataset(DataSpec(name="synthetic", channels=3, image_size=16, num_classes=10, num_samples=256))


@pytest.fixture(scope="module")
def teacher(data) -> nn.Module:
    torch.manual_seed(3)
    return Scaled(create_model("resnet8", data.num_classes, data.in_channels, data.image_size), 40.0).eval()


@pytest.fixture(scope="module")
def cache(teacher, data) -> TeacherLogitCache:
    return build_teacher_cache(teacher, data, epochs=2, device=CPU, memory_limit_mb=LIMIT_MB, log=lambda _: None)


@torch.no_grad()
def fresh(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return teacher(images)


def test_cached_logits_equal_a_fresh_teacher_forward_on_the_same_augmented_images(teacher, cache, data):
    for epoch, shuffle_seed in ((1, 5), (2, 11)):
        for batch, views in list(train_batches(data, 32, epoch, shuffle_seed, CPU))[:3]:
            cached, expected = cache.train_logits(batch, views, epoch), fresh(teacher, batch.images)
            assert expected.abs().max() > 4  # logits of a trained teacher's size, where float16 rounds visibly
            torch.testing.assert_close(cached, expected, atol=1e-2, rtol=0)
            # Within one float16 step of the fresh logits rounded the same way: near-exact, not approximate.
            torch.testing.assert_close(cached, expected.half().float(), atol=1e-6, rtol=2**-10)
            unaugmented = fresh(teacher, split_images(data, data.train)[batch.indices])
            assert not torch.allclose(cached, unaugmented, atol=1e-2)  # the check can tell views apart


def test_cached_val_and_test_logits_are_the_unaugmented_forward(teacher, cache, data):
    for split in ("val", "test"):
        expected = fresh(teacher, split_images(data, getattr(data, split)))
        torch.testing.assert_close(cache.eval_logits(data, split, CPU), expected, atol=1e-2, rtol=0)


def test_views_repeat_every_view_epochs_with_the_logits_of_their_epoch(teacher, cache, data):
    first = {
        int(i): row
        for b, v in train_batches(data, 64, 1, 0, CPU)
        for i, row in zip(b.indices, cache.train_logits(b, v, 1), strict=True)
    }
    for batch, views in train_batches(data, 64, 3, 0, CPU, view_epochs=2):  # epoch 3 shows epoch 1's views
        cached = cache.train_logits(batch, views, 3)
        torch.testing.assert_close(cached, torch.stack([first[int(i)] for i in batch.indices]), atol=0, rtol=0)
        torch.testing.assert_close(cached, fresh(teacher, batch.images), atol=1e-2, rtol=0)


def test_fresh_views_past_the_cached_epochs_are_refused(cache, data):
    batch, views = next(train_batches(data, 64, 3, 0, CPU))  # no view_epochs: epoch 3 has views of its own
    with pytest.raises(ValueError, match="view_epochs=2"):
        cache.train_logits(batch, views, 3)


def test_memory_limit_keeps_the_epochs_that_fit_and_prints_the_size_first(teacher, data):
    samples, classes = len(data.train), data.num_classes
    per_epoch = samples * (2 * classes + 4)
    fixed = (len(data.val) + len(data.test)) * classes * 2
    lines: list[str] = []
    limit_mb = (fixed + 2.5 * per_epoch) / 2**20
    cache = build_teacher_cache(teacher, data, epochs=5, device=CPU, memory_limit_mb=limit_mb, log=lines.append)
    assert cache.view_epochs == 2
    assert cache.train.shape == (2, samples, classes)
    assert cache.train.dtype == np.float16
    assert f"2 view epochs x {samples} samples x {classes} classes, float16 = " in lines[0]
    assert "views repeat every 2 epochs" in lines[0]
    assert "built in" in lines[-1]


def test_a_limit_below_one_epoch_falls_back_to_online(teacher, data):
    lines: list[str] = []
    assert build_teacher_cache(teacher, data, epochs=5, device=CPU, memory_limit_mb=1e-3, log=lines.append) is None
    assert "running the teacher online" in lines[-1]


def test_streaming_data_is_not_cached(teacher, data):
    streaming = dataclasses.replace(data, train=FolderSplit(folder=None, indices=[0], labels=torch.zeros(1)))
    lines: list[str] = []
    assert (
        build_teacher_cache(teacher, streaming, epochs=2, device=CPU, memory_limit_mb=LIMIT_MB, log=lines.append)
        is None
    )
    assert "streams from disk" in lines[0]


def test_float16_keeps_logits_within_a_hundredth_and_soft_targets_within_1e_3_at_t4():
    logits = torch.randn(4096, 100, generator=torch.Generator().manual_seed(0)) * 5  # up to ~25, a confident teacher
    rounded = logits.half().float()
    assert ((rounded - logits).abs() <= logits.abs() * 2**-11 + 2**-25).all()  # 11 significant bits (and subnormals)
    assert (rounded - logits).abs().max() < 1e-2
    for temperature, bound in ((1.0, 5e-3), (4.0, 1e-3)):
        assert ((rounded / temperature).softmax(1) - (logits / temperature).softmax(1)).abs().max() < bound
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2e-2  # ties closer than float16's step may swap
    assert torch.equal(rounded.argmax(1)[clear], logits.argmax(1)[clear])


class Float16(nn.Module):
    """The online teacher with its logits rounded as the cache stores them: what is left is the key."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images).half().float()


def test_a_trial_on_the_cache_trains_the_same_student_as_one_on_the_online_teacher(teacher, cache, data):
    config = TrialConfig(
        student="small_cnn", width=4, epochs=3, batch_size=32, measure_latency=False, stop_at_chance=False
    )
    assert cache.view_epochs == 2  # so epoch 3 trains on epoch 1's views again, with the cache and online alike
    cached = run_trial(config, data, logit_source=cache)
    for online_teacher, tolerance in ((Float16(teacher), 1e-5), (teacher, 1e-2)):
        online = run_trial(config, data, logit_source=OnlineTeacher(online_teacher, view_epochs=2))
        assert cached.metrics["teacher_agreement"] == online.metrics["teacher_agreement"]
        assert cached.metrics["train_loss"] == pytest.approx(online.metrics["train_loss"], rel=tolerance)
        for a, b in zip(online.student.state_dict().values(), cached.student.state_dict().values(), strict=True):
            torch.testing.assert_close(a.float(), b.float(), atol=tolerance, rtol=tolerance)


def test_the_sweep_gets_the_cache_in_cached_mode_and_the_module_online(teacher, data):
    prepared = Teacher(teacher, meta=None, source="test")
    cached = teacher_outputs(TeacherSpec(mode="cached"), prepared, data, 2, log=lambda _: None)
    assert isinstance(cached, TeacherLogitCache)
    assert cached.view_epochs == 2
    online = teacher_outputs(TeacherSpec(mode="online"), prepared, data, 2)
    assert isinstance(online, OnlineTeacher)
    assert online.module is teacher
    assert online.view_epochs is None


def test_the_teacher_task_returns_cpu_tensors_after_running_the_online_teacher_on_another_device(data):
    """The teacher task runs the online teacher on its node's GPU, then returns the Teacher (and, through the
    object store, the OnlineTeacher) to a head that may have no GPU, where `ray.get` cannot restore a CUDA
    tensor. `meta` stands in for CUDA: what crosses the task boundary must hold only CPU tensors."""
    other = torch.device("meta")
    prepared = Teacher(create_model("small_cnn", data.num_classes, data.in_channels, data.image_size), None, "test")
    online = teacher_outputs(TeacherSpec(mode="online"), prepared, data, 2)
    assert online.eval_logits(data, "val", other).device == other  # as val_accuracy on the GPU node
    returned_teacher, returned_online = pickle.loads(pickle.dumps((prepared, online)))  # as Ray sends them
    for module in (prepared.module, returned_teacher.module, returned_online.module):
        assert {t.device.type for t in (*module.parameters(), *module.buffers())} == {"cpu"}
    assert returned_online.eval_logits(data, "val", CPU).shape == (len(data.val), data.num_classes)


def test_the_cache_pickles_its_arrays_out_of_band_for_zero_copy_sharing(cache):
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(cache, protocol=5, buffer_callback=buffers.append)  # what Ray's object store does
    assert len(buffers) == 4
    assert len(payload) < 1024
    restored = pickle.loads(payload, buffers=buffers)
    assert np.array_equal(restored.train, cache.train)
    assert restored.view_epochs == cache.view_epochs


def test_teacher_mode_off_with_distillation_is_a_config_error(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("teacher:\n  mode: off\nsearch:\n  alpha:\n    uniform: [0.5, 1.0]\n")
    with pytest.raises(ConfigError, match=r"teacher.mode.*alpha can be > 0"):
        load_config(space)
    space.write_text("teacher:\n  mode: off\nfixed:\n  alpha: 0.0\n")
    assert load_config(space).teacher.mode == "off"


# ---------------------------------------------------------------- the object store


def test_a_caches_size_is_known_before_it_is_built(cache, data):
    size = cache_size(data, 2, LIMIT_MB)
    # per view epoch: float16 logits and an int32 view code per training sample; val and test: float16 logits
    assert size.per_epoch == len(data.train) * (10 * 2 + 4)
    assert size.fixed == (len(data.val) + len(data.test)) * 10 * 2
    assert size.view_epochs == 2
    built = sum(array.nbytes for array in (cache.train, cache.views, cache.val, cache.test))
    assert size.bytes == built
    small = cache_size(data, 8, (size.fixed + 3 * size.per_epoch) / 2**20)  # a limit of exactly 3 epochs
    assert (small.epochs, small.view_epochs) == (8, 3)


def test_caches_that_fit_the_object_store_keep_their_view_epochs():
    a = CacheSize(per_epoch=100, fixed=50, epochs=10, view_epochs=10)
    # 1000 + 50 + 10 x 100 = 2050 <= 0.8 x 3000
    assert plan_view_epochs(1000, {"a": a}, capacity=3000) == {"a": 10}
    assert describe_cut(1000, {"a": a}, {"a": 10}, 3000) is None


def test_caches_over_the_object_store_hold_fewer_view_epochs_one_common_cap():
    a = CacheSize(per_epoch=100, fixed=50, epochs=10, view_epochs=10)
    b = CacheSize(per_epoch=200, fixed=0, epochs=10, view_epochs=4)  # its own limit holds 4
    # usable 0.8 x 2500 = 2000; cap 4: 1000 + 50 + 400 + 800 = 2250 > 2000; cap 3: 1050 + 300 + 600 = 1950
    planned = plan_view_epochs(1000, {"a": a, "b": b}, capacity=2500)
    assert planned == {"a": 3, "b": 3}
    line = describe_cut(1000, {"a": a, "b": b}, planned, 2500)
    assert "at most 3 view epochs" in line
    assert "--object-store-memory" in line


def test_caches_whose_first_view_epoch_does_not_fit_the_object_store_are_refused():
    a = CacheSize(per_epoch=100, fixed=50, epochs=10, view_epochs=10)
    b = CacheSize(per_epoch=200, fixed=0, epochs=10, view_epochs=4)
    # usable 0.8 x 1500 = 1200 < 1000 + 50 + 100 + 200 = 1350
    with pytest.raises(ConfigError) as caught:
        plan_view_epochs(1000, {"a": a, "b": b}, capacity=1500)
    assert caught.value.field == "teacher.cache_limit_mb"
    assert "object store" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert plan_view_epochs(1000, {}, capacity=1500) == {}  # no cache: nothing to plan


def test_the_sweep_plans_its_caches_against_a_nodes_object_store(ray_session, data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("teacher:\n  mode: cached\nfixed:\n  alpha: 0.5\nbudget:\n  epochs: 6\n")
    config = load_config(space)
    capacity = node_object_store_bytes(ray_session)
    assert capacity == ray_session.cluster_resources()["object_store_memory"]  # one node: its own store
    assert plan_caches(config, data, capacity, log=lambda _: None) == {config.teacher.arch: 6}
    size = cache_size(data, 6, config.teacher.cache_limit_mb)
    two_epochs = data.nbytes + size.fixed + 2 * size.per_epoch
    lines = []
    assert plan_caches(config, data, int(two_epochs / USABLE_SHARE) + 1, log=lines.append) == {config.teacher.arch: 2}
    assert len(lines) == 1
    with pytest.raises(ConfigError) as caught:
        plan_caches(config, data, data.nbytes, log=lambda _: None)
    assert caught.value.field == "teacher.cache_limit_mb"
