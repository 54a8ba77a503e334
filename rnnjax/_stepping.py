"""Scan helpers shared by the unroll and its fused backward pass."""

import jax
import jax.numpy as jnp


def select(mask: jax.Array, on_true, on_false):
    """Per-example ``where`` over carry trees: ``mask [B]`` broadcasts over trailing axes."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def prefetching_scan(step, carry, scanned, reverse: bool, unroll, prefetch: bool):
    """``lax.scan``; with ``prefetch`` each step reads its inputs from the carry, put there by
    the step before.

    XLA:CPU emits a slow loop for an elementwise fusion that reads a dynamic slice of a scanned
    array: an LSTM or GRU step fused with its one-feature input ran 2x slower (BUILD_NOTES.md).
    Carried, the slice is copied on its own and the gate fusion reads a plain buffer.
    """
    if not prefetch:
        return jax.lax.scan(step, carry, scanned, reverse=reverse, unroll=unroll)

    def shift(a):  # at step t: a[t + 1] (a[t - 1] in reverse); the repeated end is never read
        return jnp.concatenate([a[:1], a[:-1]] if reverse else [a[1:], a[-1:]])

    def ahead(state, upcoming):
        carry, current = state
        new_carry, y = step(carry, current)
        return (new_carry, upcoming), y

    current = jax.tree.map(lambda a: a[-1 if reverse else 0], scanned)
    state = (carry, current)
    (carry, _), ys = jax.lax.scan(
        ahead, state, jax.tree.map(shift, scanned), reverse=reverse, unroll=unroll
    )
    return carry, ys
