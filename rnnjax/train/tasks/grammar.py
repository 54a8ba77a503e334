"""Embedded Reber grammar (Géron's RNN exercise): ``config.task`` "reber", is a string valid?,
or "reber_lm", a language model that learns the grammar and generates strings.

``config.data`` holds ``train_size``, ``test_size`` and ``seed`` (train and test drawn from
``(seed, 0)`` and ``(seed, 1)``). "reber": strings one-hot over the 7 symbols, right-padded,
with ``"lengths"``; ``builders.classifier`` pools each string's last valid step into 2 logits.
"reber_lm": valid strings as symbol ids, an embedding of ``model.embed_size`` before
``builders.recurrent_body`` and a dense layer to 7 logits at every step, trained on the next
symbol; the report samples ``config.generation.samples`` strings from B and checks each
against the grammar (``generated.json``).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import layers, models, sampling
from rnnjax._checks import check_size
from rnnjax.data import grammar
from rnnjax.generation import generate
from rnnjax.train import builders, losses
from rnnjax.train.metrics import write_atomically
from rnnjax.train.steps import model_forward
from rnnjax.train.tasks._task import Task
from rnnjax.train.tasks.classification import classifier_task

GENERATED_FILE = "generated.json"


def build(config) -> Task:
    """The task ``config.task`` names: "reber" or "reber_lm"."""
    if config.task not in _BUILDERS:
        raise ValueError(f"config.task must be one of {sorted(_BUILDERS)}, got {config.task!r}")
    return _BUILDERS[config.task](config)


def classification(config) -> Task:
    """Half valid (label 1), half corrupted (label 0) strings; softmax cross-entropy."""
    data = config.data
    train = grammar.embedded_reber_dataset(data.train_size, seed=(data.seed, 0))
    test = grammar.embedded_reber_dataset(data.test_size, seed=(data.seed, 1))
    return classifier_task(train, test, config.model)


def language_model(config) -> Task:
    """Next-symbol cross-entropy over each string's valid steps; the test metric
    ``optimal_loss`` is the grammar's own (``ln 2`` per branch point), the floor of ``loss``."""
    generation = config.generation
    check_size("generation.samples", generation.samples)  # the report runs once training ends
    check_size("generation.max_length", generation.max_length)
    sampling.check_options(generation.temperature, None, None)
    data = config.data
    train = grammar.reber_language_dataset(data.train_size, seed=(data.seed, 0))
    test = grammar.reber_language_dataset(data.test_size, seed=(data.seed, 1))
    symbols = len(grammar.SYMBOLS)
    embedding = layers.embed(symbols, config.model.embed_size)
    body = layers.serial(embedding, builders.recurrent_body(config.model))
    model = models.seq2seq(body, layers.dense(symbols), in_size=1)  # in_size: unread by embed
    forward = model_forward(model)

    def evaluate(params, batch):
        _, metrics = losses.sequence_xent(forward(params, batch), batch)
        return metrics | {"optimal_loss": batch["optimal_loss"]}

    def report(params, workdir: Path) -> None:
        strings = generate_strings(model, params, jax.random.key(config.seed), generation)
        valid = [grammar.is_embedded_reber(s) for s in strings]
        result = {
            "samples": len(strings),
            "temperature": generation.temperature,
            "valid_fraction": float(np.mean(valid)),
            "examples": strings[:20],
            "invalid_examples": [s for s, ok in zip(strings, valid, strict=True) if not ok][:20],
        }
        write_atomically(Path(workdir) / GENERATED_FILE, json.dumps(result, indent=1) + "\n")

    loss = losses.sequence_xent
    return Task(train, test, model, forward, loss, evaluate=evaluate, report=report)


def generate_strings(model, params, key, generation) -> list[str]:
    """``generation.samples`` strings drawn from B, each cut after its second E, where an
    embedded Reber string ends (its inner string ends with the first), or left at
    ``generation.max_length`` + 1 symbols without one."""
    begin = np.full((generation.samples, 1), grammar.SYMBOLS.index("B"), np.int32)
    tokens = generate(
        model,
        params,
        jnp.asarray(begin),
        steps=generation.max_length,
        key=key,
        temperature=generation.temperature,
    )
    strings = ["B" + "".join(grammar.SYMBOLS[i] for i in row) for row in np.asarray(tokens)]
    return [_through_second_end(s) for s in strings]


def _through_second_end(string: str) -> str:
    first = string.find("E")
    second = string.find("E", first + 1) if first >= 0 else -1
    return string if second < 0 else string[: second + 1]


_BUILDERS = {"reber": classification, "reber_lm": language_model}
