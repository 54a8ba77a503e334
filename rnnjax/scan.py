"""Linear recurrences ``h_t = a_t ⊙ h_{t-1} + b_t`` over a whole sequence, in parallel.

Steps compose associatively, ``(a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂)``, so
``jax.lax.associative_scan`` finds every ``h_t`` in O(log T) depth (Blelloch 1990; Martin &
Cundy 2018; S5, Smith et al. 2023) where ``lax.scan`` needs T dependent steps. Accumulation is in
float32 (complex64) or wider: lower-precision inputs are upcast and results stay upcast.
"""

import jax
import jax.numpy as jnp

from rnnjax.cells._linear import LinearRecurrence


def linear_scan(a, b, h0=None, *, reverse: bool = False, axis: int = 0) -> jax.Array:
    """Every ``h_t = a_t ⊙ h_{t-1} + b_t`` along ``axis``, real or complex.

    Args:
      a: multipliers, broadcastable to ``b``.
      b: inputs ``[..., T, ...]`` with time on ``axis``.
      h0: the state before the first step, shaped like ``b`` without ``axis``; zeros if None.
      reverse: run from the last step: ``h_t = a_t ⊙ h_{t+1} + b_t``, ``h0`` enters at ``T - 1``.
      axis: the time axis.

    Returns:
      ``h`` shaped like ``b``, in float32/complex64 or wider.

    Example:
      >>> h = linear_scan(jnp.full((5, 3), 0.9), jnp.ones((5, 3)))   # h_t = 0.9 h_{t-1} + 1
    """
    a, b, h0, axis = _checked(("a", a), ("b", b), ("h0", h0), axis)
    if h0 is not None:
        first = _at(b, axis, reverse)
        b = b.at[first].add(a[first] * h0)
    return jax.lax.associative_scan(_compose, (a, b), reverse=reverse, axis=axis)[1]


def log_linear_scan(log_a, log_b, log_h0=None, *, reverse: bool = False, axis: int = 0):
    """``linear_scan`` for positive ``a, b, h0`` in log space (Feng et al. 2024's minGRU).

    ``log h_t = logaddexp(log a_t + log h_{t-1}, log b_t)``: sums of logs cannot underflow where
    long products of ``a_t`` do. ``-inf`` entries stand for zeros (``a_t = 0`` restarts the
    recurrence, ``b_t = 0`` adds nothing) and keep gradients finite. Arguments and result are
    the logs of ``linear_scan``'s, real.
    """
    named = ("log_a", log_a), ("log_b", log_b), ("log_h0", log_h0)
    log_a, log_b, log_h0, axis = _checked(*named, axis)
    if jnp.iscomplexobj(log_b):
        raise TypeError(f"log_linear_scan takes real logs, got {log_b.dtype}")
    if log_h0 is not None:
        first = _at(log_b, axis, reverse)
        log_b = log_b.at[first].set(_logaddexp(log_a[first] + log_h0, log_b[first]))
    return jax.lax.associative_scan(_log_compose, (log_a, log_b), reverse=reverse, axis=axis)[1]


def unroll_linear(
    linear: LinearRecurrence, params, pre, carry, initial, *, valid=None, resets=None, reverse=False
):
    """Runs a cell's linear step over time-major ``pre [T, B, G]`` with ``unroll``'s semantics.

    Masks become coefficients: past a sequence's end (``valid [T, B]`` false) ``a = 1, b = 0``,
    so the state is carried through unchanged and a reverse scan starts at each sequence's own
    last valid step; at a reset (``resets [T, B]``) ``a = 0`` and ``b += a ⊙ s_init``, a restart
    from the initial carry. The initial carry is added in linear space, so in log space it may
    have any sign: ``s = exp(log-scan from zero) + linear_scan(a, [resets], s_0)``.

    Returns:
      ``(final_carry, ys [T, B, O])`` with ``ys`` zero where not valid.
    """
    s0, s_init = linear.to_state(carry), linear.to_state(initial)
    log_space = linear.log_coefficients is not None
    a, b = (linear.log_coefficients if log_space else linear.coefficients)(params, pre)
    a = jnp.broadcast_to(a, jnp.shape(b))
    zero_a, one_a, zero_b = (-jnp.inf, 0.0, -jnp.inf) if log_space else (0.0, 1.0, 0.0)
    restart = jnp.zeros_like(s_init, shape=jnp.shape(b))
    if resets is not None:
        r = resets[..., None]
        restart = jnp.where(r, (jnp.exp(a) if log_space else a) * s_init, 0.0)
        a = jnp.where(r, zero_a, a)
    if valid is not None:
        v = valid[..., None]
        a, b, restart = jnp.where(v, a, one_a), jnp.where(v, b, zero_b), jnp.where(v, restart, 0.0)
    if log_space:
        s = jnp.exp(log_linear_scan(a, b, reverse=reverse))
        s = s + linear_scan(jnp.exp(a), restart, s0, reverse=reverse)
    else:
        s = linear_scan(a, b + restart, s0, reverse=reverse)
    ys = linear.readout(params, s, pre)
    if valid is not None:
        ys = jnp.where(valid[..., None], ys, 0.0)
    return linear.from_state(s[0] if reverse else s[-1]), ys


def _compose(earlier, later):
    (a1, b1), (a2, b2) = earlier, later
    return a1 * a2, a2 * b1 + b2


def _log_compose(earlier, later):
    (la1, lb1), (la2, lb2) = earlier, later
    return la1 + la2, _logaddexp(la2 + lb1, lb2)


@jax.custom_jvp
def _logaddexp(x, y):
    return jnp.logaddexp(x, y)


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    """The usual slopes ``exp(x - out)``, ``exp(y - out)``; zero (not NaN) where both are -inf."""
    (x, y), (dx, dy) = primals, tangents
    out = _logaddexp(x, y)
    finite_out = jnp.where(jnp.isneginf(out), 0.0, out)
    return out, jnp.exp(x - finite_out) * dx + jnp.exp(y - finite_out) * dy


def _checked(a, b, h0, axis: int):
    """``(a, b, h0, axis)`` in the accumulation dtype, ``a`` broadcast to ``b``'s shape and
    ``axis`` made non-negative; each argument is a ``(name, value)`` pair for the errors."""
    (name_a, a), (name_b, b), (name_h0, h0) = a, b, h0
    shape = tuple(jnp.shape(b))
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is not an axis of {name_b}, whose shape is {shape}")
    axis %= len(shape)
    dtype = jnp.promote_types(jnp.result_type(a, b, *([] if h0 is None else [h0])), jnp.float32)
    try:
        a = jnp.broadcast_to(jnp.asarray(a, dtype), shape)
    except ValueError:
        raise ValueError(
            f"{name_a} must broadcast to {name_b}'s shape {shape}, got {jnp.shape(a)}"
        ) from None
    if h0 is not None:
        want = shape[:axis] + shape[axis + 1 :]
        if tuple(jnp.shape(h0)) != want:
            raise ValueError(
                f"{name_h0} must be {name_b}'s shape without axis {axis}, {want}, "
                f"got {jnp.shape(h0)}"
            )
        h0 = jnp.asarray(h0, dtype)
    return a, jnp.asarray(b, dtype), h0, axis


def _at(array, axis: int, reverse: bool):
    """The index of the first step along ``axis`` (the last with ``reverse``)."""
    return (slice(None),) * axis + (-1 if reverse else 0,)
