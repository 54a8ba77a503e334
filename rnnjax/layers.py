"""Sequence-to-sequence blocks: rnn, bidirectional, serial, residual, dense, embed, dropout.

A ``Layer`` maps ``[B, T, D]`` to ``[B, T, out_size]``. ``init`` returns the output size with the
params (as stax does) so sizes chain without data. Every ``apply`` has one signature,
``(params, xs, carry=None, *, lengths=None, key=None) -> (carry, ys)``; stateless layers return
``carry=None``. Dropout is on exactly when a key is passed.
"""

import contextlib
import contextvars
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_kind, check_range, check_size
from rnnjax._stepping import at_last_step
from rnnjax.cells import Cell, LSTMCarry
from rnnjax.cells._base import (
    check_compute_dtype,
    glorot_uniform,
    matmul,
    recur_with_mask,
    resolve_activation,
    zeros,
)
from rnnjax.unroll import unroll


class Layer(NamedTuple):
    """A sequence block: ``init(key, in_size) -> (params, out_size)`` and ``apply`` (above).

    ``last``, optional, has ``apply``'s signature and returns ``(carry, y [B, out_size])``:
    each sequence's final output, that of the step run last (zeros for an empty sequence),
    computed without storing the other steps' outputs: a forward ``rnn``'s output at the last
    valid step, a reverse one's at the first, a ``bidirectional`` layer's both (as Keras's
    ``Bidirectional`` and PyTorch's ``h_n`` give). ``seq2vec(pool="last")`` uses it.
    ``causal``: step t's output reads inputs up to t only (false for a reverse ``rnn`` and
    ``bidirectional``); ``generate`` needs it.
    """

    init: Callable[[jax.Array, int], tuple[Any, int]]
    apply: Callable[..., tuple[Any, jax.Array]]
    last: Callable[..., tuple[Any, jax.Array]] | None = None
    causal: bool = True


# rnnjax.unroll's options that a layer passes on (it sets the others itself)
UNROLL_OPTIONS = ("unroll", "remat", "hoist", "parallel", "fused_backward")


def rnn(
    cell: Cell,
    *,
    reverse: bool = False,
    input_dropout: float = 0.0,
    carry_dropout: float = 0.0,
    **unroll_options,
) -> Layer:
    """A recurrent layer: ``cell`` unrolled over the sequence.

    Args:
      cell: the recurrence.
      reverse: run from the last valid step to the first.
      input_dropout, carry_dropout: variational dropout rates (Gal & Ghahramani 2016): one mask
        per sequence, the same at every step, on the inputs and on the hidden state where the
        recurrent matmul reads it (the rest of the step, a GRU's ``z ⊙ h``, an LSTM's ``c``,
        reads the carry unmasked). Linear recurrences have no recurrent matmul and refuse it.
      **unroll_options: ``unroll``, ``remat``, ``hoist``, ``parallel``, ``fused_backward``,
        as for ``rnnjax.unroll``.

    ``apply(params, xs, carry=None, *, lengths=None, key=None)`` returns ``(final_carry, ys)``;
    ``last`` (``Layer``) unrolls with ``return_sequences=False``.

    Example:
      >>> layer = rnnjax.rnn(rnnjax.cells.lstm(64), carry_dropout=0.25)
      >>> params, out_size = layer.init(jax.random.key(0), 28)
    """
    check_kind("rnn's cell", cell, Cell)
    for name, rate in (("input_dropout", input_dropout), ("carry_dropout", carry_dropout)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {rate}")
    for name in ("time_major", "return_sequences"):  # the layer's shapes are its own
        if name in unroll_options:
            raise ValueError(
                f"rnn is batch-major, [B, T, D] -> [B, T, O] (use .last for [B, O]), so it "
                f"takes no {name}, got {name}={unroll_options[name]!r}"
            )
    if carry_dropout > 0 and recur_with_mask(cell) is None:
        raise ValueError(
            "carry_dropout needs a cell whose recurrent matmul it can drop the hidden state "
            "into (Cell.fused or Cell.masked_recur: lstm, gru, simple, indrnn), got one with "
            "neither. A linear recurrence (min_gru, min_lstm, lru) has no recurrent matmul: "
            "use input_dropout or a dropout layer; for a deep RNN use "
            "serial(rnn(c1, ...), rnn(c2, ...))"
        )
    unknown = sorted(set(unroll_options) - set(UNROLL_OPTIONS))
    if unknown:  # found here, not at the first apply
        raise TypeError(f"rnn got unknown options {unknown}; it takes {list(UNROLL_OPTIONS)}")

    def init(key, in_size):
        return cell.init(key, in_size), cell.output_size

    def run(params, xs, carry, lengths, key, return_sequences):
        step_cell = cell
        if key is not None and input_dropout > 0:
            shape = (xs.shape[0], 1, xs.shape[-1])
            mask = _dropout_mask(jax.random.fold_in(key, 0), input_dropout, shape)
            xs = xs * mask
        if key is not None and carry_dropout > 0:
            carry_key = jax.random.fold_in(key, 1)
            step_cell = _with_carry_dropout(cell, params, carry_key, carry_dropout, xs.shape[0])
        options = unroll_options | {"return_sequences": return_sequences}
        return unroll(step_cell, params, xs, carry, lengths=lengths, reverse=reverse, **options)

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, return_sequences=True)

    def last(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, return_sequences=False)

    return Layer(init, apply, last, causal=not reverse)


