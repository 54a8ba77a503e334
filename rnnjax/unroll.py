"""One unroll over time for every cell: lengths, reverse, resets, hoisting, unrolling, remat."""

from numbers import Integral

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._stepping import at_last_step, masked_steps, prefetching_scan
from rnnjax._vma import varying_like
from rnnjax.cells import Cell
from rnnjax.fused_backward import fused_unroll
from rnnjax.scan import unroll_linear

FULL_UNROLL_MAX_STEPS = 32  # a cell's ``unroll=True`` hint unrolls sequences up to this long


def unroll(
    cell: Cell,
    params,
    xs: jax.Array,
    carry=None,
    *,
    lengths: jax.Array | None = None,
    reverse: bool = False,
    resets: jax.Array | None = None,
    unroll: int | bool | None = None,
    remat: bool | int = False,
    hoist: bool = False,
    time_major: bool = False,
    parallel: bool | None = None,
    fused_backward: bool | None = None,
    return_sequences: bool = True,
):
    """Runs ``cell`` over a batch of sequences with ``jax.lax.scan``.

    Args:
      cell: the recurrence.
      params: the cell's params.
      xs: inputs ``[B, T, D]`` (``[T, B, D]`` with ``time_major``), floating point.
      carry: initial carry; ``cell.initial_carry(params, (B,))`` (zeros, or learnt) by default.
      lengths: optional int ``[B]`` valid lengths of right-padded sequences. Past a sequence's end
        its carry is frozen and its outputs are zero, so the final carry is its own last valid
        carry, with no extra memory.
      reverse: run from the last step to the first. With ``lengths`` each sequence starts at its
        own last valid element (padding is skipped) and outputs stay at their time positions.
      resets: optional bool ``[B, T]`` (``[T, B]`` with ``time_major``); where true the carry is
        reset to the initial carry before that step (episode boundaries).
      unroll: steps per scan iteration (``lax.scan``'s ``unroll``; ``True`` unrolls fully).
        None (default): the cell's own ``cell.unroll``, tuned per cell (full unrolling of up
        to ``FULL_UNROLL_MAX_STEPS`` steps for the simple cell, one step otherwise).
      remat: rematerialise to save memory on long sequences: ``True`` keeps only the carry of
        every step, an int ``k`` keeps only every k-th carry and recomputes the rest in the
        backward pass (memory ~ T/k + k instead of T).
      hoist: compute the input projection of all steps as one matmul before the scan, for cells
        that provide ``project``. Off by default: on XLA:CPU it made LSTM/GRU training about 2x
        slower (BUILD_NOTES.md); measure it on your accelerator.
      time_major: ``xs`` and the returned ``ys`` are ``[T, B, ...]``.
      parallel: for cells linear in their carry (``cell.linear``: min_gru, min_lstm, lru), run
        all steps at once with ``jax.lax.associative_scan`` (``rnnjax.scan``), with the same
        results; ``unroll`` then does not apply, and ``remat`` or ``hoist`` (options of the
        stepped form) with ``parallel=True`` is an error, as is ``parallel=True`` for a cell
        with no linear form. False steps them. None (default) picks the parallel form except on
        CPU, where stepping measured 2-5x faster at every T up to 4096 (BUILD_NOTES.md), or
        when ``remat`` or ``hoist`` is asked for.
      fused_backward: for cells with a ``cell.fused`` split (lstm, gru), differentiate with
        ``rnnjax.fused_backward``: the forward pass keeps only carries and the gates'
        activations (or pre-activations), and the reverse scan runs the gates' VJP from them and
        multiplies by ``Whᵀ`` cast once (with
        bfloat16 matmuls on short sequences the weight gradients are then one matmul over all
        steps). Same results as autodiff of the scan; None (default) uses it whenever the cell
        has the split and neither ``remat`` nor ``hoist`` is asked for. False: plain autodiff,
        which forward-mode ``jax.jvp`` / ``jax.jacfwd`` need (a ``custom_vjp`` has no JVP;
        ``jax.grad``, ``jax.hessian`` and forward-over-reverse work either way). A cell with a
        ``compute_dtype`` has low-precision matmuls with their own VJP: reverse mode only.
      return_sequences: False returns only each sequence's output at the last step it runs
        (its last valid step; with ``reverse``, position 0), zeros for an empty sequence, and
        never stores the others: for models that read one vector per sequence it is the same
        result in less time and memory (BUILD_NOTES.md).

    Returns:
      ``(final_carry, ys)`` with ``ys`` ``[B, T, cell.output_size]`` (``[T, B, ...]`` if
      ``time_major``), or ``[B, cell.output_size]`` without ``return_sequences``.

    Example:
      >>> cell = rnnjax.cells.gru(32)
      >>> params = cell.init(jax.random.key(0), 8)
      >>> carry, ys = rnnjax.unroll(cell, params, jnp.ones((4, 10, 8)), lengths=jnp.arange(4))
    """
    _checks.check_kind("unroll's cell", cell, Cell)
    if not (isinstance(remat, bool) or (isinstance(remat, Integral) and remat >= 1)):
        raise ValueError(f"remat must be a bool or an int >= 1 (steps per block), got {remat!r}")
    input_size = _checks.check_params(cell, params, jnp.shape(xs)[-1] if jnp.ndim(xs) else 1)
    xs_tm = _to_time_major(xs, input_size, time_major)
    time, batch = xs_tm.shape[:2]
    initial, y_dtype = _step_dtypes(cell, params, cell.initial_carry(params, (batch,)), xs_tm)
    initial = varying_like(initial, (params, xs_tm))
    if carry is None:
        carry = initial
    else:
        _checks.check_carry(carry, jax.eval_shape(lambda: initial))
        carry = varying_like(carry, (params, xs_tm))
    valid = None
    if lengths is not None:
        lengths = _checks.check_lengths(lengths, batch, time)
        valid = jnp.arange(time)[:, None] < lengths[None, :]
    if resets is not None:
        if time_major:
            _checks.check_mask("resets (time-major)", resets, (time, batch), "[T, B]")
        else:
            _checks.check_mask("resets", resets, (batch, time), "[B, T]")
            resets = jnp.swapaxes(resets, 0, 1)

    fused = _fused_backward(cell, fused_backward, remat, hoist)  # checked on every path alike
    parallel = _parallel(cell, parallel, remat, hoist, time)
    if parallel and time > 0:  # an empty scan has no last state
        pre = cell.project(params, xs_tm)
        kw = {"valid": valid, "resets": resets, "reverse": reverse}
        final, ys = unroll_linear(cell.linear, params, pre, carry, initial, **kw)
        final = jax.tree.map(lambda f, c: f.astype(c.dtype), final, initial)  # as stepped
        ys = ys.astype(y_dtype)
        if not return_sequences:
            return final, ys[0] if reverse else at_last_step(ys, lengths, time_axis=0)
        return final, ys if time_major else jnp.swapaxes(ys, 0, 1)
    if unroll is None:
        short = isinstance(time, Integral) and time <= FULL_UNROLL_MAX_STEPS  # not symbolic
        unroll = cell.unroll if cell.unroll is not True or short else 1
    # XLA turns a one-feature input's matmul into a broadcast product and fuses it, with the
    # per-step slice, into the gate arithmetic; a hoisted projection is read there directly.
    prefetch = time > 0 and ((hoist and cell.project is not None) or xs_tm.shape[-1] == 1)
    if fused and time > 0:
        final, ys = fused_unroll(
            cell,
            params,
            xs_tm,
            carry,
            initial,
            valid,
            resets,
            reverse=reverse,
            unroll=unroll,
            prefetch=prefetch,
            return_sequences=return_sequences,
        )
        return final, _batch_major(ys, time_major, return_sequences)
    hoisted = hoist and cell.project is not None
    if hoisted:
        inputs, step_fn = cell.project(params, xs_tm), cell.recur
    else:
        inputs, step_fn = xs_tm, cell.apply

    def run(carry_in, x):
        return *step_fn(params, carry_in, x), None

    scanned = (inputs, valid, resets)
    step, state = masked_steps(run, initial, carry, scanned, (params, xs_tm), return_sequences)
    (final, last), (ys, _) = _scan(step, state, scanned, time, reverse, unroll, remat, prefetch)
    return final, _batch_major(ys if return_sequences else last, time_major, return_sequences)


