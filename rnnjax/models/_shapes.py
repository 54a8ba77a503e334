"""Seq-to-vector, seq-to-seq and vector-to-seq models, and the masks and pooling they share."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax._stepping import at_last_step
from rnnjax.cells import Cell
from rnnjax.layers import Layer
from rnnjax.models._bridge import bridge_apply, bridge_init, carry_shape
from rnnjax.unroll import unroll


class Model(NamedTuple):
    """A whole network: ``init(key) -> params`` and ``apply(params, inputs, **kwargs)``.

    ``layer``, where the model has one (``seq2seq``): the same network as one carry-passing
    ``Layer`` on the model's own params, which ``rnnjax.generate`` steps.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., Any]
    layer: Layer | None = None


POOLS = ("last", "mean", "max")


def seq2vec(body: Layer, head: Layer, *, in_size: int, pool: str = "last") -> Model:
    """Sequence in, one vector out: ``head(pool(body(xs)))`` (the textbook's MNIST classifier).

    Args:
      body: a layer ``[B, T, in_size] -> [B, T, H]`` (e.g. ``rnn(simple(150))``).
      head: a layer on the pooled ``[B, H]`` (e.g. ``dense(10)``).
      in_size: input feature size D.
      pool: "last", "mean" or "max" over valid steps. "last" is each sequence's final output
        (``Layer.last``, with the other steps' outputs never stored): a forward RNN's at its
        last valid step; with a ``bidirectional`` body (or a ``serial`` ending in one) the
        forward direction's there and the backward one's at the first step, as Keras's
        ``Bidirectional`` and PyTorch's ``h_n`` give. A body without ``last`` (one ending in
        a ``dense``) gives its output at the last valid step.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, out]``.

    Example:
      >>> model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(150)), rnnjax.dense(10), in_size=28)
      >>> logits = model.apply(model.init(jax.random.key(0)), images)   # images [B, 28, 28]
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    _, init = _body_and_head(body, head, in_size)

    def apply(params, xs, *, lengths=None, key=None):
        _checks.check_model_params(init, params)
        lengths = checked_lengths(xs, lengths)
        kb, kh = (None, None) if key is None else jax.random.split(key)
        if pool == "last" and body.last is not None:  # no [B, T, H] outputs kept
            _, pooled = body.last(params["body"], xs, lengths=lengths, key=kb)
        else:
            _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
            pooled = pool_steps(ys, lengths, pool)
        _, out = head.apply(params["head"], pooled, key=kh)
        return out

    return Model(init, apply)


def seq2seq(body: Layer, head: Layer, *, in_size: int) -> Model:
    """An output at every step: ``head(body(xs))``, zero past each sequence's length.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, T, out]``.

    Example (next-value prediction of a time series):
      >>> model = rnnjax.seq2seq(rnnjax.rnn(rnnjax.cells.simple(100)), rnnjax.dense(1), in_size=1)
    """
    layer, init = _body_and_head(body, head, in_size)

    def apply(params, xs, *, lengths=None, key=None):
        _checks.check_model_params(init, params)
        lengths = checked_lengths(xs, lengths)
        _, out = layer.apply(params, xs, lengths=lengths, key=key)
        return zero_past(out, lengths)

    return Model(init, apply, layer)


def checked_lengths(xs, lengths):
    """``lengths`` checked against ``xs [B, T, ...]`` (an int ``[B]`` in ``[0, T]``) as an
    array, for masks and pools that a body without a recurrent layer (a ``dense``) never
    checks; None stays None."""
    if lengths is None:
        return None
    shape = tuple(jnp.shape(xs))
    if len(shape) < 2:
        raise ValueError(f"inputs must be [B, T, ...] to go with lengths, got shape {shape}")
    return _checks.check_lengths(lengths, *shape[:2])


def _body_and_head(body: Layer, head: Layer, in_size: int):
    """``(layer, init)``: ``head(body(xs))`` as one carry-passing ``Layer`` on ``{"body",
    "head"}`` params, and the model's ``init(key)``, the head sized by the body's output."""
    _checks.check_kind("body", body, Layer)
    _checks.check_kind("head", head, Layer)
    in_size = _checks.check_size("in_size", in_size)
    layer = _body_then_head(body, head)
    return layer, lambda key: layer.init(key, in_size)[0]


def _body_then_head(body: Layer, head: Layer) -> Layer:
    """``head(body(xs))`` as one carry-passing ``Layer`` on ``{"body", "head"}`` params; its
    carry is the pair of theirs."""

    def init(key, in_size):
        kb, kh = jax.random.split(key)
        body_params, size = body.init(kb, in_size)
        head_params, out_size = head.init(kh, size)
        return {"body": body_params, "head": head_params}, out_size

    def apply(params, xs, carry=None, *, lengths=None, key=None):
        body_carry, head_carry = (None, None) if carry is None else carry
        kb, kh = (None, None) if key is None else jax.random.split(key)
        body_carry, ys = body.apply(params["body"], xs, body_carry, lengths=lengths, key=kb)
        head_carry, out = head.apply(params["head"], ys, head_carry, lengths=lengths, key=kh)
        return (body_carry, head_carry), out

    return Layer(init, apply, causal=body.causal and head.causal)


VEC2SEQ_MODES = ("init", "input")


def vec2seq(cell: Cell, head: Layer, *, in_size: int, length: int, mode: str = "init") -> Model:
    """One vector in, a sequence of ``length`` steps out (e.g. image captioning's decoder).

    Args:
      cell: the recurrence.
      head: a layer on the cell's outputs ``[B, T, O]`` (e.g. ``dense(vocab)``).
      in_size: size D of the input vector.
      length: number of output steps T.
      mode: "init": the vector sets the initial carry through a learnt bridge,
        ``tanh(v·W + b)`` for every carry leaf, and the cell sees a zero input of size 1 at every
        step; "input": the vector is the cell's input at every step, from the cell's own initial
        carry.

    ``apply(params, v[B, D], *, lengths=None, key=None) -> [B, T, out]``, zero past ``lengths``.

    Example:
      >>> model = rnnjax.vec2seq(rnnjax.cells.gru(64), rnnjax.dense(1), in_size=16, length=20)
      >>> ys = model.apply(model.init(jax.random.key(0)), jnp.ones((8, 16)))   # [8, 20, 1]
    """
    if mode not in VEC2SEQ_MODES:
        raise ValueError(f"mode must be one of {VEC2SEQ_MODES}, got {mode!r}")
    length = _checks.check_size("length", length)
    in_size = _checks.check_size("in_size", in_size)
    _checks.check_kind("vec2seq's cell", cell, Cell)
    _checks.check_kind("head", head, Layer)
    step_size = in_size if mode == "input" else 1

    def init(key):
        kc, kh, kb = jax.random.split(key, 3)
        params = {"cell": cell.init(kc, step_size)}
        params["head"], _ = head.init(kh, cell.output_size)
        if mode == "init":
            params["bridge"] = bridge_init(kb, in_size, carry_shape(cell, params["cell"], 1))
        return params

    def apply(params, vec, *, lengths=None, key=None):
        _checks.check_model_params(init, params)
        if jnp.ndim(vec) != 2 or jnp.shape(vec)[1] != in_size:
            raise ValueError(f"vec must be [B, {in_size}], got shape {jnp.shape(vec)}")
        batch = vec.shape[0]
        lengths = None if lengths is None else _checks.check_lengths(lengths, batch, length)
        if mode == "input":
            xs, carry = jnp.broadcast_to(vec[:, None], (batch, length, in_size)), None
        else:
            xs = jnp.zeros((batch, length, 1), vec.dtype)
            shape = carry_shape(cell, params["cell"], batch, xs.dtype)
            carry = bridge_apply(params["bridge"], vec, shape)
        _, ys = unroll(cell, params["cell"], xs, carry, lengths=lengths)
        _, out = head.apply(params["head"], ys, lengths=lengths, key=key)
        return zero_past(out, lengths)

    return Model(init, apply)


def zero_past(out: jax.Array, lengths) -> jax.Array:
    if lengths is None:
        return out
    return jnp.where(valid_mask(lengths, out.shape[1])[..., None], out, 0.0)


def valid_mask(lengths: jax.Array, time: int) -> jax.Array:
    """Bool ``[B, T]``: true on each sequence's valid steps."""
    return jnp.arange(time)[None, :] < lengths[:, None]


def pool_steps(ys: jax.Array, lengths: jax.Array | None, pool: str) -> jax.Array:
    """Pools ``ys [B, T, H]`` over valid steps to ``[B, H]``; empty sequences give zeros."""
    if pool == "last":
        return at_last_step(ys, lengths, time_axis=1)
    batch, time = ys.shape[:2]
    if lengths is None:
        lengths = jnp.full((batch,), time)
    mask = valid_mask(lengths, time)[..., None]
    if pool == "mean":
        return jnp.sum(jnp.where(mask, ys, 0.0), axis=1) / jnp.maximum(lengths, 1)[:, None]
    best = jnp.max(jnp.where(mask, ys, -jnp.inf), axis=1, initial=-jnp.inf)  # T = 0 too
    return jnp.where((lengths > 0)[:, None], best, 0.0)
