"""Evaluating a finished (or running) workdir: test metrics and a confusion matrix."""

from pathlib import Path

import jax
import ml_collections
import numpy as np

from rnnjax import data
from rnnjax.train import builders, tasks
from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.loop import CONFIG_FILE, saved_config
from rnnjax.train.metrics import plot_confusion_matrix
from rnnjax.train.state import init_state
from rnnjax.train.steps import make_eval_step
from rnnjax.train.sums import evaluate

CONFUSION_FILE = "confusion_matrix.png"


def evaluate_workdir(
    workdir: str | Path,
    *,
    batch_size: int | None = None,
    manual_dir: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Restores the newest good checkpoint of ``workdir`` and evaluates it on the test split.

    A classification task also gets ``confusion_matrix.png`` in ``workdir``, and its task's
    report (figures) is written again. The checkpoints are only read (nothing pruned, moved or
    cleaned), so a workdir may be evaluated while its run is still training. ``manual_dir`` and
    ``data_dir``, if given, replace the run's saved ``config.data`` paths: where the data is
    now, on another machine or after a move.

    Returns:
      ``{"step", "test_<metric>"...}``, plus ``"confusion_matrix"`` for classification (nested
      lists, rows true labels, columns predictions).
    """
    workdir = Path(workdir)
    if not (workdir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: is it a training workdir?")
    config = ml_collections.ConfigDict(saved_config(workdir))
    for key, path in (("manual_dir", manual_dir), ("data_dir", data_dir)):
        if path is not None:
            config.data[key] = path
    task = tasks.build(config)
    template = init_state(task.model, builders.optimizer(config), jax.random.key(config.seed))
    with Checkpoints(workdir / "checkpoints", read_only=True) as ckpts:  # a trainer may be running
        restored = ckpts.restore(template)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint to evaluate in {workdir / 'checkpoints'}")
    state = restored[0]
    batch_size = batch_size or config.batch_size
    eval_step = make_eval_step(task.model, task.loss, forward=task.forward, metrics=task.evaluate)
    metrics = evaluate(eval_step, state.params, task.test, batch_size)
    result = {"step": int(state.step)} | {f"test_{k}": v for k, v in metrics.items()}
    if task.report is not None:
        task.report(state.params, workdir)
    if not task.num_classes:
        return result
    matrix = confusion_matrix(task.forward, state.params, task.test, batch_size, task.num_classes)
    plot_confusion_matrix(matrix, workdir / CONFUSION_FILE)
    return result | {"confusion_matrix": matrix.tolist()}


def confusion_matrix(forward, params, arrays: dict, batch_size: int, classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` over every example of ``arrays``, ``forward`` giving logits
    (``forward(params, batch)``, as in ``Task``)."""
    predict = jax.jit(lambda p, batch: forward(p, batch).argmax(-1))
    matrix = np.zeros((classes, classes), np.int64)
    for batch in data.eval_batches(arrays, batch_size):
        predicted = np.asarray(predict(params, batch))
        mask = batch["mask"]
        np.add.at(matrix, (batch["labels"][mask], predicted[mask]), 1)
    return matrix
