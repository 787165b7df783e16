"""Tests for kdsweep.data and kdsweep.folders: splits, normalisation, views, batches, ImageFolder, torchvision.

Torchvision datasets go through torchvision's real download/extract/integrity code; only the network
(`urllib.request.urlopen`) and the checksums of the real archives are replaced, by tiny files built
here in torchvision's on-disk formats.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from kdsweep.data import (
    AugmentSpec,
    DataSpec,
    FolderSplit,
    MemorySplit,
    Views,
    apply_views,
    draw_views,
    eval_batches,
    list_datasets,
    load_dataset,
    on_device,
    split_images,
    train_batches,
)
from kdsweep.errors import ConfigError

CPU = torch.device("cpu")


# ---------------------------------------------------------------- helpers


def _denormalise(images: torch.Tensor, data) -> torch.Tensor:
    mean = torch.tensor(data.mean)[None, :, None, None]
    std = torch.tensor(data.std)[None, :, None, None]
    return images * std + mean


def _levels(images: torch.Tensor, data, scale: float) -> np.ndarray:
    """Normalised images back to their integer source levels (0..scale)."""
    return torch.round(_denormalise(images, data) * scale).to(torch.int64).numpy()


def _row_keys(array: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in array.reshape(len(array), -1))


def _reference_views(images: torch.Tensor, dx, dy, flip, pad: int) -> torch.Tensor:
    """One sample at a time: zero-pad by `pad`, crop the original size at (dy, dx), mirror columns if flipped."""
    n, c, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(n):
        padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=images.dtype)
        padded[:, pad : pad + h, pad : pad + w] = images[i]
        y, x = int(dy[i]), int(dx[i])
        crop = padded[:, y : y + h, x : x + w]
        if bool(flip[i]):
            crop = crop[:, :, list(reversed(range(w)))]
        out[i] = crop
    return out


def _synthetic(**overrides) -> DataSpec:
    fields = dict(name="synthetic", channels=2, image_size=8, num_classes=4, num_samples=80)
    fields.update(overrides)
    return DataSpec(**fields)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataSpec(name="digits", seed=0, val_fraction=0.1, test_fraction=0.2))


def test_digits_shape_classes_and_in_memory(digits):
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.in_memory
    assert digits.train.images.dtype == np.uint8  # grey levels 0..16 as the source gives them, not float32
    assert digits.train.labels.dtype == torch.int64
    assert digits.augment == AugmentSpec(pad=1, flip=False)


@pytest.mark.parametrize(("val_fraction", "test_fraction"), [(0.1, 0.2), (0.25, 0.3)])
def test_digits_split_sizes_follow_fractions(val_fraction, test_fraction):
    data = load_dataset(DataSpec(name="digits", val_fraction=val_fraction, test_fraction=test_fraction))
    test = math.ceil(test_fraction * 1797)  # sklearn rounds the held-out part up
    val = math.ceil(val_fraction * (1797 - test))
    assert (len(data.train), len(data.val), len(data.test)) == (1797 - test - val, val, test)


def test_digits_splits_partition_the_1797_images(digits):
    from sklearn.datasets import load_digits

    original = load_digits()
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    # Every split was normalised with the same (training) statistics: undoing it gives back the 0..16
    # integer pixel levels, and the three splits together are exactly the dataset (as a multiset).
    splits = [digits.train, digits.val, digits.test]
    levels = np.concatenate([_levels(split_images(digits, s), digits, 16.0) for s in splits])
    assert np.array_equal(levels, np.concatenate([s.images for s in splits]).astype(np.int64))
    recovered = _denormalise(torch.cat([split_images(digits, s) for s in splits]), digits) * 16
    assert torch.allclose(recovered, recovered.round(), atol=1e-3)
    assert _row_keys(levels) == _row_keys(original.images.astype(np.int64)[:, None])
    labels = torch.cat([s.labels for s in splits])
    assert Counter(labels.tolist()) == Counter(original.target.tolist())


def test_digits_splits_are_stratified(digits):
    overall = torch.bincount(torch.cat([digits.train.labels, digits.val.labels, digits.test.labels]), minlength=10)
    test_counts = torch.bincount(digits.test.labels, minlength=10)
    assert (test_counts - overall * 0.2).abs().max() <= 1
    rest = overall - test_counts
    val_counts = torch.bincount(digits.val.labels, minlength=10)
    assert (val_counts - rest * 0.1).abs().max() <= 1


def test_digits_same_seed_gives_identical_splits(digits):
    again = load_dataset(DataSpec(name="digits", seed=0, val_fraction=0.1, test_fraction=0.2))
    for a, b in [(digits.train, again.train), (digits.val, again.val), (digits.test, again.test)]:
        assert np.array_equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)


def test_digits_other_seed_gives_other_splits(digits):
    other = load_dataset(DataSpec(name="digits", seed=1, val_fraction=0.1, test_fraction=0.2))
    assert len(other.test) == len(digits.test)
    assert not torch.equal(other.test.labels, digits.test.labels)
    assert _row_keys(other.test.images) != _row_keys(digits.test.images)


def test_digits_train_split_is_normalised_to_mean_0_std_1(digits):
    images = split_images(digits, digits.train)
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    # the statistics recorded are the raw training split's (pixels / 16, in [0, 1])
    assert 0 < digits.mean[0] < 1
    assert 0 < digits.std[0] < 1


# ---------------------------------------------------------------- synthetic


def test_synthetic_has_the_requested_shape_and_classes():
    data = load_dataset(DataSpec(name="synthetic", channels=3, image_size=16, num_classes=4, num_samples=80))
    assert data.input_shape == (3, 16, 16)
    assert data.num_classes == 4
    assert data.train.images.shape[1:] == (3, 16, 16)
    for split in (data.train, data.val, data.test):
        assert set(split.labels.tolist()) == {0, 1, 2, 3}
    assert data.train.images.dtype == np.float32  # a float source stays float, un-normalised
    images = split_images(data, data.train)
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    assert len(data.mean) == len(data.std) == 3


def test_synthetic_splits_are_disjoint_and_cover_all_samples():
    data = load_dataset(_synthetic(num_samples=80, val_fraction=0.1, test_fraction=0.2))
    assert (len(data.train), len(data.val), len(data.test)) == (80 - 16 - 7, 7, 16)
    keys = [_row_keys(split.images) for split in (data.train, data.val, data.test)]
    # continuous random images: no two samples coincide, so a shared row would be a shared sample
    assert all(count == 1 for k in keys for count in k.values())
    assert not (keys[0] & keys[1])
    assert not (keys[0] & keys[2])
    assert not (keys[1] & keys[2])
    assert sum(len(k) for k in keys) == 80


def test_synthetic_is_seeded():
    a, b, c = load_dataset(_synthetic(seed=3)), load_dataset(_synthetic(seed=3)), load_dataset(_synthetic(seed=4))
    assert np.array_equal(a.train.images, b.train.images)
    assert torch.equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.images, c.train.images)


# ---------------------------------------------------------------- glyphs


@pytest.fixture(scope="module")
def glyph_images():
    from kdsweep.data.glyphs import render

    return render()


def test_every_face_draws_every_glyph_class():
    """A face without a glyph would draw the same empty box for several classes."""
    from matplotlib import ft2font

    from kdsweep.data.glyphs import CLASSES, font_paths

    assert len(CLASSES) == len(set(CLASSES)) == 47
    for path in font_paths():
        face = ft2font.FT2Font(str(path))
        assert [c for c in CLASSES if face.get_char_index(ord(c)) == 0] == [], path.name


def test_glyphs_are_47_balanced_classes_of_16x16_characters(glyph_images):
    images, labels = glyph_images
    assert images.shape == (47 * 21 * 5, 1, 16, 16)
    assert images.dtype == torch.float32
    assert images.min() >= 0
    assert images.max() <= 1
    assert torch.bincount(labels).tolist() == [21 * 5] * 47
    # the characters' strokes stand out of the noise (noise alone: top-10 mean about 0.32)
    top = images.flatten(1).topk(10, dim=1).values.mean(dim=1)
    assert top.mean() > 0.75
    assert (top > 0.35).all()
    # two renderings of one character in one face differ (size, offset, shear, rotation, noise)
    assert not torch.equal(images[0], images[1])


def test_glyphs_are_a_fixed_artefact_and_the_seed_only_splits_them(glyph_images):
    from kdsweep.data.glyphs import render

    again = render()
    assert torch.equal(glyph_images[0], again[0])
    assert torch.equal(glyph_images[1], again[1])
    a, b = load_dataset(DataSpec(name="glyphs", seed=0)), load_dataset(DataSpec(name="glyphs", seed=1))
    assert a.input_shape == (1, 16, 16)
    assert a.num_classes == 47
    assert a.in_memory
    assert (len(a.train), len(a.val), len(a.test)) == (3553, 395, 987)
    assert a.digest != b.digest
    for data in (a, b):
        for split in (data.train, data.val, data.test):
            assert torch.bincount(split.labels, minlength=47).min() >= 8  # stratified: every class everywhere
    assert "glyphs" in list_datasets()


# ---------------------------------------------------------------- views


def test_draw_views_is_a_pure_function_of_seed_and_epoch():
    augment = AugmentSpec(pad=2, flip=True)
    first, again = draw_views(64, augment, seed=5, epoch=3), draw_views(64, augment, seed=5, epoch=3)
    for name in ("dx", "dy", "flip"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    other_epoch, other_seed = draw_views(64, augment, seed=5, epoch=4), draw_views(64, augment, seed=6, epoch=3)
    assert not torch.equal(first.dx, other_epoch.dx) or not torch.equal(first.dy, other_epoch.dy)
    assert not torch.equal(first.dx, other_seed.dx) or not torch.equal(first.dy, other_seed.dy)


def test_draw_views_offsets_span_0_to_2_pad_and_flips_both_ways():
    views = draw_views(2000, AugmentSpec(pad=2, flip=True), seed=0, epoch=0)
    assert set(views.dx.tolist()) == set(range(5))
    assert set(views.dy.tolist()) == set(range(5))
    assert views.flip.dtype == torch.bool
    assert 800 < int(views.flip.sum()) < 1200


def test_draw_views_never_flips_when_flip_is_false():
    views = draw_views(500, AugmentSpec(pad=1, flip=False), seed=0, epoch=7)
    assert not views.flip.any()
    assert views.dx.min() >= 0
    assert views.dx.max() <= 2


def test_draw_views_without_pad_is_the_identity_offset():
    views = draw_views(50, AugmentSpec(pad=0, flip=False), seed=1, epoch=1)
    assert views.dx.eq(0).all()
    assert views.dy.eq(0).all()


def test_apply_views_on_a_hand_computed_2x2_image():
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).repeat(3, 1, 1, 1)
    views = Views(dx=torch.tensor([0, 2, 1]), dy=torch.tensor([0, 2, 1]), flip=torch.tensor([False, False, True]))
    out = apply_views(image, views, AugmentSpec(pad=1, flip=True))
    assert out[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]  # top-left of the padded image
    assert out[1, 0].tolist() == [[4.0, 0.0], [0.0, 0.0]]  # bottom-right
    assert out[2, 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]  # centred, mirrored


@pytest.mark.parametrize(("pad", "flip"), [(1, False), (2, True), (4, True), (0, True)])
def test_apply_views_matches_per_sample_reference(pad, flip):
    images = torch.randn(12, 3, 6, 5, generator=torch.Generator().manual_seed(pad))
    views = draw_views(12, AugmentSpec(pad=pad, flip=flip), seed=2, epoch=pad)
    expected = _reference_views(images, views.dx, views.dy, views.flip, pad)
    assert torch.equal(apply_views(images, views, AugmentSpec(pad=pad, flip=flip)), expected)


def test_views_take_selects_per_sample_parameters():
    views = draw_views(10, AugmentSpec(pad=2, flip=True), seed=0, epoch=0)
    index = torch.tensor([7, 2, 2])
    taken = views.take(index)
    assert taken.dx.tolist() == [views.dx[7].item(), views.dx[2].item(), views.dx[2].item()]
    assert taken.flip.tolist() == [views.flip[7].item(), views.flip[2].item(), views.flip[2].item()]


@pytest.mark.parametrize(
    ("pad", "flip", "count"), [(0, False, 1), (0, True, 2), (1, False, 9), (2, False, 25), (4, True, 162)]
)
def test_num_views_counts_crop_offsets_times_flips(pad, flip, count):
    augment = AugmentSpec(pad=pad, flip=flip)
    assert augment.num_views == count


def test_num_views_equals_distinct_views_drawn():
    augment = AugmentSpec(pad=1, flip=True)
    views = draw_views(4000, augment, seed=0, epoch=0)
    distinct = set(zip(views.dx.tolist(), views.dy.tolist(), views.flip.tolist(), strict=True))
    assert len(distinct) == augment.num_views == 18


# ---------------------------------------------------------------- batches (in memory)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset(_synthetic(seed=1, num_samples=80))


def test_train_batches_cover_every_index_once_with_its_augmented_view(synthetic):
    data = synthetic
    seen = []
    expected_views = draw_views(len(data.train), data.augment, data.seed, epoch=2)
    for batch, views in train_batches(data, batch_size=16, epoch=2, shuffle_seed=9, device=CPU):
        index = batch.indices
        seen.append(index)
        assert torch.equal(views.dx, expected_views.dx[index])
        assert torch.equal(views.flip, expected_views.flip[index])
        assert torch.equal(batch.labels, data.train.labels[index])
        reference = _reference_views(
            split_images(data, data.train)[index], views.dx, views.dy, views.flip, data.augment.pad
        )
        assert torch.equal(batch.images, reference)
    sizes = [len(i) for i in seen]
    assert sizes[:-1] == [16] * (len(sizes) - 1)
    assert sum(sizes) == len(data.train)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(data.train)))


def test_train_batches_order_depends_on_shuffle_seed_and_epoch(synthetic):
    def order(epoch, shuffle_seed):
        return torch.cat([b.indices for b, _ in train_batches(synthetic, 16, epoch, shuffle_seed, CPU)])

    assert torch.equal(order(0, 1), order(0, 1))
    assert not torch.equal(order(0, 1), order(1, 1))
    assert not torch.equal(order(0, 1), order(0, 2))
    assert not torch.equal(order(0, 1), torch.arange(len(synthetic.train)))


def test_eval_batches_are_in_order_and_unaugmented(synthetic):
    batches = list(eval_batches(synthetic, synthetic.test, batch_size=5, device=CPU))
    assert [len(b.indices) for b in batches] == [5, 5, 5, 1]
    assert torch.equal(torch.cat([b.indices for b in batches]), torch.arange(len(synthetic.test)))
    mean, std = (torch.tensor(v)[:, None, None] for v in (synthetic.mean, synthetic.std))
    assert torch.equal(torch.cat([b.images for b in batches]), (torch.from_numpy(synthetic.test.images) - mean) / std)
    assert torch.equal(torch.cat([b.labels for b in batches]), synthetic.test.labels)


def test_a_split_held_as_device_tensors_gives_the_very_same_batches(synthetic):
    """On CUDA `on_device` moves a trial's splits to the GPU once, as tensors, and batches are cut there.
    The same tensors on the CPU take that path here: the batches, labels, indices and views are equal."""
    assert on_device(synthetic, CPU) is synthetic  # elsewhere than CUDA: nothing moves

    def as_tensors(split: MemorySplit) -> MemorySplit:
        return MemorySplit(torch.from_numpy(split.images.copy()), split.labels)

    resident = dataclasses.replace(
        synthetic, train=as_tensors(synthetic.train), val=as_tensors(synthetic.val), test=as_tensors(synthetic.test)
    )
    assert resident.digest == synthetic.digest
    pairs = zip(train_batches(synthetic, 16, 3, 1, CPU), train_batches(resident, 16, 3, 1, CPU), strict=True)
    for (a, views_a), (b, views_b) in pairs:
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.indices, b.indices)
        assert torch.equal(views_a.dx, views_b.dx)
        assert torch.equal(views_a.flip, views_b.flip)
    evaluated = zip(
        eval_batches(synthetic, synthetic.val, 5, CPU), eval_batches(resident, resident.val, 5, CPU), strict=True
    )
    for a, b in evaluated:
        assert torch.equal(a.images, b.images)


# ---------------------------------------------------------------- registry and names


def test_registered_datasets_include_builtins():
    assert {"digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist"} <= set(list_datasets())


def test_unknown_dataset_name_suggests_the_close_match():
    with pytest.raises(ConfigError) as caught:
        load_dataset(DataSpec(name="digit"))
    assert caught.value.field == "data.name"
    assert "did you mean 'digits'?" in str(caught.value)


def test_the_digest_names_the_exact_splits_and_nothing_else(digits):
    again = load_dataset(DataSpec(name="digits", seed=0, val_fraction=0.1, test_fraction=0.2))
    assert again.digest == digits.digest
    assert len(digits.digest) == 16
    others = [
        DataSpec(name="digits", seed=1),
        DataSpec(name="digits", val_fraction=0.2),
        DataSpec(name="digits", test_fraction=0.3),
        DataSpec(name="synthetic", channels=1, image_size=8, num_samples=1797),
    ]
    assert len({digits.digest, *(load_dataset(spec).digest for spec in others)}) == 1 + len(others)


# ---------------------------------------------------------------- ImageFolder


def _make_tree(root: Path, counts: dict[str, int], classes=("a", "b"), size=16, mode="RGB") -> dict:
    """PNG files root/split/class/i.png of random pixels; returns the arrays by (split, class, i)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in counts.items():
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                array = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(array, mode=mode).save(folder / f"{i}.png")
                arrays[split, cls, i] = array
    return arrays


