"""Tests for rnnjax/data: offline tfds building from tiny generated IDX files, the .npz cache,
fast failures, and batching checked against the permutations it promises."""

import gzip
import io
import itertools
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from rnnjax import data
from rnnjax.data import _builders, _cache, _load

IDX = {"train": 20, "t10k": 10}


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_set(tmp_path_factory):
    """Four IDX files with random pixels; returns (manual_dir, {split: (images, labels)})."""
    folder = tmp_path_factory.mktemp("manual")
    rng = np.random.default_rng(0)
    truth = {}
    for prefix, n in IDX.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        truth["train" if prefix == "train" else "test"] = (images, labels)
    return folder, truth


@pytest.fixture(scope="module")
def mnist_dir(idx_set, tmp_path_factory):
    """A data_dir where the tiny "mnist" has been built and both splits loaded (and cached)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    for split in ("train", "test"):
        data.load("mnist", split, data_dir=data_dir, manual_dir=idx_set[0])
    return data_dir


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_built_from_idx_files_equals_them(idx_set, mnist_dir, split):
    images, labels = idx_set[1][split]
    (npz,) = (mnist_dir / "mnist_idx" / "1.0.0" / "numpy").glob(f"{split}.npz")
    fresh = _load._read_split(data.MnistIdx(data_dir=str(mnist_dir)), split)  # bypasses the cache
    for arrays in (fresh, data.load("mnist", split, data_dir=mnist_dir)):
        assert sorted(arrays) == ["image", "label"]
        assert arrays["image"].dtype == np.uint8 and arrays["label"].dtype == np.int64
        np.testing.assert_array_equal(arrays["image"], images)
        np.testing.assert_array_equal(arrays["label"], labels)
    assert npz.stat().st_size > images.nbytes
    assert "tensorflow" not in sys.modules


def test_second_load_reads_only_the_npz_cache(mnist_dir, monkeypatch):
    def fail(*args):
        raise AssertionError("the tfds data source was read although the split is cached")

    monkeypatch.setattr(_load, "_read_split", fail)
    monkeypatch.setattr(data.MnistIdx, "download_and_prepare", fail)
    start = time.perf_counter()
    assert data.load("mnist", "train", data_dir=mnist_dir)["image"].shape == (20, 28, 28)
    assert time.perf_counter() - start < 1


def test_split_slices_are_cached_separately(idx_set, mnist_dir):
    images, _ = idx_set[1]["train"]
    head = data.load("mnist", "train[:5]", data_dir=mnist_dir)
    np.testing.assert_array_equal(head["image"], images[:5])
    assert data.load("mnist", "train", data_dir=mnist_dir)["image"].shape[0] == 20
    # a split of many slices, too long to quote as a file name, is cached under its hash
    many = "+".join(f"train[{k}:{k + 1}]" for k in range(0, 20, 2))
    for _ in range(2):  # the second load reads the cache
        np.testing.assert_array_equal(
            data.load("mnist", many, data_dir=mnist_dir)["image"], images[::2]
        )
    assert len(list((mnist_dir / "mnist_idx" / "1.0.0" / "numpy").glob("split-*.npz"))) == 1


def test_a_prepared_set_loads_but_warns_of_a_manual_dir_without_the_files(
    idx_set, mnist_dir, tmp_path, caplog
):
    """A prepared set needs no IDX files, but a mistyped manual_dir must not pass unnoticed."""
    for manual_dir, warnings in ((idx_set[0], 0), (tmp_path / "typo", 1)):
        caplog.clear()
        for split in ("test", "train"):  # warned once, not at each split
            arrays = data.load("mnist", split, data_dir=mnist_dir, manual_dir=manual_dir)
            np.testing.assert_array_equal(arrays["label"], idx_set[1][split][1])
        warning = f"manual_dir={manual_dir} lacks train-images-idx3-ubyte.gz"
        assert caplog.text.count(warning) == warnings, caplog.text


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (as .ci/run does)"
)
def test_fashion_mnist_builds_from_the_debian_package_by_default(tmp_path):
    """The README's first command: no manual_dir, the Debian package's folder. Truth: the IDX
    files decoded here with gzip and numpy alone, and the set's known first test labels."""
    arrays = data.load("fashion_mnist", "test", data_dir=tmp_path)
    with gzip.open(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    with gzip.open(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    np.testing.assert_array_equal(arrays["label"], labels)
    np.testing.assert_array_equal(arrays["image"], images)
    assert list(labels[:5]) == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    assert data.class_count("fashion_mnist", data_dir=tmp_path) == 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_files_fail_fast_with_instructions(tmp_path, name):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        data.load(name, "train", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "nothing")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "manual_dir" in message and "train-images-idx3-ubyte.gz" in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert ("dataset-fashion-mnist" in message) == (name == "fashion_mnist")


def test_a_truncated_idx_file_is_named_and_good_files_then_build(idx_set, tmp_path):
    folder = tmp_path / "manual"
    shutil.copytree(idx_set[0], folder)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])  # a cut download
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        data.load("mnist", "train", data_dir=tmp_path / "tfds", manual_dir=folder)
    assert str(images) in str(error.value) and "manual_dir" in str(error.value)
    shutil.copy(idx_set[0] / images.name, images)
    arrays = data.load("mnist", "train", data_dir=tmp_path / "tfds", manual_dir=folder)
    np.testing.assert_array_equal(arrays["image"], idx_set[1]["train"][0])


