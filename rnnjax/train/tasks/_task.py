"""The ``Task`` value: what a run trains on, how the model is applied and how it is scored."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np


class Task(NamedTuple):
    """Everything ``train_and_evaluate`` needs besides the optimizer settings.

    Attributes:
      train, test: equally long ``[N, ...]`` numpy arrays by name (``"inputs"`` and the loss's
        targets, optionally ``"lengths"``), batched by ``rnnjax.data.batches``.
      model: anything with ``init(key) -> params``.
      forward: ``(params, batch, key=None) -> outputs``; ``key`` is None in evaluation.
      loss: ``(outputs, batch) -> (mean loss, {name: per-example [B]})``, the training loss and
        its metrics (see ``rnnjax.train.losses``).
      evaluate: ``(params, batch) -> {name: per-example [B]}``, the test metrics; None scores the
        test split with ``loss`` on ``forward``.
      report: ``(params, workdir) -> None``, run once a run finishes (figures such as
        predictions against targets); None for none.
      num_classes: > 0 for classification tasks (their test split gets a confusion matrix).
      headline: the test metric printed after every epoch.
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    model: Any
    forward: Callable[..., Any]
    loss: Callable[..., tuple[jax.Array, dict]]
    evaluate: Callable[..., dict] | None = None
    report: Callable[[Any, Path], None] | None = None
    num_classes: int = 0
    headline: str = "loss"