def _as_chw(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 0, 1) if array.ndim == 3 else array[None]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "pets"
    arrays = _make_tree(root, {"train": 5, "test": 2})
    return root, arrays


def _folder_spec(root: Path, **overrides) -> DataSpec:
    fields = dict(name=str(root), image_size=16, val_fraction=0.2, memory_limit_mb=2048, num_workers=0)
    fields.update(overrides)
    return DataSpec(**fields)


def _test_images_in_file_order(arrays, classes=("a", "b"), count=2) -> np.ndarray:
    return np.stack([_as_chw(arrays["test", cls, i]) for cls in classes for i in range(count)]).astype(np.int64)


def test_image_folder_in_memory_loads_classes_splits_and_pixels(tree):
    root, arrays = tree
    data = load_dataset(_folder_spec(root))
    assert data.in_memory
    assert isinstance(data.train, MemorySplit)
    assert data.train.images.dtype == np.uint8  # the files' pixels, a quarter of float32
    assert data.num_classes == 2
    assert data.input_shape == (3, 16, 16)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 4)
    assert sorted(data.val.labels.tolist()) == [0, 1]  # stratified
    assert data.test.labels.tolist() == [0, 0, 1, 1]
    assert np.array_equal(_levels(split_images(data, data.test), data, 255.0), _test_images_in_file_order(arrays))
    train_levels = np.concatenate([s.images for s in (data.train, data.val)]).astype(np.int64)
    originals = np.stack([_as_chw(arrays["train", c, i]) for c in ("a", "b") for i in range(5)]).astype(np.int64)
    assert _row_keys(train_levels) == _row_keys(originals)


