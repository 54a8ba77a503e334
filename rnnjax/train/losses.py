"""Losses with their metrics: ``loss_fn(outputs, batch) -> (mean loss, {name: per-example})``.

Per-example metrics let the caller weight or mask them (padded evaluation batches).
"""

import jax.numpy as jnp
import optax

from rnnjax._checks import batch_entry
from rnnjax.models import valid_mask


def softmax_xent(logits, batch):
    """Softmax cross-entropy on integer ``batch["labels"] [B]``, with per-example accuracy."""
    labels = batch_entry(batch, "labels", "softmax_xent")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must be {logits.shape[:-1]} (logits {logits.shape} without the class "
            f"axis), got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.mean(losses), {"loss": losses, "accuracy": correct}


def mse(predictions, batch):
    """Mean squared error against ``batch["targets"]``, averaged over every non-batch axis.

    The shapes must be equal: ``[B, 1]`` predictions against ``[B]`` targets would broadcast to
    ``[B, B]`` errors, a wrong loss without an error.
    """
    targets = batch_entry(batch, "targets", "mse")
    if targets.shape != predictions.shape:
        raise ValueError(
            f"targets must have the predictions' shape {predictions.shape}, got {targets.shape}"
        )
    errors = jnp.square(predictions - targets)
    per_example = jnp.mean(errors.reshape(errors.shape[0], -1), axis=-1)
    return jnp.mean(per_example), {"loss": per_example}


def sequence_xent(logits, batch):
    """Cross-entropy over each example's ``targets [B, T]`` tokens up to its
    ``target_lengths [B]`` (END included, padding not): the mean over all tokens, with
    per-example ``loss`` and ``token_accuracy``. Evaluation averages the per-example means over
    examples, so ``test_loss`` weighs a short target as much as a long one; for fixed-length
    targets (dates) it is the same mean."""
    targets = batch_entry(batch, "targets", "sequence_xent")
    lengths = batch_entry(batch, "target_lengths", "sequence_xent")
    mask = valid_mask(lengths, targets.shape[1])
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * mask
    correct = (jnp.argmax(logits, axis=-1) == targets) & mask
    count = jnp.maximum(jnp.sum(mask, axis=1), 1)
    per_example = {"loss": jnp.sum(xent, 1) / count, "token_accuracy": jnp.sum(correct, 1) / count}
    return jnp.sum(xent) / jnp.maximum(jnp.sum(mask), 1), per_example
