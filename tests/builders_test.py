"""Tests for rnnjax/train/builders.py: models and optimizers from config entries."""

import jax
import ml_collections
import numpy as np
import pytest

from rnnjax.train import builders


def _model_config(**overrides):
    config = {"cell": "lstm", "units": 8, "num_layers": 2, "dropout": 0.0, "pool": "last"}
    return ml_collections.ConfigDict(config | {"cell_options": {}} | overrides)


def test_bfloat16_compute_dtype_reaches_every_matmul_and_keeps_float32_params():
    plain = builders.classifier(_model_config(), in_size=3, num_classes=4)
    mixed = builders.classifier(_model_config(compute_dtype="bfloat16"), in_size=3, num_classes=4)
    params = plain.init(jax.random.key(0))
    assert jax.tree.structure(mixed.init(jax.random.key(0))) == jax.tree.structure(params)
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
    xs = jax.random.normal(jax.random.key(1), (5, 6, 3))
    want, got = plain.apply(params, xs), mixed.apply(params, xs)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=5e-2)
    assert np.max(np.abs(np.asarray(got) - np.asarray(want))) > 1e-5  # not the float32 path


def test_float32_compute_dtype_is_the_plain_path():
    config = _model_config(compute_dtype="float32")
    assert builders.compute_dtype(config) is None
    assert builders.compute_dtype(_model_config()) is None


def test_compute_dtype_of_a_cell_without_it_is_named():
    with pytest.raises(ValueError, match="needs a cell among .* got model.cell='lru'"):
        builders.recurrent_body(_model_config(cell="lru", compute_dtype="bfloat16"))


def test_unknown_cell_and_schedule_are_named():
    with pytest.raises(ValueError, match="model.cell must be one of"):
        builders.recurrent_body(_model_config(cell="transformer"))
    config = ml_collections.ConfigDict({"lr_schedule": "step", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="lr_schedule must be 'constant' or 'cosine'"):
        builders.optimizer(config)