def bidirectional(
    cell: Cell, backward_cell: Cell | None = None, *, merge: str = "concat", **rnn_options
) -> Layer:
    """Runs one cell forward and one backward over each sequence and merges their outputs.

    With ``lengths`` the backward direction starts at each sequence's own last valid element and
    both outputs stay aligned with the inputs. The carry is ``(forward_carry, backward_carry)``.

    Args:
      cell: the forward cell (and the backward one's design if ``backward_cell`` is None).
      backward_cell: a different backward cell, if wanted; params are never shared.
      merge: "concat" (output size 2·O) or "sum".
      **rnn_options: passed to both ``rnn`` layers (dropout, unroll, remat, hoist).
    """
    if merge not in ("concat", "sum"):
        raise ValueError(f"merge must be 'concat' or 'sum', got {merge!r}")
    forward = rnn(cell, **rnn_options)
    backward = rnn(backward_cell or cell, reverse=True, **rnn_options)

    def init(key, in_size):
        kf, kb = jax.random.split(key)
        (pf, of), (pb, ob) = forward.init(kf, in_size), backward.init(kb, in_size)
        if merge == "sum" and of != ob:
            raise ValueError(f"merge='sum' needs equal output sizes, got {of} and {ob}")
        return {"forward": pf, "backward": pb}, of + ob if merge == "concat" else of

    def run(params, xs, carry, lengths, key, last_only):
        cf, cb = (None, None) if carry is None else _carries(carry, 2, " (forward, backward)")
        kf, kb = (None, None) if key is None else jax.random.split(key)
        runs = (forward.last, backward.last) if last_only else (forward.apply, backward.apply)
        cf, yf = runs[0](params["forward"], xs, cf, lengths=lengths, key=kf)
        cb, yb = runs[1](params["backward"], xs, cb, lengths=lengths, key=kb)
        ys = jnp.concatenate([yf, yb], axis=-1) if merge == "concat" else yf + yb
        return (cf, cb), ys

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, last_only=False)

    def last(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, last_only=True)

    return Layer(init, apply, last, causal=False)


