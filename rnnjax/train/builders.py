"""Models and optimizers from ``ml_collections`` configs, so experiments hold no logic."""

import inspect

import optax

from rnnjax import cells, layers, models
from rnnjax._checks import check_size

CELLS = {
    "simple": cells.simple,
    "lstm": cells.lstm,
    "gru": cells.gru,
    "indrnn": cells.indrnn,
    "min_gru": cells.min_gru,
    "min_lstm": cells.min_lstm,
    "lru": cells.lru,
}


def make_cell(name: str, units: int, **options) -> cells.Cell:
    """A cell by its name in ``CELLS`` with factory keyword options."""
    if name not in CELLS:
        raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {name!r}")
    factory = CELLS[name]
    accepted = list(inspect.signature(factory).parameters)[1:]  # after units
    if unknown := sorted(options.keys() - set(accepted)):
        raise ValueError(
            f"model.cell_options {unknown} are not options of the {name!r} cell; "
            f"its options: {', '.join(accepted)}"
        )
    return factory(units, **options)


def compute_dtype(model_config) -> str | None:
    """``model_config.compute_dtype``: None for "float32" (or no such key), else the dtype the
    matmuls of the cells and dense layers run in (float32 accumulation; params stay float32)."""
    dtype = model_config.get("compute_dtype", "float32")
    return None if dtype == "float32" else dtype


def classifier(model_config, *, in_size: int, num_classes: int) -> models.Model:
    """The chapter's sequence classifier: ``recurrent_body`` → pooled last output → dense logits
    (``model_config.pool``: last | mean | max)."""
    return models.seq2vec(
        recurrent_body(model_config),
        layers.dense(num_classes, compute_dtype=compute_dtype(model_config)),
        in_size=in_size,
        pool=model_config.pool,
    )


def recurrent_body(model_config) -> layers.Layer:
    """``num_layers`` recurrent layers (dropout between them): the body of the
    classifier and of the generated-data tasks' models.

    Reads ``cell``, ``units``, ``num_layers``, ``dropout``, ``cell_options`` (a dict of
    keyword options for the cell factory, e.g. ``{"activation": "relu"}``) and
    ``compute_dtype`` ("float32", or "bfloat16" for mixed precision).
    """
    options = dict(model_config.get("cell_options", {}))
    if dtype := compute_dtype(model_config):
        options["compute_dtype"] = dtype
    check_size("model.num_layers", model_config.num_layers)
    if not 0 <= model_config.dropout < 1:  # even with one layer, where it is unused
        raise ValueError(f"model.dropout must be in [0, 1), got {model_config.dropout!r}")
    body = []
    for i in range(model_config.num_layers):
        if i and model_config.dropout:
            body.append(layers.dropout(model_config.dropout))
        body.append(layers.rnn(make_cell(model_config.cell, model_config.units, **options)))
    return layers.serial(*body)


def optimizer(config, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Adam at ``learning_rate`` (constant, or cosine-decayed to 0 over the run with
    ``lr_schedule="cosine"``), after clipping by global norm when ``grad_clip_norm`` > 0.

    A negative ``learning_rate`` or ``grad_clip_norm`` (clipping to it flips every gradient)
    would step up the loss without an error, so both raise ``ValueError``."""
    for key in ("learning_rate", "grad_clip_norm"):
        if not config.get(key, 0) >= 0:  # NaN too
            raise ValueError(f"{key} must be >= 0, got {config.get(key)!r}")
    schedule = config.get("lr_schedule", "constant")
    if schedule == "constant":
        rate = config.learning_rate
    elif schedule == "cosine":
        rate = optax.cosine_decay_schedule(
            config.learning_rate, config.num_epochs * steps_per_epoch
        )
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    adam = optax.adam(rate)
    if config.get("grad_clip_norm", 0):
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)
    return adam
