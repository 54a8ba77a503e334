"""Tests for rnnjax/train/sums.py: host-side sums of the devices' metrics."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.train.sums import TrainSums


def test_train_sums_add_in_step_order_and_name_the_first_non_finite_step():
    """Metrics stay on the devices until settled; the sums are float64, in step order, and
    continue exactly from saved ones (a resume)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=7).astype(np.float32)
    finite = [True, True, False, True, False, True, True]
    steps = [
        {"loss": jnp.asarray(v), "grad_norm": jnp.asarray(1.0), "finite": jnp.asarray(f)}
        for v, f in zip(values, finite, strict=True)
    ]
    whole = TrainSums()
    for i, metrics in enumerate(steps[:4]):
        whole.add(i, metrics)
    assert whole.settle() == {"loss": sum(float(v) for v in values[:4]), "first_nonfinite": 2}
    saved = json.loads(json.dumps(whole.settle()))  # through a checkpoint's metadata
    resumed = TrainSums(saved)
    for i, metrics in enumerate(steps[4:], start=4):
        whole.add(i, metrics)
        resumed.add(i, metrics)
    assert resumed.settle() == whole.settle()
    assert whole.settle() == {"loss": sum(float(v) for v in values), "first_nonfinite": 2}


def test_stacked_metrics_of_several_steps_add_up_like_one_step_at_a_time():
    """A ``steps_per_call`` call's metrics arrive stacked; their sums, bit for bit, and the
    first non-finite step are those of the same steps added one at a time."""
    rng = np.random.default_rng(1)
    loss = rng.normal(size=7).astype(np.float32)
    finite = np.array([True, True, True, True, False, True, False])
    one_by_one, stacked = TrainSums(), TrainSums()
    for i in range(7):
        one_by_one.add(i, {"loss": jnp.asarray(loss[i]), "finite": jnp.asarray(finite[i])})
    for first, count in ((0, 1), (1, 3), (4, 3)):  # calls of 1 step and of 3
        part = slice(first, first + count)
        metrics = {"loss": jnp.asarray(loss[part]), "finite": jnp.asarray(finite[part])}
        stacked.add(first, metrics if count > 1 else jax.tree.map(lambda v: v[0], metrics))
    assert stacked.settle() == one_by_one.settle()
    assert stacked.settle()["first_nonfinite"] == 4
