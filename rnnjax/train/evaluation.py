"""Evaluating a finished (or running) workdir: test metrics and a confusion matrix."""

import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from rnnjax import data
from rnnjax.train import builders, losses, tasks
from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.loop import CONFIG_FILE, evaluate
from rnnjax.train.metrics import plot_confusion_matrix
from rnnjax.train.state import init_state
from rnnjax.train.steps import make_eval_step

CONFUSION_FILE = "confusion_matrix.png"


def evaluate_workdir(workdir: str | Path, *, batch_size: int | None = None) -> dict:
    """Restores the newest good checkpoint of ``workdir`` and evaluates it on the test split.

    Writes ``confusion_matrix.png`` into ``workdir``.

    Returns:
      ``{"step", "test_loss", "test_accuracy", "confusion_matrix"}`` (the matrix as nested
      lists, rows true labels, columns predictions).
    """
    workdir = Path(workdir)
    if not (workdir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: is it a training workdir?")
    config = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
    setup = builders.classification(config)
    template = init_state(setup.model, setup.tx, jax.random.key(config.seed))
    with Checkpoints(workdir / "checkpoints") as ckpts:
        restored = ckpts.restore(template)
    if restored is None:
        raise FileNotFoundError(f"No checkpoint to evaluate in {workdir / 'checkpoints'}")
    state = restored[0]
    batch_size = batch_size or config.batch_size
    eval_step = make_eval_step(setup.model, losses.softmax_xent)
    metrics = evaluate(eval_step, state.params, setup.test, batch_size)
    classes = tasks.num_classes(setup.train)
    matrix = confusion_matrix(setup.model, state.params, setup.test, batch_size, classes)
    plot_confusion_matrix(matrix, workdir / CONFUSION_FILE)
    return (
        {"step": int(state.step)}
        | {f"test_{k}": v for k, v in metrics.items()}
        | {"confusion_matrix": matrix.tolist()}
    )


def confusion_matrix(model, params, arrays: dict, batch_size: int, classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` over every example of ``arrays``."""
    predict = jax.jit(lambda p, xs: model.apply(p, xs).argmax(-1))
    matrix = np.zeros((classes, classes), np.int64)
    for batch in data.eval_batches(arrays, batch_size):
        predicted = np.asarray(predict(params, batch["inputs"]))
        mask = batch["mask"]
        np.add.at(matrix, (batch["labels"][mask], predicted[mask]), 1)
    return matrix
