"""The fused backward pass of an unroll, for cells that provide a ``FusedStep``.

Autodiff of ``lax.scan`` keeps whatever residuals each step's linearisation needs and, in the
reverse loop, multiplies by ``Whᵀ`` transposed (and, with a ``compute_dtype``, re-cast) at every
step. Here the forward pass keeps only each step's incoming carry and gate pre-activations
``z``; the reverse loop recomputes the gates from them, runs their VJP, multiplies ``dz`` by a
``Whᵀ`` made once outside the loop in the compute dtype, and adds each step's weight gradients
to running sums. Results equal autodiff's (tests); BUILD_NOTES.md has the measurements, and why
the weight gradients are not left to one large matmul after the loop.
"""

import functools

import jax
import jax.numpy as jnp

from rnnjax._stepping import prefetching_scan, select
from rnnjax._vma import varying_like
from rnnjax.cells._base import FusedStep, low_precision_dot

OVER_BATCH = (((0,), (0,)), ((), ()))  # dot_general dims: contract the batch axis of both


def fused_unroll(cell, params, xs, carry, initial, valid, resets, *, reverse, unroll, prefetch):
    """Runs ``cell`` over time-major ``xs [T, B, D]`` like ``rnnjax.unroll``'s scan, with the
    fused backward pass. ``initial`` is the carry a reset restores; ``valid [T, B]`` and
    ``resets [T, B]`` are optional masks. Returns ``(final_carry, ys [T, B, ...])``."""
    static = (cell.fused, cell.project, reverse, unroll, prefetch)
    return _fused(static, params, xs, carry, initial, valid, resets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(static, params, xs, carry, initial, valid, resets):
    return _forward(static, params, xs, carry, initial, valid, resets)[0]


def _forward(static, params, xs, carry, initial, valid, resets):
    step, project, reverse, unroll, prefetch = static
    wh = _cast(params["wh"], step.compute_dtype)  # once, not at every step

    def body(carry, scanned):
        x, valid_t, reset_t = scanned
        carry_in = carry if reset_t is None else select(reset_t, initial, carry)
        pre = project(params, x)
        rec = low_precision_dot(step.recurrent_input(carry_in), wh, step.compute_dtype)
        new, y = step.gates(params, carry_in, pre, rec)
        if valid_t is not None:
            new, y = select(valid_t, new, carry), select(valid_t, y, jnp.zeros_like(y))
        kept = (pre + rec,) if step.additive else (pre, rec)
        return new, (y, (carry_in, kept))

    final, (ys, saved) = prefetching_scan(
        body, carry, (xs, valid, resets), reverse, unroll, prefetch
    )
    return (final, ys), (params, xs, initial, valid, resets, saved)


def _backward(static, residuals, cotangents):
    step, project, reverse, unroll, _ = static
    params, xs, initial, valid, resets, (carries_in, kept) = residuals
    d_final, d_ys = cotangents
    wh_t = _cast(params["wh"].T, step.compute_dtype)  # once, not at every step
    gates = _gates_of_sum(step) if step.additive else step.gates
    gate_params = {k: v for k, v in params.items() if k not in ("wx", "wh")}

    def body(acc, scanned):
        d_carry, d_params, d_initial = acc
        d_y, x, valid_t, reset_t, carry_in, kept_t = scanned
        d_skip = None
        if valid_t is not None:  # past the end the carry was passed on and y was zero
            d_skip = select(valid_t, _zeros(d_carry), d_carry)
            d_carry = select(valid_t, d_carry, _zeros(d_carry))
            d_y = select(valid_t, d_y, jnp.zeros_like(d_y))
        _, gates_vjp = jax.vjp(gates, gate_params, carry_in, *kept_t)
        d_gate_params, d_carry_in, *d_kept = gates_vjp((d_carry, d_y))
        d_pre, d_rec = d_kept[0], d_kept[-1]  # one array when additive
        h, input_vjp = jax.vjp(step.recurrent_input, carry_in)
        d_carry_in = _add(
            d_carry_in, input_vjp(low_precision_dot(d_rec, wh_t, step.compute_dtype))[0]
        )
        if reset_t is not None:
            d_initial = _add(d_initial, select(reset_t, d_carry_in, _zeros(d_carry_in)))
            d_carry_in = select(reset_t, _zeros(d_carry_in), d_carry_in)
        d_previous = d_carry_in if d_skip is None else _add(d_carry_in, d_skip)
        _, project_vjp = jax.vjp(project, params, x)
        d_step, d_x = project_vjp(d_pre)
        d_wh = low_precision_dot(h, d_rec, step.compute_dtype, OVER_BATCH)
        d_step = d_step | {"wh": d_step["wh"] + d_wh}
        d_step = d_step | {k: _add(d_step[k], g) for k, g in d_gate_params.items()}
        return (d_previous, _add(d_params, d_step), d_initial), d_x

    acc = varying_like((d_final, _zeros(params), _zeros(initial)), (params, d_ys))
    scanned = (d_ys, xs, valid, resets, carries_in, kept)
    (d_carry, d_params, d_initial), d_xs = jax.lax.scan(
        body, acc, scanned, reverse=not reverse, unroll=unroll
    )
    return d_params, d_xs, d_carry, d_initial, None, None


_fused.defvjp(_forward, _backward)


def _gates_of_sum(step: FusedStep):
    """The gates as a function of the kept ``z = pre + rec`` alone (``step.additive``)."""

    def gates(params, carry, z):
        return step.gates(params, carry, z, jnp.zeros((), z.dtype))

    return gates


def _cast(w, compute_dtype):
    return w if compute_dtype is None else w.astype(compute_dtype)


def _zeros(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)