def _batch_major(ys, time_major: bool, return_sequences: bool):
    return ys if time_major or not return_sequences else jnp.swapaxes(ys, 0, 1)


def _step_dtypes(cell: Cell, params, carry, xs_tm):
    """``carry`` in the dtypes a step gives the new carry, which follow the params and inputs
    (float64 inputs in x64 mode; bfloat16 params, or a learnt bfloat16 initial carry, beside
    float32 inputs), so that ``lax.scan`` keeps one carry type; and the step's output dtype
    (None for an empty sequence)."""
    if xs_tm.shape[0] == 0:
        return carry, None
    dtypes = {jnp.result_type(a) for a in jax.tree.leaves((params, carry, xs_tm))}
    floats = {d for d in dtypes if jnp.issubdtype(d, jnp.floating)}
    if floats == {jnp.dtype(jnp.float32)}:  # the common case: no step to trace
        return carry, jnp.dtype(jnp.float32)
    new, y = jax.eval_shape(lambda: cell.apply(params, carry, xs_tm[0]))
    return jax.tree.map(lambda c, s: c.astype(s.dtype), carry, new), y.dtype


def _parallel(cell: Cell, asked: bool | None, remat, hoist: bool, time) -> bool:
    """Whether to run the associative-scan form; a request the cell cannot honour is an error."""
    static = isinstance(time, Integral)  # associative_scan needs it; jax.export may not give it
    if asked is None:
        usable = cell.linear is not None and static and not (remat or hoist)
        return usable and jax.default_backend() != "cpu"
    if asked and not static:
        raise ValueError(
            f"parallel=True needs a static sequence length (jax.lax.associative_scan), got "
            f"the symbolic T = {time}; parallel=False steps through it"
        )
    if asked and cell.linear is None:
        raise ValueError(
            "parallel=True needs a cell linear in its carry (cell.linear: min_gru, min_lstm, "
            "lru), and this cell has none; parallel=None runs the linear cells of a model in "
            "parallel where that is faster (stack and output_projection step their cells: "
            "for deep linear recurrences in parallel, use serial(rnn(...), rnn(...)))"
        )
    if asked and (remat or hoist):
        raise ValueError(
            f"parallel=True cannot be combined with remat={remat!r} or hoist={hoist!r}, "
            "which apply to the stepped form (parallel=False)"
        )
    return bool(asked)


