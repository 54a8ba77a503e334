"""The sequence shapes as models: seq-to-vector, seq-to-seq, vector-to-seq, encoder–decoder.

A ``Model`` is ``init(key) -> params`` and ``apply(params, inputs, *, lengths=None, key=None)``;
an ``EncoderDecoder`` adds ``encode`` and ``decode_step`` for ``rnnjax.decoding``.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells import Cell
from rnnjax.layers import Layer, dense
from rnnjax.unroll import unroll


class Model(NamedTuple):
    """A whole network: ``init(key) -> params`` and ``apply(params, inputs, **kwargs)``."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., Any]


POOLS = ("last", "mean", "max")


def seq2vec(body: Layer, head: Layer, *, in_size: int, pool: str = "last") -> Model:
    """Sequence in, one vector out: ``head(pool(body(xs)))`` (the textbook's MNIST classifier).

    Args:
      body: a layer ``[B, T, in_size] -> [B, T, H]`` (e.g. ``rnn(simple(150))``).
      head: a layer on the pooled ``[B, H]`` (e.g. ``dense(10)``).
      in_size: input feature size D.
      pool: "last" (the output at each sequence's last valid step, i.e. the final hidden state of
        a forward RNN), "mean" or "max" over valid steps.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, out]``.

    Example:
      >>> model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(150)), rnnjax.dense(10), in_size=28)
      >>> logits = model.apply(model.init(jax.random.key(0)), images)   # images [B, 28, 28]
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    init = _body_head_init(body, head, in_size)

    def apply(params, xs, *, lengths=None, key=None):
        kb, kh = (None, None) if key is None else jax.random.split(key)
        _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
        _, out = head.apply(params["head"], pool_steps(ys, lengths, pool), key=kh)
        return out

    return Model(init, apply)


def seq2seq(body: Layer, head: Layer, *, in_size: int) -> Model:
    """An output at every step: ``head(body(xs))``, zero past each sequence's length.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, T, out]``.

    Example (next-value prediction of a time series):
      >>> model = rnnjax.seq2seq(rnnjax.rnn(rnnjax.cells.simple(100)), rnnjax.dense(1), in_size=1)
    """
    init = _body_head_init(body, head, in_size)

    def apply(params, xs, *, lengths=None, key=None):
        kb, kh = (None, None) if key is None else jax.random.split(key)
        _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
        _, out = head.apply(params["head"], ys, lengths=lengths, key=kh)
        return _zero_past(out, lengths)

    return Model(init, apply)


def _body_head_init(body: Layer, head: Layer, in_size: int):
    """``init(key) -> {"body", "head"}`` with the head sized by the body's output."""

    def init(key):
        kb, kh = jax.random.split(key)
        body_params, size = body.init(kb, in_size)
        head_params, _ = head.init(kh, size)
        return {"body": body_params, "head": head_params}

    return init


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
    step_size = in_size if mode == "input" else 1

    def init(key):
        kc, kh, kb = jax.random.split(key, 3)
        params = {"cell": cell.init(kc, step_size)}
        params["head"], _ = head.init(kh, cell.output_size)
        if mode == "init":
            params["bridge"] = _bridge_init(kb, in_size, _carry_shape(cell, params["cell"], (1,)))
        return params

    def apply(params, vec, *, lengths=None, key=None):
        if jnp.ndim(vec) != 2 or jnp.shape(vec)[1] != in_size:
            raise ValueError(f"vec must be [B, {in_size}], got shape {jnp.shape(vec)}")
        batch = vec.shape[0]
        if mode == "input":
            xs, carry = jnp.broadcast_to(vec[:, None], (batch, length, in_size)), None
        else:
            xs = jnp.zeros((batch, length, 1), vec.dtype)
            carry = _bridge_apply(
                params["bridge"], vec, _carry_shape(cell, params["cell"], (batch,))
            )
        _, ys = unroll(cell, params["cell"], xs, carry, lengths=lengths)
        _, out = head.apply(params["head"], ys, lengths=lengths, key=key)
        return _zero_past(out, lengths)

    return Model(init, apply)


