"""The fused backward pass of an unroll, for cells that provide a ``FusedStep``.

Autodiff of ``lax.scan`` keeps whatever residuals each step's linearisation needs and, in the
reverse loop, transposes ``Wh`` (and, with a ``compute_dtype``, re-casts it) at every step. Here
the forward pass keeps only each step's incoming carry and gate pre-activations ``z``; the
reverse loop recomputes the gates from them, runs their VJP and multiplies ``dz`` by a ``Whᵀ``
made once, outside the loop, in the compute dtype. A step with ``GateActivations`` (a GRU, an
LSTM without peepholes or layer norm) keeps the gates' activations instead, so the reverse
loop evaluates no sigmoid or tanh of them. The weight gradients are either summed step by
step inside the loop or, for short sequences with low-precision matmuls, computed after it as
one large matmul each over all ``T·B`` rows, as cuDNN does (``weight_grads_after_loop``).
Results equal autodiff's (tests); BUILD_NOTES.md has the measurements.
"""

import functools
from numbers import Integral

import jax
import jax.numpy as jnp

from rnnjax._stepping import masked_steps, prefetching_scan, select
from rnnjax._vma import varying_like
from rnnjax.cells._base import FusedStep, low_precision_dot

OVER_BATCH = (((0,), (0,)), ((), ()))  # dot_general dims: contract the batch axis of both
AFTER_LOOP_MAX_BYTES = 10 << 20  # stored gate gradients, per device (weight_grads_after_loop)


def fused_unroll(
    cell,
    params,
    xs,
    carry,
    initial,
    valid,
    resets,
    *,
    reverse,
    unroll,
    prefetch,
    return_sequences=True,
):
    """Runs ``cell`` over time-major ``xs [T, B, D]`` like ``rnnjax.unroll``'s scan, with the
    fused backward pass. ``initial`` is the carry a reset restores; ``valid [T, B]`` and
    ``resets [T, B]`` are optional masks. Returns ``(final_carry, ys [T, B, ...])``, or the
    last valid output ``[B, ...]`` in place of ``ys`` without ``return_sequences``."""
    step = cell.fused._replace(recurrent_mask=None)  # static: functions only
    static = (step, cell.project, reverse, unroll, prefetch, return_sequences)
    args = (params, cell.fused.recurrent_mask, xs, carry, initial, valid, resets)
    # Inside shard_map the backward rule must return each cotangent with its argument's type;
    # params used by every device's rows get varying cotangents, so they enter varying, and the
    # cast's transpose sums their gradient over the devices, once.
    return _fused(static, *varying_like(args, args))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(static, params, mask, xs, carry, initial, valid, resets):
    return _forward(static, params, mask, xs, carry, initial, valid, resets)[0]


def _with_mask(static, mask):
    """``static`` whose step reads ``mask`` (carry dropout), an argument of this trace."""
    return (static[0]._replace(recurrent_mask=mask), *static[1:])


def _forward(static, params, mask, xs, carry, initial, valid, resets):
    step, project, reverse, unroll, prefetch, return_sequences = _with_mask(static, mask)
    wh = _cast(params["wh"], step.compute_dtype)  # once, not at every step

    def run(carry_in, x):
        pre = project(params, x)
        rec = low_precision_dot(step.read(carry_in), wh, step.compute_dtype)
        if step.activations is not None:  # keep the activations, not what goes in
            a = step.activations.activate(params, pre, rec)
            new, y = step.activations.combine(params, carry_in, a)
            return new, y, (carry_in, a)
        new, y = step.gates(params, carry_in, pre, rec)
        return new, y, (carry_in, _keep(pre, rec, _summed_columns(step, wh.shape[-1])))

    scanned = (xs, valid, resets)
    body, state = masked_steps(run, initial, carry, scanned, (params, xs), return_sequences)
    (final, last), (ys, saved) = prefetching_scan(body, state, scanned, reverse, unroll, prefetch)
    outputs = ys if return_sequences else last
    return (final, outputs), (params, mask, xs, initial, valid, resets, saved)