def serial(*layers: Layer) -> Layer:
    """Chains layers; the carry is a tuple with one entry per layer, params ``{"0": ...}``.

    Example (the chapter's deep RNN with dropout between layers):
      >>> body = rnnjax.serial(rnnjax.rnn(rnnjax.cells.lstm(150)), rnnjax.dropout(0.2),
      ...                      rnnjax.rnn(rnnjax.cells.lstm(150)))
    """
    if not layers:
        raise ValueError("serial needs at least one layer, got none")
    for i, layer in enumerate(layers):
        check_kind(f"serial's layer {i}", layer, Layer)

    def init(key, in_size):
        params, size = {}, in_size
        for i, (layer, k) in enumerate(
            zip(layers, jax.random.split(key, len(layers)), strict=True)
        ):
            params[str(i)], size = layer.init(k, size)
        return params, size

    def run(params, xs, carry, lengths, key, last_only):
        carries = (None,) * len(layers) if carry is None else _carries(carry, len(layers), "")
        finals = []
        for i, (layer, layer_carry) in enumerate(zip(layers, carries, strict=True)):
            layer_key = None if key is None else jax.random.fold_in(key, i)
            apply_layer = layer.last if last_only and i == len(layers) - 1 else layer.apply
            layer_carry, xs = apply_layer(
                params[str(i)], xs, layer_carry, lengths=lengths, key=layer_key
            )
            finals.append(layer_carry)
        return tuple(finals), xs

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, last_only=False)

    def last(params, xs, carry=None, *, lengths=None, key=None):
        return run(params, xs, carry, lengths, key, last_only=True)

    causal = all(layer.causal for layer in layers)
    return Layer(init, apply, last if layers[-1].last is not None else None, causal)


def _carries(carry, count: int, names: str) -> tuple:
    """``carry`` as the plain tuple of ``count`` carries it must be (a named tuple such as an
    ``LSTMCarry`` is one cell's carry), or a ValueError naming what came."""
    if type(carry) not in (tuple, list) or len(carry) != count:
        got = type(carry).__name__
        got += f" of {len(carry)}" if isinstance(carry, tuple | list) else ""
        raise ValueError(f"carry must be a tuple of {count} carries{names}, got a {got}")
    return tuple(carry)


def residual(layer: Layer) -> Layer:
    """``ys = xs + layer(xs)``; the layer must keep the feature size."""
    check_kind("residual's layer", layer, Layer)

    def init(key, in_size):
        params, out_size = layer.init(key, in_size)
        if out_size != in_size:
            raise ValueError(f"residual needs out_size == in_size, got {out_size} != {in_size}")
        return params, out_size

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        carry, ys = layer.apply(params, xs, carry, lengths=lengths, key=key)
        return carry, xs + ys

    def last(params, xs, carry=None, *, lengths=None, key=None):
        carry, y = layer.last(params, xs, carry, lengths=lengths, key=key)
        return carry, at_last_step(xs, lengths, time_axis=1) + y

    # only a causal layer's final output is at the last valid step, where xs is added
    has_last = layer.last is not None and layer.causal
    return Layer(init, apply, last if has_last else None, layer.causal)


def dense(
    size: int, *, activation=None, kernel_init=glorot_uniform, bias_init=zeros, compute_dtype=None
) -> Layer:
    """A dense layer on the last axis (any leading shape); params ``{"w": [D, size], "b"}``.

    ``compute_dtype`` (e.g. ``"bfloat16"``) runs the matmul at that precision with float32
    accumulation, as the cells' option of the same name.
    """
    size = check_size("dense's size", size)
    phi = None if activation is None else resolve_activation(activation)
    compute_dtype = check_compute_dtype(compute_dtype)

    def init(key, in_size):
        in_size = check_size("dense's input size", in_size)
        kw, kb = jax.random.split(key)
        w = kernel_init(kw, (in_size, size), jnp.float32)
        return {"w": w, "b": bias_init(kb, (size,), jnp.float32)}, size

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        if jnp.ndim(xs) < 1 or jnp.shape(xs)[-1] != params["w"].shape[0]:
            raise ValueError(
                f"dense expects inputs [..., {params['w'].shape[0]}] (its kernel is "
                f"{params['w'].shape}), got shape {jnp.shape(xs)}"
            )
        ys = matmul(xs, params["w"], compute_dtype) + params["b"]
        return None, ys if phi is None else phi(ys)

    return Layer(init, apply)


standard_normal = jax.nn.initializers.normal(1.0)


