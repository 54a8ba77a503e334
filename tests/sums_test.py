"""Tests for rnnjax/train/sums.py: host-side sums of the devices' metrics."""

import json

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