def test_a_corrupt_or_stale_cache_is_rebuilt_from_the_prepared_split(idx_set, tmp_path, caplog):
    images, labels = idx_set[1]["train"]
    data_dir = tmp_path / "tfds"
    data.load("mnist", "train", data_dir=data_dir, manual_dir=idx_set[0])
    cache = data_dir / "mnist_idx" / "1.0.0" / "numpy" / "train.npz"
    good = cache.read_bytes()
    damages = {
        "torn": lambda: cache.write_bytes(good[: len(good) // 2]),
        "empty": lambda: cache.write_bytes(b""),
        "garbage": lambda: cache.write_bytes(b"not an npz file"),
        "fewer examples": lambda: _cache.save(cache, {"image": images[:3], "label": labels[:3]}),
        "a missing feature": lambda: _cache.save(cache, {"image": images}),
        "another dtype": lambda: _cache.save(cache, {"image": images / 255.0, "label": labels}),
        "another shape": lambda: _cache.save(cache, {"image": images[..., None], "label": labels}),
    }
    for damage, write in damages.items():
        write()
        caplog.clear()
        arrays = data.load("mnist", "train", data_dir=data_dir)
        np.testing.assert_array_equal(arrays["image"], images, err_msg=damage)
        np.testing.assert_array_equal(arrays["label"], labels, err_msg=damage)
        assert str(cache) in caplog.text, damage
        np.testing.assert_array_equal(_cache.load(cache)["image"], images, err_msg=damage)


def test_a_failed_cache_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def full_disk(file, **arrays):
        file.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _cache.save(tmp_path / "numpy" / "train.npz", {"x": np.arange(3)})
    assert list((tmp_path / "numpy").iterdir()) == []


def test_labels_outside_the_classes_are_named_with_their_file(idx_set, tmp_path):
    folder = tmp_path / "manual"
    shutil.copytree(idx_set[0], folder)
    path = folder / "train-labels-idx1-ubyte.gz"
    labels = _builders.read_idx(path).copy()
    labels[3] = 10  # one past the ten digits
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.tobytes())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got 10") as error:
        data.load("mnist", "train", data_dir=tmp_path / "tfds", manual_dir=folder)
    assert str(path) in str(error.value)


def test_a_cut_idx_header_is_named(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big"))  # 3 dims, only 1 given
    with pytest.raises(ValueError, match="3-d IDX header needs 16 bytes, got 8") as error:
        _builders.read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [("cifar10", "not prepared"), ("no_such_dataset_anywhere", "neither a tfds dataset nor")],
)
def test_unprepared_or_unknown_dataset_fails_fast(tmp_path, name, message):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=message):
        data.load(name, "train", data_dir=tmp_path)
    assert time.perf_counter() - start < 5


