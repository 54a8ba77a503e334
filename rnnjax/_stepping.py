"""Scan helpers shared by the unroll and its fused backward pass."""

import jax
import jax.numpy as jnp

from rnnjax._vma import varying_like


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


def at_last_step(ys: jax.Array, lengths: jax.Array | None, time_axis: int) -> jax.Array:
    """Each sequence's entry of ``ys`` at its last valid step (zeros for empty sequences)."""
    if ys.shape[time_axis] == 0:  # no step at all: every sequence is empty
        return jnp.zeros(ys.shape[:time_axis] + ys.shape[time_axis + 1 :], ys.dtype)
    if lengths is None:
        return jnp.take(ys, -1, axis=time_axis)
    # clipped as the stepped form runs: a traced length past T (unchecked under jit) ends at T
    index = jnp.clip(lengths - 1, 0, ys.shape[time_axis] - 1)
    index = jnp.expand_dims(index, tuple(a for a in range(ys.ndim) if a != 1 - time_axis))
    last = jnp.squeeze(jnp.take_along_axis(ys, index, axis=time_axis), time_axis)
    return jnp.where((lengths > 0)[:, None], last, 0.0)


def masked_steps(run, initial, carry, scanned, like, return_sequences: bool):
    """The step of a scan over ``scanned = (xs, valid, resets)`` and its starting state.

    ``run(carry_in, x) -> (carry, y, extra)`` is one step; around it a reset restores
    ``initial``, and past a sequence's end (``valid`` false) the carry is passed on and ``y`` is
    zero, or, without ``return_sequences``, the latest valid ``y`` is carried instead of stacked.
    The step emits ``(y or None, extra)`` per time step. The starting state is ``(carry, None)``
    or ``(carry, zeros like y)``, typed to vary like ``like`` inside ``shard_map``.
    """

    def step(state, scanned_t):
        carry, last = state
        x, valid_t, reset_t = scanned_t
        carry_in = carry if reset_t is None else select(reset_t, initial, carry)
        new, y, extra = run(carry_in, x)
        if valid_t is not None:
            new = select(valid_t, new, carry)
            y = select(valid_t, y, jnp.zeros_like(y) if last is None else last)
        if return_sequences:
            return (new, None), (y, extra)
        return (new, y), (None, extra)

    last = None
    if not return_sequences:  # zeros shaped as one step's y, traced for shapes only
        x = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), scanned[0])
        _, y, _ = jax.eval_shape(run, carry, x)
        last = varying_like(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), y), like)
    return step, (carry, last)
