"""Tasks by name: ``config.task`` picks one, and ``build(config)`` makes its ``Task``.

Every task reads ``config.data`` (where its examples come from) and ``config.model``; see the
configs in ``experiments/configs/`` for each task's keys.
"""

import importlib

from rnnjax.train.steps import model_forward
from rnnjax.train.tasks._task import Task
from rnnjax.train.tasks.classification import image_rows, load_classification, num_classes

TASKS = {  # name: the module of rnnjax.train.tasks whose build(config) makes it
    "classification": "classification",  # images as sequences: MNIST rows, (permuted) pixels
    "timeseries": "timeseries",  # the chapter's series: next-value prediction, generation
    "adding": "memory",  # the adding problem (regression at the last step)
    "copy": "memory",  # the copy task (recall a sequence after a delay)
    "reber": "grammar",  # embedded Reber grammar strings: valid or not, variable lengths
    "reber_lm": "grammar",  # a language model of the grammar, generating strings
    "translation": "translation",  # encoder–decoder: dates in words to ISO, or addition
}


def build(config) -> Task:
    """The ``Task`` that ``config.task`` names ("classification" when the config has no task).

    Tasks are imported on first use, so a run loads only what it trains.
    """
    name = config.get("task", "classification")
    if name not in TASKS:
        raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {name!r}")
    module = importlib.import_module(f"rnnjax.train.tasks.{TASKS[name]}")
    return module.build(config)


__all__ = [
    "TASKS",
    "Task",
    "build",
    "image_rows",
    "load_classification",
    "model_forward",
    "num_classes",
]