def _fused_backward(cell: Cell, asked: bool | None, remat, hoist: bool) -> bool:
    """Whether to run the fused backward pass; a request the cell cannot honour is an error."""
    if asked is False or (asked is None and (remat or hoist)):
        return False
    if asked and (remat or hoist):
        raise ValueError(
            f"fused_backward=True cannot be combined with remat={remat!r} or hoist={hoist!r}"
        )
    if cell.fused is None or cell.project is None:
        if asked:
            raise ValueError(
                "fused_backward=True needs a cell with a FusedStep split (cell.fused) and an "
                "input projection (cell.project), such as lstm or gru(reset_after=True); this "
                f"cell has fused={cell.fused is not None}, project={cell.project is not None}"
            )
        return False
    return True


def _to_time_major(xs, feature_size: int, time_major: bool) -> jax.Array:
    if time_major:
        _checks.check_sequence("xs (time-major)", xs, feature_size, time_major=True)
        return xs
    _checks.check_sequence("xs", xs, feature_size)
    return jnp.swapaxes(xs, 0, 1)


def _scan(step, carry, scanned, time: int, reverse: bool, unroll, remat, prefetch: bool):
    """``lax.scan`` over time, with optional rematerialisation in blocks of ``remat`` steps."""
    if not remat:
        return prefetching_scan(step, carry, scanned, reverse, unroll, prefetch)
    block = 1 if remat is True else int(remat)
    if block == 1:
        return prefetching_scan(jax.checkpoint(step), carry, scanned, reverse, unroll, prefetch)
    inputs, valid, resets = scanned
    padded_time = -(-time // block) * block
    if padded_time != time:
        batch = jax.tree.leaves(inputs)[0].shape[1]
        in_range = jnp.arange(padded_time)[:, None] < time
        valid = in_range if valid is None else in_range & _pad_time(valid, padded_time)
        valid = jnp.broadcast_to(valid, (padded_time, batch))
    scanned = jax.tree.map(
        lambda a: a.reshape((padded_time // block, block) + a.shape[1:]),
        (_pad_time(inputs, padded_time), valid, _pad_time(resets, padded_time)),
    )

    @jax.checkpoint
    def run_block(carry, block_inputs):
        return prefetching_scan(step, carry, block_inputs, reverse, unroll, prefetch)

    carry, ys = jax.lax.scan(run_block, carry, scanned, reverse=reverse)
    ys = jax.tree.map(lambda a: a.reshape((padded_time,) + a.shape[2:])[:time], ys)
    return carry, ys


def _pad_time(tree, padded_time: int):
    """Pads the leading (time) axis of every leaf with zeros up to ``padded_time``."""

    def pad(a):
        return jnp.pad(a, [(0, padded_time - a.shape[0])] + [(0, 0)] * (a.ndim - 1))

    return jax.tree.map(pad, tree)