def test_image_folder_in_memory_train_batches_cover_every_index_once(tree):
    root, _ = tree
    data = load_dataset(_folder_spec(root))
    batches = list(train_batches(data, batch_size=3, epoch=0, shuffle_seed=0, device=CPU))
    assert all(views is not None for _, views in batches)
    assert torch.equal(torch.cat([b.indices for b, _ in batches]).sort().values, torch.arange(8))


def test_image_folder_resizes_to_image_size(tree):
    root, _ = tree
    data = load_dataset(_folder_spec(root, image_size=8))
    assert data.input_shape == (3, 8, 8)
    assert data.train.images.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_image_folder_streaming_yields_every_training_index_once(tree, num_workers):
    root, _ = tree
    data = load_dataset(_folder_spec(root, memory_limit_mb=0, num_workers=num_workers))
    assert not data.in_memory
    assert isinstance(data.train, FolderSplit)
    assert data.num_classes == 2
    assert data.input_shape == (3, 16, 16)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 4)
    seen = []
    for batch, views in train_batches(data, batch_size=3, epoch=0, shuffle_seed=0, device=CPU):
        assert views is None
        assert batch.images.shape == (len(batch.indices), 3, 16, 16)
        assert torch.equal(batch.labels, data.train.labels[batch.indices])
        seen.append(batch.indices)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(8))