class RnnjaxTinyMixed(tfds.core.GeneratorBasedBuilder):
    """Five examples mixing a grey image, text, a ragged sequence and a nested float."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(4, 3, 1)),
            "text": tfds.features.Text(),
            "tokens": tfds.features.Sequence(np.int32),
            "meta": {"score": np.float32},
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            png = io.BytesIO()  # PNG bytes, as numpy arrays would be encoded with TensorFlow
            Image.fromarray(np.full((4, 3), 10 * i, np.uint8)).save(png, format="png")
            example = {"image": png.getvalue(), "text": "ü" * i, "tokens": np.arange(i)}
            yield i, example | {"meta": {"score": i / 2}}


def test_generic_prepared_dataset_loads_and_caches(tmp_path, caplog):
    RnnjaxTinyMixed(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    for _ in range(2):  # from tfds, then from the cache, which matches its columns
        arrays = data.load("rnnjax_tiny_mixed", "train", data_dir=tmp_path)
        assert "Rebuilding" not in caplog.text
        order = np.argsort(arrays["meta/score"])  # tfds shuffles examples on write
        assert arrays["image"].shape == (5, 4, 3)
        np.testing.assert_array_equal(arrays["image"][order][:, 0, 0], 10 * np.arange(5))
        np.testing.assert_array_equal(arrays["meta/score"][order], np.arange(5) / 2)
        assert list(arrays["text"][order]) == [("ü" * i).encode() for i in range(5)]
        assert arrays["tokens"].dtype == object
        for i, tokens in enumerate(arrays["tokens"][order]):
            assert tokens.dtype == np.int32
            np.testing.assert_array_equal(tokens, np.arange(i))
    assert (tmp_path / "rnnjax_tiny_mixed" / "1.0.0" / "numpy" / "train.npz").exists()


def test_class_count_comes_from_the_metadata(mnist_dir, tmp_path):
    assert data.class_count("mnist", data_dir=mnist_dir) == 10
    assert data.class_count("mnist", "image", data_dir=mnist_dir) is None
    RnnjaxTinyMixed(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert data.class_count("rnnjax_tiny_mixed", data_dir=tmp_path) is None  # no "label"


# ---------------------------------------------------------------- batching


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def indices(batch_list):
    return np.concatenate([b["i"] for b in batch_list])


def test_steps_per_epoch():
    assert data.steps_per_epoch(10, 3) == 3
    assert data.steps_per_epoch(10, 3, drop_remainder=False) == 4
    assert data.steps_per_epoch(9, 3, drop_remainder=False) == 3


def test_batches_are_deterministic_and_each_epoch_is_a_permutation():
    arrays = {"i": np.arange(12), "x": np.arange(12) * 10.0}
    first = take(data.batches(arrays, 4, seed=7), 9)
    again = take(data.batches(arrays, 4, seed=7), 9)
    assert all(np.array_equal(a["i"], b["i"]) for a, b in zip(first, again, strict=True))
    assert all(np.array_equal(b["x"], b["i"] * 10.0) for b in first)
    epochs = indices(first).reshape(3, 12)
    for e, epoch in enumerate(epochs):
        np.testing.assert_array_equal(epoch, np.random.default_rng([7, e]).permutation(12))
    assert not np.array_equal(epochs[0], epochs[1])
    other = indices(take(data.batches(arrays, 4, seed=8), 3))
    assert not np.array_equal(other, epochs[0])


def test_resuming_at_start_step_reproduces_the_uninterrupted_stream():
    arrays = {"i": np.arange(10)}
    stream = take(data.batches(arrays, 3, seed=1), 12)  # 3 steps per epoch, remainder dropped
    for start in (1, 3, 5, 8):
        resumed = take(data.batches(arrays, 3, seed=1, start_step=start), 12 - start)
        np.testing.assert_array_equal(indices(resumed), indices(stream[start:]))


def test_unshuffled_batches_keep_the_order_and_may_keep_the_remainder():
    arrays = {"i": np.arange(7)}
    got = take(data.batches(arrays, 3, seed=0, shuffle=False, drop_remainder=False), 4)
    assert [list(b["i"]) for b in got] == [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2]]


def test_process_slices_partition_each_global_batch():
    arrays = {"i": np.arange(16)}
    global_batches = take(data.batches(arrays, 8, seed=3), 5)
    local = [
        take(data.batches(arrays, 8, seed=3, process_index=p, process_count=4), 5) for p in range(4)
    ]
    for step, batch in enumerate(global_batches):
        parts = [local[p][step]["i"] for p in range(4)]
        assert all(len(part) == 2 for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), batch["i"])


@pytest.mark.parametrize(
    "arrays, kwargs",
    [
        ({"a": np.zeros(4), "b": np.zeros(5)}, {}),
        ({"a": np.zeros(4)}, {"process_count": 2}),
        ({"a": np.zeros(4)}, {"process_count": 3, "process_index": 3}),
        ({"a": np.zeros(4)}, {"process_count": 0}),
        ({"a": np.zeros(2)}, {}),
        ({"a": np.zeros(4)}, {"start_step": -1}),
        ({"a": np.zeros(4)}, {"seed": -2}),
    ],
)
def test_batches_reject_bad_arguments(arrays, kwargs):
    with pytest.raises(ValueError, match="must|exceeds|need"):
        next(data.batches(arrays, 3, **{"seed": 0} | kwargs))


def test_eval_batches_cover_every_example_once():
    arrays = {"i": np.arange(10), "y": np.arange(10) % 3}
    got = list(data.eval_batches(arrays, 4))
    assert [len(b["i"]) for b in got] == [4, 4, 4]
    mask = np.concatenate([b["mask"] for b in got])
    assert mask.dtype == bool and mask.sum() == 10
    np.testing.assert_array_equal(np.concatenate([b["i"] for b in got])[mask], np.arange(10))
    np.testing.assert_array_equal(got[-1]["y"], arrays["y"][[8, 9, 9, 9]])


# ---------------------------------------------------------------- variable lengths


def test_pad_batch_pads_with_zeros_and_reports_lengths():
    sequences = [np.ones((3, 2), np.float32), 2 * np.ones((5, 2), np.float32), np.ones((0, 2))]
    padded, lengths = data.pad_batch(sequences)
    assert padded.shape == (3, 5, 2) and padded.dtype == np.float64
    np.testing.assert_array_equal(lengths, [3, 5, 0])
    assert lengths.dtype == np.int32
    for row, seq in zip(padded, sequences, strict=True):
        np.testing.assert_array_equal(row[: len(seq)], seq)
        assert not row[len(seq) :].any()
    tokens, _ = data.pad_batch([np.arange(1, 4), np.arange(1, 6)], pad_to_multiple=4)
    np.testing.assert_array_equal(tokens, [[1, 2, 3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]])
    with pytest.raises(ValueError, match="equal trailing dims"):
        data.pad_batch([np.ones((2, 3)), np.ones((2, 4))])


def test_bucket_batches_partition_by_similar_length_deterministically():
    lengths = np.random.default_rng(0).integers(1, 100, 50)
    got = data.bucket_batches(lengths, 8, seed=5, pool=50)
    assert [len(b) for b in got].count(8) == 6 and len(got) == data.steps_per_epoch(50, 8, False)
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), np.arange(50))
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in got)  # one pool: sorted runs
    assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(spans))
    same = data.bucket_batches(lengths, 8, seed=5, pool=50)
    assert all(np.array_equal(a, b) for a, b in zip(got, same, strict=True))
    later = data.bucket_batches(lengths, 8, seed=5, epoch=1, pool=50)
    assert not all(np.array_equal(a, b) for a, b in zip(got, later, strict=True))
    dropped = data.bucket_batches(lengths, 8, seed=5, drop_remainder=True)
    assert len(dropped) == 6 and all(len(b) == 8 for b in dropped)


@pytest.mark.parametrize("lengths", [np.int64(5), np.ones((2, 3), int), np.array([], int)])
def test_bucket_batches_name_bad_lengths(lengths):
    with pytest.raises(
        ValueError, match=rf"need lengths \[N\].*shape {re.escape(str(lengths.shape))}"
    ):
        data.bucket_batches(lengths, 2, seed=0)


def test_bucket_batches_drop_a_new_remainder_each_epoch():
    """Not always the longest examples of the last pool, which would then never be trained on."""
    lengths = np.arange(1, 98)  # 97 examples: 7 left out of each epoch's batches of 10
    seen = set()
    for epoch in range(20):
        batches = data.bucket_batches(lengths, 10, seed=0, epoch=epoch, drop_remainder=True)
        assert len(batches) == 9 and all(len(b) == 10 for b in batches)
        seen |= set(np.concatenate(batches).tolist())
    assert seen == set(range(97))