class EncoderDecoder(NamedTuple):
    """A sequence-to-sequence model with the pieces decoding needs.

    Attributes:
      init: ``key -> params``.
      apply: ``(params, src[B, S], tgt_in[B, T], *, src_lengths=None, tgt_lengths=None,
        key=None) -> logits [B, T, V]`` (teacher forcing).
      encode: ``(params, src, src_lengths=None, *, key=None) -> carry``, the decoder's initial
        carry.
      decode_step: ``(params, carry, tokens[B]) -> (carry, logits[B, V])``, one decoder step.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]
    encode: Callable[..., Any]
    decode_step: Callable[..., tuple[Any, jax.Array]]


BRIDGES = ("auto", "identity", "dense")


def encoder_decoder(
    encoder: Layer,
    decoder_cell: Cell,
    *,
    src_embed: Layer,
    tgt_embed: Layer,
    head: Layer,
    bridge: str = "auto",
) -> EncoderDecoder:
    """Encoder–decoder (Sutskever et al. 2014): the encoder's final carry starts the decoder.

    The bridge takes the encoder's whole final carry. Stateless layers' ``None`` carries are
    dropped and one-element tuples unwrapped, so ``rnn(c)`` and ``serial(rnn(c),
    dropout(.1))`` both give ``c``'s carry. "identity" passes it on unchanged and needs the same
    structure and per-example shapes as ``decoder_cell``'s carry (a ``serial`` of k ``rnn``
    layers matches a ``stack`` of k cells; a ``bidirectional`` ``(fwd, bwd)`` carry matches a
    stack of two). "dense" learns ``tanh(concat(leaves)·W + b)`` for every decoder carry leaf,
    so it reads every layer and both directions. "auto" is identity when it applies, else dense.

    Args:
      encoder: a layer over source embeddings whose final carry is not empty (e.g.
        ``rnn(lstm(64))``, ``bidirectional(gru(64))``).
      decoder_cell: the decoder's recurrence, fed target embeddings.
      src_embed, tgt_embed: layers from int tokens ``[B, T]`` to ``[B, T, E]`` (``embed``).
      head: a layer from decoder outputs to logits ``[B, T, V]`` (e.g. ``dense(V)``).
      bridge: "auto", "identity" or "dense" (above).

    Example:
      >>> model = rnnjax.encoder_decoder(
      ...     rnnjax.rnn(rnnjax.cells.lstm(64)), rnnjax.cells.lstm(64),
      ...     src_embed=rnnjax.embed(100, 32), tgt_embed=rnnjax.embed(120, 32),
      ...     head=rnnjax.dense(120))
      >>> logits = model.apply(model.init(jax.random.key(0)), src, tgt_in, src_lengths=lengths)
    """
    if bridge not in BRIDGES:
        raise ValueError(f"bridge must be one of {BRIDGES}, got {bridge!r}")

    def init(key):
        ks, ke, kt, kd, kh, kb = jax.random.split(key, 6)
        params = {}
        params["src_embed"], src_size = src_embed.init(ks, 0)
        params["encoder"], _ = encoder.init(ke, src_size)
        params["tgt_embed"], tgt_size = tgt_embed.init(kt, 0)
        params["decoder"] = decoder_cell.init(kd, tgt_size)
        params["head"], _ = head.init(kh, decoder_cell.output_size)
        fake_src = jax.ShapeDtypeStruct((1, 1, src_size), jnp.float32)
        enc = jax.eval_shape(lambda p, x: encoder.apply(p, x)[0], params["encoder"], fake_src)
        dec = _carry_shape(decoder_cell, params["decoder"], (1,))
        if not _is_identity(bridge, enc, dec):
            params["bridge"] = _bridge_init(kb, _flat_size(enc), dec)
        return params

    def encode(params, src, src_lengths=None, *, key=None):
        ks, ke = (None, None) if key is None else jax.random.split(key)
        _, xs = src_embed.apply(params["src_embed"], src, key=ks)
        enc, _ = encoder.apply(params["encoder"], xs, lengths=src_lengths, key=ke)
        dec = _carry_shape(decoder_cell, params["decoder"], (xs.shape[0],))
        if _is_identity(bridge, enc, dec):
            return jax.tree.unflatten(jax.tree.structure(dec), jax.tree.leaves(enc))
        flat = jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(enc)], -1)
        return _bridge_apply(params["bridge"], flat, dec)

    def decode_step(params, carry, tokens):
        _, x = tgt_embed.apply(params["tgt_embed"], tokens[:, None])
        carry, y = decoder_cell.apply(params["decoder"], carry, x[:, 0])
        _, logits = head.apply(params["head"], y[:, None])
        return carry, logits[:, 0]

    def apply(params, src, tgt_in, *, src_lengths=None, tgt_lengths=None, key=None):
        ke, kt, kh = (None,) * 3 if key is None else jax.random.split(key, 3)
        carry = encode(params, src, src_lengths, key=ke)
        _, xs = tgt_embed.apply(params["tgt_embed"], tgt_in, key=kt)
        _, ys = unroll(decoder_cell, params["decoder"], xs, carry, lengths=tgt_lengths)
        _, logits = head.apply(params["head"], ys, lengths=tgt_lengths, key=kh)
        return _zero_past(logits, tgt_lengths)

    return EncoderDecoder(init, apply, encode, decode_step)


def _bridge_init(key, in_size: int, carry) -> dict:
    """Params of a dense bridge from ``[B, in_size]`` to every leaf of ``carry`` (``[B, ...]``)."""
    leaves = jax.tree.leaves(carry)
    keys = jax.random.split(key, len(leaves))
    return {
        str(i): dense(math.prod(leaf.shape[1:])).init(k, in_size)[0]
        for i, (leaf, k) in enumerate(zip(leaves, keys, strict=True))
    }


def _bridge_apply(params, vec: jax.Array, carry):
    """``tanh(vec·W + b)`` reshaped to every leaf of ``carry`` (shapes ``[B, ...]``)."""
    leaves, treedef = jax.tree.flatten(carry)
    out = []
    for i, leaf in enumerate(leaves):
        y = jnp.tanh(vec @ params[str(i)]["w"] + params[str(i)]["b"])
        out.append(y.reshape(leaf.shape).astype(leaf.dtype))
    return jax.tree.unflatten(treedef, out)


def _is_identity(bridge: str, enc, dec) -> bool:
    """Whether the encoder's carry passes on unchanged; raises where no bridge can be made."""
    if not jax.tree.leaves(enc):
        raise ValueError(
            "the encoder's final carry is empty (only stateless layers?), so the decoder's "
            "initial carry cannot be derived from it; use an encoder with a recurrent layer"
        )
    if bridge == "dense":
        return False
    same = _signature(enc) == _signature(dec)
    if bridge == "identity" and not same:
        raise ValueError(
            "bridge='identity' needs the encoder's final carry to match the decoder's initial "
            f"carry, got per-example shapes {_shapes(enc)} and {_shapes(dec)}; use bridge='dense'"
        )
    return same