def test_image_folder_streaming_eval_gives_the_files_normalised_in_order(tree):
    root, arrays = tree
    data = load_dataset(_folder_spec(root, memory_limit_mb=0))
    batches = list(eval_batches(data, data.test, batch_size=3, device=CPU))
    assert torch.equal(torch.cat([b.indices for b in batches]), torch.arange(4))
    assert torch.cat([b.labels for b in batches]).tolist() == [0, 0, 1, 1]
    images = torch.cat([b.images for b in batches])
    assert np.array_equal(_levels(images, data, 255.0), _test_images_in_file_order(arrays))


def test_a_streamed_tree_is_identified_by_its_files_and_a_changed_file_changes_it(tmp_path):
    root = tmp_path / "pets"
    _make_tree(root, {"train": 5, "test": 2})
    first = load_dataset(_folder_spec(root, memory_limit_mb=0))
    assert load_dataset(_folder_spec(root, memory_limit_mb=0)).digest == first.digest
    with open(root / "train" / "a" / "0.png", "ab") as handle:
        handle.write(b"\0")  # one more byte in one image
    assert load_dataset(_folder_spec(root, memory_limit_mb=0)).digest != first.digest


def test_image_folder_streaming_matches_in_memory_split_and_statistics(tree):
    root, _ = tree
    memory = load_dataset(_folder_spec(root))
    streaming = load_dataset(_folder_spec(root, memory_limit_mb=0))
    assert torch.equal(streaming.train.labels, memory.train.labels)
    assert np.allclose(streaming.mean, memory.mean, atol=1e-5)
    assert np.allclose(streaming.std, memory.std, atol=1e-5)
    images = torch.cat([b.images for b in eval_batches(streaming, streaming.train, 4, CPU)])
    assert torch.allclose(images, split_images(memory, memory.train), atol=1e-4)


