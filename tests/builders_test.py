"""Tests for rnnjax/train/builders.py: models and optimizers from config entries."""

import jax
import ml_collections
import numpy as np
import pytest

from rnnjax.train import builders


def _model_config(**overrides):
    config = {"cell": "lstm", "units": 8, "num_layers": 2, "dropout": 0.0, "pool": "last"}
    return ml_collections.ConfigDict(config | {"cell_options": {}} | overrides)


@pytest.mark.parametrize("cell", list(builders.CELLS))
def test_bfloat16_compute_dtype_reaches_every_matmul_and_keeps_float32_params(cell):
    plain = builders.classifier(_model_config(cell=cell), in_size=3, num_classes=4)
    config = _model_config(cell=cell, compute_dtype="bfloat16")
    mixed = builders.classifier(config, in_size=3, num_classes=4)
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


def test_unknown_cell_and_schedule_are_named():
    with pytest.raises(ValueError, match="model.cell must be one of"):
        builders.recurrent_body(_model_config(cell="transformer"))
    config = ml_collections.ConfigDict({"lr_schedule": "step", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="lr_schedule must be 'constant' or 'cosine'"):
        builders.optimizer(config)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"dropout": 1.5, "num_layers": 1}, r"model.dropout must be in \[0, 1\), got 1.5"),
        ({"dropout": -0.1}, r"model.dropout must be in \[0, 1\), got -0.1"),
        ({"num_layers": 0}, "model.num_layers must be an int >= 1, got 0"),
        (
            {"cell": "gru", "cell_options": {"peepholes": True, "reset_after": False}},
            r"model.cell_options \['peepholes'\] are not options of the 'gru' cell; "
            "its options: reset_after, kernel_init",
        ),
    ],
)
def test_a_bad_model_setting_names_its_key(overrides, named):
    with pytest.raises(ValueError, match=named):
        builders.recurrent_body(_model_config(**overrides))


@pytest.mark.parametrize(("key", "value"), [("learning_rate", -1e-3), ("grad_clip_norm", -1.0)])
def test_a_rate_or_clip_norm_that_would_climb_the_loss_is_refused(key, value):
    """Adam at a negative rate, or clipping to a negative norm (which flips every gradient),
    would step uphill without an error."""
    config = ml_collections.ConfigDict({"learning_rate": 1e-3, "grad_clip_norm": 1.0})
    config[key] = value
    with pytest.raises(ValueError, match=rf"{key} must be .*got {value}"):
        builders.optimizer(config)


def test_cosine_schedule_decays_over_every_step_of_the_run():
    """With a constant gradient of 1 Adam's step is the learning rate (to its epsilon), so the
    updates read off the schedule: lr * (1 + cos(pi * t / N)) / 2 over N = epochs * steps."""
    config = ml_collections.ConfigDict(
        {"learning_rate": 0.1, "lr_schedule": "cosine", "num_epochs": 3, "grad_clip_norm": 0.0}
    )
    tx = builders.optimizer(config, steps_per_epoch=4)
    params = {"w": np.zeros(2, np.float32)}
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(14):
        updates, state = update({"w": np.ones(2, np.float32)}, state, params)
        expected = 0.1 * (1 + np.cos(np.pi * min(t, 12) / 12)) / 2
        np.testing.assert_allclose(-updates["w"], expected, rtol=1e-5, atol=1e-7)