def embed(vocab_size: int, size: int, *, embedding_init=standard_normal) -> Layer:
    """Token embeddings: int ``[B, T]`` -> ``[B, T, size]``; params ``{"table": [V, size]}``."""
    vocab_size = check_size("embed's vocab_size", vocab_size)
    size = check_size("embed's size", size)

    def init(key, in_size):
        return {"table": embedding_init(key, (vocab_size, size), jnp.float32)}, size

    def apply(params, tokens, carry=None, *, lengths=None, key=None):
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"embed expects integer tokens, got {jnp.result_type(tokens)}")
        vocab = params["table"].shape[0]
        check_range("embed's tokens", tokens, 0, vocab, f"[0, vocab_size={vocab})")
        # Under jit ids cannot raise: any outside [0, V) gives a NaN row (negative ones too,
        # which indexing would wrap), so a loss shows it.
        tokens = jnp.where(tokens < 0, vocab, tokens)
        return None, jnp.take(params["table"], tokens, axis=0, mode="fill", fill_value=jnp.nan)

    return Layer(init, apply)


def dropout(rate: float, *, variational: bool = False) -> Layer:
    """Inverted dropout, on only when a key is passed.

    With ``variational`` one mask per sequence is shared by all time steps (Gal & Ghahramani).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")

    def init(key, in_size):
        return {}, in_size

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        if key is None or rate == 0.0:
            return None, xs
        # one mask per example, shared along its time axis if it has one ([B, T, D])
        shape = (xs.shape[0], *[1] * (xs.ndim - 2), xs.shape[-1]) if variational else xs.shape
        return None, xs * _dropout_mask(key, rate, shape)

    return Layer(init, apply)


_FIRST_ROW = contextvars.ContextVar("rnnjax_first_row", default=0)


@contextlib.contextmanager
def rows_from(first_row):
    """Dropout masks drawn inside (while tracing) are those of the whole batch's rows
    ``first_row, first_row + 1, ...``: ``distributed.data_parallel`` runs each device's rows
    under its offset, so a model's masks, and its losses, do not depend on the device count."""
    token = _FIRST_ROW.set(first_row)
    try:
        yield
    finally:
        _FIRST_ROW.reset(token)


def _dropout_mask(key, rate: float, shape) -> jax.Array:
    """An inverted-dropout mask ``shape = [B, ...]`` whose row ``i`` is drawn from
    ``fold_in(key, first_row + i)``: a row's mask is its own, however the batch is split."""
    keep = 1.0 - rate
    rows = _FIRST_ROW.get() + jnp.arange(shape[0])

    def row_mask(row):
        return jax.random.bernoulli(jax.random.fold_in(key, row), keep, shape[1:])

    return jax.vmap(row_mask)(rows).astype(jnp.float32) / keep


def _with_carry_dropout(cell: Cell, params, key, rate: float, batch: int) -> Cell:
    """The cell with one per-sequence dropout mask on its hidden state where the recurrent
    products read it; the rest of the step (a GRU's ``z ⊙ h``, an LSTM's ``c``) reads the
    carry itself, so memory is neither erased nor rescaled at every step.

    The mask is drawn once, outside the scan, so every step reuses it.
    """
    masked_recur = recur_with_mask(cell)  # rnn checked that there is one
    hidden = _hidden(jax.eval_shape(lambda: cell.initial_carry(params, (batch,))))
    mask = _dropout_mask(key, rate, hidden.shape)

    def recur(p, c, pre):
        return masked_recur(p, c, pre, mask)

    fused = cell.fused and cell.fused._replace(recurrent_mask=mask)
    return cell._replace(
        apply=lambda p, c, x: recur(p, c, cell.project(p, x)), recur=recur, fused=fused
    )


def _hidden(carry):
    if isinstance(carry, LSTMCarry):
        return carry.h
    if isinstance(carry, jax.Array | jax.ShapeDtypeStruct):
        return carry
    raise ValueError(
        "carry_dropout needs a cell whose carry is an array or an LSTMCarry, got "
        f"{jax.tree.structure(carry)}; for a deep RNN use serial(rnn(c1, ...), rnn(c2, ...))"
    )