def test_streamed_and_in_memory_training_crops_pad_with_the_same_value(tmp_path):
    for split, count in (("train", 5), ("test", 2)):
        for cls, level in (("a", 60), ("b", 200)):  # uniform images: a crop's border is the only other value
            (tmp_path / "grey" / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), level).save(tmp_path / "grey" / split / cls / f"{i}.png")
    values = {}
    for memory_limit_mb in (2048, 0):
        data = load_dataset(_folder_spec(tmp_path / "grey", image_size=8, memory_limit_mb=memory_limit_mb))
        torch.manual_seed(0)  # the streamed crops' offsets come from torch's global generator
        images = torch.cat([batch.images for batch, _ in train_batches(data, 4, epoch=1, shuffle_seed=0, device=CPU)])
        values[memory_limit_mb] = set(torch.round(images, decimals=4).unique().tolist())
    assert 0.0 in values[2048]
    assert len(values[2048]) == 3
    assert values[0] == values[2048]


def test_image_folder_of_grayscale_pngs_has_one_channel(tmp_path):
    arrays = _make_tree(tmp_path / "gray", {"train": 3, "val": 2}, mode="L")
    data = load_dataset(_folder_spec(tmp_path / "gray", val_fraction=0.34))
    assert data.in_channels == 1
    assert data.input_shape == (1, 16, 16)
    assert np.array_equal(
        data.test.images.astype(np.int64),
        _test_images_in_file_order({("test", c, i): arrays["val", c, i] for c in ("a", "b") for i in range(2)}),
    )


