"""Exact metrics summed on the host, from values the devices computed: a test set's (every
example once) and an epoch's running train metrics.

The per-batch or per-step values stay on the devices, in flight, until a sum is needed at a
host sync; then they are fetched together and added in float64. Adding them on the devices
instead dispatched small programs after every step (BUILD_NOTES.md).
"""

import math

import jax
import numpy as np

from rnnjax import data
from rnnjax.train import distributed


def evaluate(eval_step, params, arrays, batch_size: int, *, layout=None) -> dict:
    """Exact metrics over every example of ``arrays`` (the last batch padded and masked).

    With a ``distributed.Layout`` (``eval_step`` made with it), every batch is split along the
    mesh's data axis, each process supplying its rows; ``batch_size`` must divide by the mesh.
    """
    sums = []  # each batch's, left on the devices and fetched together at the end
    for batch in data.eval_batches(arrays, batch_size):
        if layout is None:
            batch = jax.device_put(batch)
        else:
            batch = distributed.global_batch(distributed.process_rows(batch), layout.batch)
        sums.append(eval_step(params, batch))
    if not sums:
        raise ValueError("no examples to evaluate: the test split is empty")
    fetched = jax.device_get(sums)
    totals = {name: math.fsum(float(s[name]) for s in fetched) for name in fetched[0]}
    count = totals.pop("count")
    return {name: value / count for name, value in totals.items()}


class TrainSums:
    """An epoch's running train metrics: sums of each step's metrics (all but the finiteness
    flag and the gradient norm) and the first step whose update was not finite.

    A step's metrics stay on the devices until the sums are needed (log steps, saves, the
    epoch's end, all host syncs anyway); then they are fetched together and added in step
    order, in float64, so a resumed run (its sums restored from a checkpoint's JSON, exactly)
    adds up to bitwise the same. Summing on the devices dispatched small programs at every
    step (BUILD_NOTES.md)."""

    _NOT_SUMMED = ("finite", "grad_norm")

    def __init__(self, saved: dict | None = None):
        self.sums = None if saved is None else dict(saved)
        self.pending = []  # (first step index, metrics on the devices)

    def add(self, step: int, metrics: dict) -> None:
        """Step ``step``'s metrics, or those of the steps from ``step`` on, stacked (one call of
        a ``steps_per_call`` train step)."""
        self.pending.append((step, metrics))

    def settle(self) -> dict:
        """The sums up to the last step added (a host sync)."""
        fetched = jax.device_get([metrics for _, metrics in self.pending])
        for (first, _), stacked in zip(self.pending, fetched, strict=True):
            for step, metrics in enumerate(_each_step(stacked), start=first):
                self._add_step(step, metrics)
        self.pending = []
        return self.sums

    def _add_step(self, step: int, metrics: dict) -> None:
        if self.sums is None:  # an epoch's first step
            summed = [k for k in metrics if k not in self._NOT_SUMMED]
            self.sums = {k: 0.0 for k in summed} | {"first_nonfinite": -1}
        for key in self.sums.keys() - {"first_nonfinite"}:
            self.sums[key] += float(metrics[key])
        if not metrics["finite"] and self.sums["first_nonfinite"] < 0:
            self.sums["first_nonfinite"] = step


def _each_step(metrics: dict):
    """One step's metrics at a time from ``metrics``, one step's or several stacked."""
    if np.ndim(metrics["finite"]) == 0:
        yield metrics
        return
    for i in range(len(metrics["finite"])):
        yield {key: value[i] for key, value in metrics.items()}


def train_means(sums: dict, steps: int) -> dict:
    """Each summed train metric's mean over ``steps`` steps."""
    return {k: float(v) / steps for k, v in sums.items() if k != "first_nonfinite"}
