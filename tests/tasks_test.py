"""Tests for rnnjax/train/tasks: choosing a task, and MNIST as rows, pixels or permuted pixels."""

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from rnnjax.train import launch, tasks
from rnnjax.train.tasks.classification import classifier_task

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "seq_mnist_lstm.py"


def _data_config(tiny_idx, tmp_path, **overrides):
    overrides = {"data.manual_dir": str(tiny_idx), "data.data_dir": str(tmp_path / "tfds")} | {
        f"data.{k}": v for k, v in overrides.items()
    }
    return launch.load_config(str(CONFIG), overrides).data


def test_rows_pixels_and_permuted_pixels_hold_the_same_images(tiny_idx, tmp_path):
    rows, rows_test = tasks.load_classification(_data_config(tiny_idx, tmp_path, sequence="rows"))
    pixels, _ = tasks.load_classification(_data_config(tiny_idx, tmp_path))
    permuted, permuted_test = tasks.load_classification(
        _data_config(tiny_idx, tmp_path, permute=True)
    )
    assert rows["inputs"].shape == (60, 28, 28) and pixels["inputs"].shape == (60, 784, 1)
    np.testing.assert_array_equal(pixels["inputs"][..., 0], rows["inputs"].reshape(60, 784))
    order = np.random.default_rng(0).permutation(784)  # permutation_seed 0
    np.testing.assert_array_equal(permuted["inputs"][:, :, 0], pixels["inputs"][:, order, 0])
    test_pixels = rows_test["inputs"].reshape(len(rows_test["inputs"]), 784)
    np.testing.assert_array_equal(permuted_test["inputs"][:, :, 0], test_pixels[:, order])
    np.testing.assert_array_equal(permuted["labels"], rows["labels"])
    assert not np.array_equal(permuted["inputs"], pixels["inputs"])


def test_another_permutation_seed_gives_another_order(tiny_idx, tmp_path):
    first, _ = tasks.load_classification(_data_config(tiny_idx, tmp_path, permute=True))
    other, _ = tasks.load_classification(
        _data_config(tiny_idx, tmp_path, permute=True, permutation_seed=1)
    )
    assert not np.array_equal(first["inputs"], other["inputs"])
    np.testing.assert_array_equal(np.sort(first["inputs"], 1), np.sort(other["inputs"], 1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sequence": "columns"}, "data.sequence must be one of"),
        ({"sequence": "rows", "permute": True}, "data.permute=True needs data.sequence='pixels'"),
    ],
)
def test_bad_sequence_settings_are_named(tiny_idx, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tasks.load_classification(_data_config(tiny_idx, tmp_path, **overrides))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_negative_limit_is_refused_not_taken_as_all_but_the_last(tiny_idx, tmp_path, split):
    config = _data_config(tiny_idx, tmp_path, **{f"{split}_limit": -1})
    with pytest.raises(ValueError, match=f"data.{split}_limit must be >= 0 .*got -1"):
        tasks.load_classification(config)


@pytest.mark.parametrize("name", ["seq_mnist_lstm", "seq_mnist_min_gru", "seq_mnist_lru"])
def test_sequential_mnist_configs_classify_permuted_pixels(tiny_idx, tmp_path, name):
    config = launch.load_config(
        str(CONFIG.with_name(f"{name}.py")),
        {
            "data.manual_dir": str(tiny_idx),
            "data.data_dir": str(tmp_path / "tfds"),
            "data.permute": True,
            "model.units": 4,
        },
    )
    task = tasks.build(config)
    assert task.num_classes == 10 and task.headline == "accuracy"
    params = task.model.init(jax.random.key(0))
    batch = {k: v[:3] for k, v in task.train.items()}
    logits = jax.jit(task.forward)(params, batch)
    assert logits.shape == (3, 10)
    loss, per_example = task.loss(logits, batch)
    assert np.isfinite(loss) and per_example["accuracy"].shape == (3,)


def test_an_unknown_task_lists_the_known_ones():
    config = ml_collections.ConfigDict({"task": "sorting"})
    with pytest.raises(
        ValueError, match=r"config.task must be one of \['adding', 'classification'"
    ):
        tasks.build(config)


def test_a_config_without_a_task_is_classification():
    assert tasks.TASKS["classification"] == "classification"
    config = ml_collections.ConfigDict({"data": {}})
    with pytest.raises(AttributeError):  # it reached the classification task's data keys
        tasks.build(config)


def test_a_training_subset_without_the_highest_classes_still_gets_every_class(tiny_idx, tmp_path):
    config = launch.load_config(
        str(CONFIG),
        {
            "data.manual_dir": str(tiny_idx),
            "data.data_dir": str(tmp_path / "tfds"),
            "data.train_limit": 5,  # labels 0..4 only
            "model.units": 4,
        },
    )
    task = tasks.build(config)
    assert task.train["labels"].max() == 4
    assert task.num_classes == 10  # from the dataset's metadata
    params = task.model.init(jax.random.key(0))
    assert jax.jit(task.forward)(params, {k: v[:2] for k, v in task.test.items()}).shape == (2, 10)
    # Without metadata (e.g. generated data): the labels of both splits.
    without = classifier_task(task.train, task.test, config.model)
    assert without.num_classes == 10 == tasks.num_classes(task.train, task.test)


def test_image_rows_scale_uint8_pixels_and_refuse_other_dtypes():
    pixels = np.array([[[0, 51], [102, 255]]], np.uint8)
    np.testing.assert_allclose(tasks.image_rows(pixels[..., None]), pixels / 255.0, rtol=1e-7)
    with pytest.raises(ValueError, match="images must be uint8 .*got float32"):
        tasks.image_rows(pixels.astype(np.float32) / 255)