def test_image_folder_accepts_val_instead_of_test(tmp_path):
    _make_tree(tmp_path / "v", {"train": 3, "val": 1}, size=8)
    data = load_dataset(_folder_spec(tmp_path / "v", image_size=8, val_fraction=0.34))
    assert len(data.test) == 2
    assert len(data.train) + len(data.val) == 6


def test_image_folder_missing_directory_is_a_dataset_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_dataset(DataSpec(name=str(tmp_path / "nowhere")))
    assert caught.value.field == "data.name"


def test_image_folder_without_train_is_a_dataset_config_error(tmp_path):
    (tmp_path / "d" / "test" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no train/") as caught:
        load_dataset(DataSpec(name=str(tmp_path / "d")))
    assert caught.value.field == "data.name"


def test_image_folder_without_test_or_val_is_a_dataset_config_error(tmp_path):
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no test/ or val/") as caught:
        load_dataset(DataSpec(name=str(tmp_path / "d")))
    assert caught.value.field == "data.name"


def test_image_folder_with_different_class_folders_is_a_dataset_config_error(tmp_path):
    _make_tree(tmp_path / "d", {"train": 2}, classes=("a", "b"), size=4)
    _make_tree(tmp_path / "d", {"test": 1}, classes=("a", "c"), size=4)
    with pytest.raises(ConfigError, match="class folders differ") as caught:
        load_dataset(_folder_spec(tmp_path / "d", image_size=4))
    assert caught.value.field == "data.name"


def test_image_folder_with_empty_train_is_a_dataset_config_error(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    _make_tree(tmp_path / "d", {"test": 1}, size=4)
    with pytest.raises(ConfigError, match="cannot read images") as caught:
        load_dataset(_folder_spec(tmp_path / "d", image_size=4))
    assert caught.value.field == "data.name"


@pytest.mark.parametrize("memory_limit_mb", [2048, 0])
def test_image_folder_too_small_for_a_stratified_validation_split_is_a_config_error(tmp_path, memory_limit_mb):
    _make_tree(tmp_path / "d", {"train": 3, "test": 1}, size=4)  # 0.1 of 6 images: 1 held out, 2 classes
    spec = _folder_spec(tmp_path / "d", image_size=4, val_fraction=0.1, memory_limit_mb=memory_limit_mb)
    with pytest.raises(ConfigError, match=r"0.1 of 6 samples cannot hold every class in both parts") as caught:
        load_dataset(spec)
    assert caught.value.field == "data.val_fraction"


def test_a_synthetic_test_fraction_too_small_for_every_class_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot hold every class") as caught:
        load_dataset(_synthetic(num_classes=10, num_samples=40, test_fraction=0.1))
    assert caught.value.field == "data.test_fraction"


# ---------------------------------------------------------------- torchvision datasets, network faked


class _Response(io.BytesIO):
    """What urllib.request.urlopen returns, as far as torchvision reads it."""

    def __init__(self, url: str, payload: bytes) -> None:
        super().__init__(payload)
        self.url = url
        self.length = len(payload)


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Answer urlopen with `files` by the URL's last path component; 404 otherwise. Returns the URLs asked."""
    requested: list[str] = []

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else str(request)
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return _Response(url, files[name])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def _offline(monkeypatch) -> None:
    def urlopen(request, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def _balanced(rng, count: int, classes: int, shape) -> tuple[np.ndarray, list[int]]:
    labels = rng.permutation(np.arange(count) % classes).tolist()
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8), labels


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _fake_cifar(monkeypatch, cls, train_files: int, per_train_file: int, test_count: int, classes: int) -> dict:
    """Build cls's archive in its real layout (pickled batches of N x 3072 uint8 CHW rows), patch its checksums."""
    rng = np.random.default_rng(1)
    label_key = "labels" if cls is tvd.CIFAR10 else "fine_labels"
    members, train_list, train_images, train_labels = {}, [], [], []
    names = [name for name, _ in cls.train_list]
    assert len(names) == train_files
    for name in names:
        images, labels = _balanced(rng, per_train_file, classes, (3, 32, 32))
        members[name] = pickle.dumps({"data": images.reshape(len(images), -1), label_key: labels})
        train_list.append([name, _md5(members[name])])
        train_images.append(images)
        train_labels += labels
    test_name = cls.test_list[0][0]
    test_images, test_labels = _balanced(rng, test_count, classes, (3, 32, 32))
    members[test_name] = pickle.dumps({"data": test_images.reshape(test_count, -1), label_key: test_labels})
    meta_name, meta_key = cls.meta["filename"], cls.meta["key"]
    members[meta_name] = pickle.dumps({meta_key: [f"class{k}" for k in range(classes)]})
    archive = _tar_gz({f"{cls.base_folder}/{name}": payload for name, payload in members.items()})

    monkeypatch.setattr(cls, "tgz_md5", _md5(archive))
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", [[test_name, _md5(members[test_name])]])
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": meta_key, "md5": _md5(members[meta_name])})
    requested = _serve(monkeypatch, {cls.filename: archive})
    return dict(
        requested=requested,
        train_images=np.concatenate(train_images),
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def _idx(array: np.ndarray) -> bytes:
    """MNIST's IDX format: magic 0x0000 08 ndim (unsigned bytes), big-endian sizes, raw data."""
    return struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _fake_mnist(monkeypatch, cls, train_count: int, test_count: int) -> dict:
    rng = np.random.default_rng(2)
    train_images, train_labels = _balanced(rng, train_count, 10, (28, 28))
    test_images, test_labels = _balanced(rng, test_count, 10, (28, 28))
    contents = {
        "train-images-idx3-ubyte.gz": _idx(train_images),
        "train-labels-idx1-ubyte.gz": _idx(np.asarray(train_labels, dtype=np.uint8)),
        "t10k-images-idx3-ubyte.gz": _idx(test_images),
        "t10k-labels-idx1-ubyte.gz": _idx(np.asarray(test_labels, dtype=np.uint8)),
    }
    files = {name: gzip.compress(payload, mtime=0) for name, payload in contents.items()}
    assert [name for name, _ in cls.resources] == list(files)
    monkeypatch.setattr(cls, "resources", [(name, _md5(payload)) for name, payload in files.items()])
    requested = _serve(monkeypatch, files)
    return dict(
        requested=requested,
        train_images=train_images[:, None],
        train_labels=train_labels,
        test_images=test_images[:, None],
        test_labels=test_labels,
    )


def _check_torchvision_dataset(data, fake, classes: int, shape, sizes) -> None:
    assert data.input_shape == shape
    assert data.num_classes == classes
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    # the test split is the source's own, in order; train + val are exactly the source's training images
    assert data.train.images.dtype == np.uint8  # the source's pixels, a quarter of float32
    assert np.array_equal(_levels(split_images(data, data.test), data, 255.0), fake["test_images"].astype(np.int64))
    assert data.test.labels.tolist() == fake["test_labels"]
    train_levels = np.concatenate([s.images for s in (data.train, data.val)]).astype(np.int64)
    assert _row_keys(train_levels) == _row_keys(fake["train_images"].astype(np.int64))
    labels = torch.cat([data.train.labels, data.val.labels]).tolist()
    assert Counter(labels) == Counter(fake["train_labels"])
    assert split_images(data, data.train).mean(dim=(0, 2, 3)).abs().max() < 1e-5


def test_cifar10_downloads_extracts_and_splits(tmp_path, monkeypatch):
    fake = _fake_cifar(monkeypatch, tvd.CIFAR10, train_files=5, per_train_file=20, test_count=20, classes=10)
    data = load_dataset(DataSpec(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert tvd.CIFAR10.url in fake["requested"]
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    _check_torchvision_dataset(data, fake, 10, (3, 32, 32), (80, 20, 20))
    assert data.augment == AugmentSpec(pad=4, flip=True)


def test_cifar10_second_load_uses_the_files_on_disk_without_network(tmp_path, monkeypatch):
    _fake_cifar(monkeypatch, tvd.CIFAR10, train_files=5, per_train_file=20, test_count=20, classes=10)
    first = load_dataset(DataSpec(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    _offline(monkeypatch)
    second = load_dataset(DataSpec(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert np.array_equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)


def test_cifar100_downloads_extracts_and_splits(tmp_path, monkeypatch):
    fake = _fake_cifar(monkeypatch, tvd.CIFAR100, train_files=1, per_train_file=400, test_count=200, classes=100)
    data = load_dataset(DataSpec(name="cifar100", root=str(tmp_path), val_fraction=0.25))
    _check_torchvision_dataset(data, fake, 100, (3, 32, 32), (300, 100, 200))


@pytest.mark.parametrize(("name", "cls"), [("mnist", tvd.MNIST), ("fashion_mnist", tvd.FashionMNIST)])
def test_mnist_family_downloads_extracts_and_splits(tmp_path, monkeypatch, name, cls):
    fake = _fake_mnist(monkeypatch, cls, train_count=60, test_count=20)
    data = load_dataset(DataSpec(name=name, root=str(tmp_path), val_fraction=0.2))
    assert all(url.startswith(cls.mirrors[0]) for url in fake["requested"])
    assert (tmp_path / cls.__name__ / "raw" / "t10k-labels-idx1-ubyte").is_file()
    _check_torchvision_dataset(data, fake, 10, (1, 28, 28), (48, 12, 20))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist"])
def test_torchvision_dataset_without_network_says_where_to_put_the_files(tmp_path, monkeypatch, name):
    _offline(monkeypatch)
    root = tmp_path / "offline-root"
    with pytest.raises(ConfigError) as caught:
        load_dataset(DataSpec(name=name, root=str(root)))
    error = caught.value
    assert error.field == "data.name"
    message = str(error)
    assert f"cannot download {name} into {root}" in message
    assert f"place the files in {root}" in message
    assert "data.root" in message
    assert "KDSWEEP_DATA" in message


def test_torchvision_dataset_with_corrupted_download_is_a_config_error(tmp_path, monkeypatch):
    _fake_cifar(monkeypatch, tvd.CIFAR10, train_files=5, per_train_file=10, test_count=10, classes=10)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)  # what a truncated download looks like
    with pytest.raises(ConfigError, match="cannot download cifar10") as caught:
        load_dataset(DataSpec(name="cifar10", root=str(tmp_path)))
    assert caught.value.field == "data.name"


def test_the_digest_and_the_statistics_do_not_depend_on_how_many_threads_loaded_the_data():
    """Teachers are cached under the data's digest: a teacher trained by a sweep on one core must be found
    by one on two (a float32 reduction's rounding depends on how many threads summed it)."""
    threads = torch.get_num_threads()
    loaded = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            data = load_dataset(DataSpec(name="glyphs"))
            loaded.append((data.digest, data.mean, data.std))
    finally:
        torch.set_num_threads(threads)
    assert loaded[0] == loaded[1]


# ---------------------------------------------------------------- sharing through Ray's object store


def _private_bytes() -> int:
    """This process's anonymous resident memory: what it holds of its own (not the object store's pages)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))


def test_trials_share_one_read_only_copy_of_the_splits_through_the_object_store(ray_session):
    """Two Ray tasks given one Dataset ref read the object store's buffer (read-only, not their own),
    and an epoch of batches copies batches, never a split: their private memory grows by far less
    than the splits' size (a float32 torch copy per trial would grow by all of it)."""
    import ray

    data = load_dataset(_synthetic(channels=3, image_size=32, num_classes=4, num_samples=6000))
    size = sum(split.images.nbytes for split in (data.train, data.val, data.test))
    assert size == 6000 * 3 * 32 * 32 * 4  # float32 source: 70 MB
    ref = ray.put(data)

    @ray.remote(num_cpus=1)
    def read(refs) -> tuple[bool, bool, int, int]:
        import kdsweep.data  # noqa: F401  (imported before measuring: the import is no copy of the data)

        torch.set_num_threads(1)
        before = _private_bytes()
        shared = ray.get(refs[0])
        got = _private_bytes() - before
        images = shared.train.images
        # Small batches: the allocator keeps some of a batch's temporaries (its index tensors are int64
        # of the batch's shape), which must stay well below the split's size for the measure to mean much.
        for _ in train_batches(shared, 32, epoch=1, shuffle_seed=0, device=CPU):
            pass
        for split in (shared.val, shared.test):
            for _ in eval_batches(shared, split, 32, CPU):
                pass
        return images.flags.writeable, images.flags.owndata, got, _private_bytes() - before

    for writeable, owndata, got, grown in ray.get([read.remote([ref]), read.remote([ref])]):
        assert not writeable  # Ray's zero-copy view of the object store
        assert not owndata
        assert got < size / 20, f"ray.get: {got / 2**20:.1f} MB of {size / 2**20:.1f} MB"
        assert grown < size / 4, f"an epoch: {grown / 2**20:.1f} MB of {size / 2**20:.1f} MB"