def _backward(static, residuals, cotangents):
    params, mask, xs, initial, valid, resets, (carries_in, kept) = residuals
    step, project, reverse, unroll, _, return_sequences = _with_mask(static, mask)
    d_final, d_outputs = cotangents
    d_ys, d_last = (d_outputs, None) if return_sequences else (None, d_outputs)
    wh_t = _cast(params["wh"].T, step.compute_dtype)  # once, not at every step
    width = params["wh"].shape[-1]
    summed = _summed_columns(step, width)

    def gates(gate_params, carry, *kept):
        return step.gates(gate_params, carry, *_unkeep(kept, width, summed))

    gate_params = {k: v for k, v in params.items() if k not in ("wx", "wh")}
    after = weight_grads_after_loop(step.compute_dtype, kept)

    def body(acc, scanned):
        d_carry, d_last, d_params, d_initial = acc
        d_y, x, valid_t, reset_t, carry_in, kept_t = scanned
        if d_last is not None:  # all of it to the last valid step, the first one met here
            d_y, d_last = d_last, jnp.zeros_like(d_last)
            if valid_t is not None:
                d_y, d_last = select(valid_t, d_y, d_last), select(valid_t, d_last, d_y)
        d_skip = None
        if valid_t is not None:  # past the end the carry was passed on and y was zero
            d_skip = select(valid_t, _zeros(d_carry), d_carry)
            d_carry = select(valid_t, d_carry, _zeros(d_carry))
            if d_last is None:  # (the last output's share is already zero there)
                d_y = select(valid_t, d_y, jnp.zeros_like(d_y))
        if step.activations is not None:
            _, combine_vjp = jax.vjp(step.activations.combine, gate_params, carry_in, kept_t)
            d_gate_params, d_carry_in, d_a = combine_vjp((d_carry, d_y))
            d_read, d_pre, d_rec = step.activations.pullback(gate_params, kept_t, d_a)
            d_gate_params = _add_to(d_gate_params, d_read)  # params activate reads
            d_kept = _keep_cotangents(d_pre, d_rec, summed) if after else None
        else:
            _, gates_vjp = jax.vjp(gates, gate_params, carry_in, *kept_t)
            d_gate_params, d_carry_in, *d_kept = gates_vjp((d_carry, d_y))
            d_pre, d_rec = _pre_and_rec(d_kept, width, summed)
        h, input_vjp = jax.vjp(step.read, carry_in)
        d_h = low_precision_dot(d_rec, wh_t, step.compute_dtype)
        d_carry_in = _add(d_carry_in, input_vjp(d_h.astype(h.dtype))[0])
        if reset_t is not None:
            d_initial = _add(d_initial, select(reset_t, d_carry_in, _zeros(d_carry_in)))
            d_carry_in = select(reset_t, _zeros(d_carry_in), d_carry_in)
        d_previous = d_carry_in if d_skip is None else _add(d_carry_in, d_skip)
        d_params = _add_to(d_params, d_gate_params)
        if after:
            return (d_previous, d_last, d_params, d_initial), tuple(d_kept)
        pre, project_vjp = jax.vjp(project, params, x)
        d_step, d_x = project_vjp(d_pre.astype(pre.dtype))  # bfloat16 params and inputs
        d_wh = low_precision_dot(h, d_rec, step.compute_dtype, OVER_BATCH)
        d_params = _add(d_params, _add_to(d_step, {"wh": d_wh}))
        return (d_previous, d_last, d_params, d_initial), d_x

    # the steps' dtype: float64 inputs, params or a learnt carry give float64 steps (x64 mode)
    dtypes = [a.dtype for a in jax.tree.leaves((carries_in, xs))]
    at_least = functools.reduce(jnp.promote_types, dtypes, jnp.dtype(jnp.float32))
    acc = (d_final, d_last, _zeros(params, at_least=at_least), _zeros(initial))
    acc = varying_like(acc, (params, d_outputs))
    scanned = (d_ys, None if after else xs, valid, resets, carries_in, kept)  # x: per step
    (d_carry, _, d_params, d_initial), outputs = jax.lax.scan(
        body, acc, scanned, reverse=not reverse, unroll=unroll
    )
    d_mask = None if mask is None else jnp.zeros_like(mask)  # a random draw: no gradient
    if not after:
        return _like(d_params, params), d_mask, outputs, d_carry, d_initial, None, None
    d_pre, d_rec = _pre_and_rec(outputs, width, summed)  # [T, B, G] each, all steps
    pre, project_vjp = jax.vjp(project, params, xs)
    d_projected, d_xs = project_vjp(d_pre.astype(pre.dtype))
    over_steps = (((0, 1), (0, 1)), ((), ()))
    h_all = step.read(carries_in)
    d_wh = low_precision_dot(h_all, d_rec, step.compute_dtype, over_steps)
    d_params = _add(d_params, _add_to(d_projected, {"wh": d_wh}))
    return _like(d_params, params), d_mask, d_xs, d_carry, d_initial, None, None


