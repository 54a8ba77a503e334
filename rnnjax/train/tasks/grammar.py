"""Embedded Reber grammar (``config.task`` "reber"): is a string valid? (Géron's RNN exercise)

``config.data`` holds ``train_size``, ``test_size`` and ``seed`` (train and test drawn from
``(seed, 0)`` and ``(seed, 1)``). Strings are one-hot over the 7 symbols, right-padded, with
``"lengths"``; ``builders.classifier`` pools each string's last valid step into 2 logits.
"""

from rnnjax.data import grammar
from rnnjax.train.tasks._task import Task
from rnnjax.train.tasks.classification import classifier_task


def build(config) -> Task:
    """Half valid (label 1), half corrupted (label 0) strings; softmax cross-entropy."""
    data = config.data
    train = grammar.embedded_reber_dataset(data.train_size, seed=(data.seed, 0))
    test = grammar.embedded_reber_dataset(data.test_size, seed=(data.seed, 1))
    return classifier_task(train, test, config.model)
