"""The adding problem and the copy task (``config.task`` "adding" or "copy"), on generated data.

``config.data`` holds ``train_size``, ``test_size`` and ``seed`` (train and test are drawn from
``(seed, 0)`` and ``(seed, 1)``), plus ``length`` (adding) or ``delay``, ``num_to_copy`` and
``num_symbols`` (copy). ``config.model`` is read by ``builders.recurrent_body``. Both tasks also
report the score of a memoryless baseline on the test set, so a reader sees the gap.
"""

import jax.numpy as jnp
import optax

from rnnjax import layers, models
from rnnjax.data import memory
from rnnjax.train import builders, losses
from rnnjax.train.steps import model_forward
from rnnjax.train.tasks._task import Task


def build(config) -> Task:
    """The task ``config.task`` names: "adding" or "copy"."""
    if config.task not in _BUILDERS:
        raise ValueError(f"config.task must be one of {sorted(_BUILDERS)}, got {config.task!r}")
    return _BUILDERS[config.task](config)


def adding(config) -> Task:
    """The adding problem: the last step's output, through a dense layer of 1, regresses the sum
    of the two marked values (MSE). The test metric ``baseline_mse`` is always answering 1."""
    data = config.data
    train = memory.adding_problem(data.train_size, data.length, seed=(data.seed, 0))
    test = memory.adding_problem(data.test_size, data.length, seed=(data.seed, 1))
    model = models.seq2vec(builders.recurrent_body(config.model), layers.dense(1), in_size=2)
    forward = model_forward(model)

    def evaluate(params, batch):
        _, metrics = losses.mse(forward(params, batch), batch)
        return metrics | {"baseline_mse": jnp.square(batch["targets"][:, 0] - 1.0)}

    return Task(train, test, model, forward, losses.mse, evaluate=evaluate)


def copy(config) -> Task:
    """The copy task: a softmax over the tokens at every step, trained with the cross-entropy of
    all steps (as in Arjovsky et al. 2016). The test metric ``baseline_loss`` is the memoryless
    baseline ``K·log(A) / (T + 2K)``."""
    data = config.data
    sizes = {"delay": data.delay, "num_to_copy": data.num_to_copy, "num_symbols": data.num_symbols}
    train = memory.copy_task(data.train_size, **sizes, seed=(data.seed, 0))
    test = memory.copy_task(data.test_size, **sizes, seed=(data.seed, 1))
    tokens = data.num_symbols + 2
    body = builders.recurrent_body(config.model)
    model = models.seq2seq(body, layers.dense(tokens), in_size=tokens)
    forward = model_forward(model)
    loss = recall_xent(data.num_to_copy)
    baseline = memory.copy_baseline_loss(**sizes)

    def evaluate(params, batch):
        _, metrics = loss(forward(params, batch), batch)
        return metrics | {"baseline_loss": jnp.full(batch["labels"].shape[:1], baseline)}

    return Task(train, test, model, forward, loss, evaluate=evaluate, headline="recall_accuracy")


def recall_xent(num_recalled: int):
    """Softmax cross-entropy on ``batch["labels"] [B, T]`` averaged over all T steps, with
    metrics on the last ``num_recalled`` steps: ``recall_accuracy`` (per symbol) and
    ``exact_match`` (all of them right)."""

    def loss(logits, batch):
        labels = batch["labels"]
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(-1)
        correct = (jnp.argmax(logits, -1) == labels)[:, -num_recalled:]
        metrics = {
            "loss": per_example,
            "recall_accuracy": correct.mean(-1),
            "exact_match": correct.all(-1).astype(jnp.float32),
        }
        return per_example.mean(), metrics

    return loss


_BUILDERS = {"adding": adding, "copy": copy}