def _squeeze(carry):
    """Drops stateless layers' ``None`` carries from plain tuples and unwraps 1-tuples."""
    if type(carry) is tuple:
        items = tuple(_squeeze(c) for c in carry if c is not None)
        return items[0] if len(items) == 1 else items
    return carry


def _signature(carry):
    leaves = jax.tree.leaves(carry)
    return jax.tree.structure(_squeeze(carry)), [(a.shape[1:], a.dtype) for a in leaves]


def _shapes(carry):
    return jax.tree.map(lambda a: tuple(a.shape[1:]), _squeeze(carry))


def _flat_size(carry) -> int:
    return sum(math.prod(a.shape[1:]) for a in jax.tree.leaves(carry))


def _carry_shape(cell: Cell, params, batch_shape):
    return jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)


def _zero_past(out: jax.Array, lengths) -> jax.Array:
    if lengths is None:
        return out
    return jnp.where(valid_mask(lengths, out.shape[1])[..., None], out, 0.0)


def valid_mask(lengths: jax.Array, time: int) -> jax.Array:
    """Bool ``[B, T]``: true on each sequence's valid steps."""
    return jnp.arange(time)[None, :] < lengths[:, None]


def pool_steps(ys: jax.Array, lengths: jax.Array | None, pool: str) -> jax.Array:
    """Pools ``ys [B, T, H]`` over valid steps to ``[B, H]``; empty sequences give zeros."""
    batch, time = ys.shape[:2]
    if lengths is None:
        lengths = jnp.full((batch,), time)
    if pool == "last":
        last = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        return jnp.where((lengths > 0)[:, None], last, 0.0)
    mask = valid_mask(lengths, time)[..., None]
    if pool == "mean":
        return jnp.sum(jnp.where(mask, ys, 0.0), axis=1) / jnp.maximum(lengths, 1)[:, None]
    best = jnp.max(jnp.where(mask, ys, -jnp.inf), axis=1)
    return jnp.where((lengths > 0)[:, None], best, 0.0)