_fused.defvjp(_forward, _backward)


def weight_grads_after_loop(compute_dtype, kept) -> bool:
    """Whether the weight gradients are one matmul over all steps after the reverse loop (as
    cuDNN does) rather than sums of per-step products inside it.

    Measured on XLA:CPU (BUILD_NOTES.md): after the loop pays only with low-precision matmuls,
    whose large products run ~3x faster than their per-step ones, and only while the stored
    ``[T, B, G]`` gate gradients stay small (1.1-1.3x faster up to 8.6 MB, 0.6-0.85x from
    12.8 MB); with float32 matmuls the per-step products measured faster at every size.
    """
    size = sum(a.size * a.dtype.itemsize for a in kept)
    known = isinstance(size, Integral)  # not a symbolic shape (jax.export): might be large
    return compute_dtype is not None and known and size <= AFTER_LOOP_MAX_BYTES


def _summed_columns(step: FusedStep, width: int) -> int:
    """How many leading gate columns ``step.gates`` reads only through ``pre + rec``."""
    return width if step.additive is True else int(step.additive)


def _keep(pre, rec, summed: int):
    """One step's residuals: the first ``summed`` columns as ``pre + rec``, then the rest of
    ``pre`` and of ``rec`` (LSTM: ``[B, G]``; GRU: ``[B, 2H]``, ``[B, H]``, ``[B, H]``)."""
    if summed == pre.shape[-1]:
        return (pre + rec,)
    if summed == 0:
        return pre, rec
    return pre[..., :summed] + rec[..., :summed], pre[..., summed:], rec[..., summed:]


def _unkeep(kept, width: int, summed: int):
    """``(pre, rec)`` that ``gates`` maps as it did the originals: the sums stand in ``pre``,
    zeros in ``rec``. Their cotangents are then the originals' (``_pre_and_rec``)."""
    if summed == width:
        return kept[0], jnp.zeros((), kept[0].dtype)
    if summed == 0:
        return kept
    both, pre, rec = kept
    zeros = jnp.zeros(both.shape[:-1] + (summed,), both.dtype)
    return jnp.concatenate([both, pre], -1), jnp.concatenate([zeros, rec], -1)


def _keep_cotangents(d_pre, d_rec, summed: int):
    """The cotangents of ``_keep``'s residuals from those of ``pre`` and ``rec``, which agree on
    the summed columns."""
    if summed == d_pre.shape[-1]:
        return (d_pre,)
    if summed == 0:
        return d_pre, d_rec
    return d_pre[..., :summed], d_pre[..., summed:], d_rec[..., summed:]


def _pre_and_rec(d_kept, width: int, summed: int):
    """The cotangents of ``pre`` and ``rec`` from those of their kept residuals: a summed
    column's cotangent is both's."""
    if summed == width:
        return d_kept[0], d_kept[0]
    if summed == 0:
        return d_kept
    d_both, d_pre, d_rec = d_kept
    return jnp.concatenate([d_both, d_pre], -1), jnp.concatenate([d_both, d_rec], -1)


def _cast(w, compute_dtype):
    return w if compute_dtype is None else w.astype(compute_dtype)


def _zeros(tree, at_least=None):
    """Zeros like ``tree``; with ``at_least``, in at least that precision (bfloat16 params'
    gradients are summed over the steps in float32)."""
    if at_least is None:
        return jax.tree.map(jnp.zeros_like, tree)
    return jax.tree.map(lambda a: jnp.zeros_like(a, jnp.promote_types(a.dtype, at_least)), tree)


def _like(grads, params):
    """``grads`` in their params' dtypes, as a cotangent must be."""
    return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _add_to(d_params: dict, grads: dict) -> dict:
    """``d_params`` with ``grads`` (a dict of some of its keys) added in."""
    return d_params | {k: _add(d_params[k], g) for k, g in grads.items()}
