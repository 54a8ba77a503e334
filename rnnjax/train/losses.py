"""Losses with their metrics: ``loss_fn(outputs, batch) -> (mean loss, {name: per-example})``.

Per-example metrics let the caller weight or mask them (padded evaluation batches).
"""

import jax.numpy as jnp
import optax


def softmax_xent(logits, batch):
    """Softmax cross-entropy on integer ``batch["labels"] [B]``, with per-example accuracy."""
    labels = batch["labels"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.mean(losses), {"loss": losses, "accuracy": correct}


def mse(predictions, batch):
    """Mean squared error against ``batch["targets"]``, averaged over every non-batch axis."""
    errors = jnp.square(predictions - batch["targets"])
    per_example = jnp.mean(errors.reshape(errors.shape[0], -1), axis=-1)
    return jnp.mean(per_example), {"loss": per_example}
