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
from rnnjax.cells._base import glorot_uniform
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
        carry (an ``AttentionCarry`` for an attention decoder).
      decode_step: ``(params, carry, tokens[B]) -> (carry, logits[B, V])``, one decoder step.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]
    encode: Callable[..., Any]
    decode_step: Callable[..., tuple[Any, jax.Array]]


BRIDGES = ("auto", "identity", "dense")
ATTENTIONS = ("none", "luong", "bahdanau")


def encoder_decoder(
    encoder: Layer,
    decoder_cell: Cell,
    *,
    src_embed: Layer,
    tgt_embed: Layer,
    head: Layer,
    bridge: str = "auto",
    attention: str = "none",
    input_feeding: bool = False,
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
      attention: "none", "luong" or "bahdanau": the decoder also attends over the encoder's
        outputs (its memory) at every step, in Luong et al. (2015)'s layout. The cell's output
        ``h_t`` is the query; weights ``a_t = softmax(score(h_t, m_s))`` over valid source steps
        only (padding gets weight 0); context ``c_t = Σ_s a_ts m_s``; the attentional state
        ``h̃_t = tanh(W_c [c_t; h_t] + b_c)`` (size ``decoder_cell.output_size``) goes to the
        head. "luong" scores ``h_t·W_a m_s`` (Luong's "general", multiplicative); "bahdanau"
        scores ``v·tanh(W h_t + U m_s)`` (Bahdanau et al. 2015's additive score, here with
        Luong's current-output query, where Bahdanau's decoder queries with its previous state,
        as in TensorFlow's ``AttentionWrapper``). ``W_a m_s`` and ``U m_s`` are computed once
        per source, in ``encode``; the memory, those keys and the source mask travel in the
        decoder's ``AttentionCarry``, so ``rnnjax.decoding`` works unchanged. The encoder's
        final carry still starts the decoder through the bridge.
      input_feeding: feed ``h̃_{t-1}`` to the cell with the target embedding (Luong's input
        feeding: the decoder knows where it attended before); needs ``attention``.

    Example:
      >>> model = rnnjax.encoder_decoder(
      ...     rnnjax.rnn(rnnjax.cells.lstm(64)), rnnjax.cells.lstm(64),
      ...     src_embed=rnnjax.embed(100, 32), tgt_embed=rnnjax.embed(120, 32),
      ...     head=rnnjax.dense(120))
      >>> logits = model.apply(model.init(jax.random.key(0)), src, tgt_in, src_lengths=lengths)
      >>> attentive = rnnjax.encoder_decoder(  # same pieces, Luong attention with input feeding
      ...     rnnjax.bidirectional(rnnjax.cells.gru(64)), rnnjax.cells.gru(64),
      ...     src_embed=rnnjax.embed(100, 32), tgt_embed=rnnjax.embed(120, 32),
      ...     head=rnnjax.dense(120), attention="luong", input_feeding=True)
    """
    if bridge not in BRIDGES:
        raise ValueError(f"bridge must be one of {BRIDGES}, got {bridge!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if input_feeding and attention == "none":
        raise ValueError("input_feeding=True needs an attention decoder, got attention='none'")
    attends, units = attention != "none", decoder_cell.output_size

    def init(key):
        ks, ke, kt, kd, kh, kb = jax.random.split(key, 6)  # as before attention: same params
        params = {}
        params["src_embed"], src_size = src_embed.init(ks, 0)
        params["encoder"], memory_size = encoder.init(ke, src_size)
        params["tgt_embed"], tgt_size = tgt_embed.init(kt, 0)
        params["decoder"] = decoder_cell.init(kd, tgt_size + (units if input_feeding else 0))
        params["head"], _ = head.init(kh, units)
        if attends:
            params["attention"] = _attention_init(
                jax.random.fold_in(key, 6), attention, memory_size, units
            )
        fake_src = jax.ShapeDtypeStruct((1, 1, src_size), jnp.float32)
        enc = jax.eval_shape(lambda p, x: encoder.apply(p, x)[0], params["encoder"], fake_src)
        dec = _carry_shape(decoder_cell, params["decoder"], (1,))
        if not _is_identity(bridge, enc, dec):
            params["bridge"] = _bridge_init(kb, _flat_size(enc), dec)
        return params

    def encode(params, src, src_lengths=None, *, key=None):
        ks, ke = (None, None) if key is None else jax.random.split(key)
        _, xs = src_embed.apply(params["src_embed"], src, key=ks)
        enc, memory = encoder.apply(params["encoder"], xs, lengths=src_lengths, key=ke)
        dec = _carry_shape(decoder_cell, params["decoder"], (xs.shape[0],))
        if _is_identity(bridge, enc, dec):
            carry = jax.tree.unflatten(jax.tree.structure(dec), jax.tree.leaves(enc))
        else:
            flat = jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(enc)], -1)
            carry = _bridge_apply(params["bridge"], flat, dec)
        if not attends:
            return carry
        batch, time = memory.shape[:2]
        lengths = jnp.full((batch,), time) if src_lengths is None else src_lengths
        return AttentionCarry(
            cell=carry,
            feed=jnp.zeros((batch, units), memory.dtype),
            memory=memory,
            keys=memory @ params["attention"]["memory"],
            mask=valid_mask(lengths, time),
            weights=jnp.zeros((batch, time), memory.dtype),
        )

    def step(params, carry, x):
        """One decoder step on an embedded target token ``x [B, E]``: ``(carry, output)``."""
        if not attends:
            return decoder_cell.apply(params["decoder"], carry, x)
        x = jnp.concatenate([x, carry.feed], axis=-1) if input_feeding else x
        cell_carry, h = decoder_cell.apply(params["decoder"], carry.cell, x)
        weights = attention_weights(
            _scores(params["attention"], attention, h, carry.keys), carry.mask
        )
        context = jnp.einsum("bs,bsm->bm", weights, carry.memory)
        combine = params["attention"]["combine"]
        feed = jnp.tanh(jnp.concatenate([context, h], axis=-1) @ combine["w"] + combine["b"])
        return carry._replace(cell=cell_carry, feed=feed, weights=weights), feed

    def decode_step(params, carry, tokens):
        _, x = tgt_embed.apply(params["tgt_embed"], tokens[:, None])
        carry, y = step(params, carry, x[:, 0])
        _, logits = head.apply(params["head"], y[:, None])
        return carry, logits[:, 0]

    def apply(params, src, tgt_in, *, src_lengths=None, tgt_lengths=None, key=None):
        ke, kt, kh = (None,) * 3 if key is None else jax.random.split(key, 3)
        carry = encode(params, src, src_lengths, key=ke)
        _, xs = tgt_embed.apply(params["tgt_embed"], tgt_in, key=kt)
        if attends:  # step t reads steps <= t only, so steps past tgt_lengths need no freezing
            _, ys = jax.lax.scan(lambda c, x: step(params, c, x), carry, jnp.swapaxes(xs, 0, 1))
            ys = jnp.swapaxes(ys, 0, 1)
        else:
            _, ys = unroll(decoder_cell, params["decoder"], xs, carry, lengths=tgt_lengths)
        _, logits = head.apply(params["head"], ys, lengths=tgt_lengths, key=kh)
        return _zero_past(logits, tgt_lengths)

    return EncoderDecoder(init, apply, encode, decode_step)


class AttentionCarry(NamedTuple):
    """An attention decoder's carry: the cell's carry and what every step attends over.

    Every leaf has the batch axis first, so beam search tiles and reorders it like any carry.
    """

    cell: Any  # the decoder cell's carry
    feed: jax.Array  # [B, H] the last attentional state h̃ (zeros before the first step)
    memory: jax.Array  # [B, S, M] the encoder's outputs
    keys: jax.Array  # [B, S, H] the memory projected once for the score (W_a m or U m)
    mask: jax.Array  # [B, S] bool, true on valid source steps
    weights: jax.Array  # [B, S] the last step's attention weights (zeros before the first)


def attention_weights(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax of ``scores [B, S]`` over the steps where ``mask`` is true; exactly 0 elsewhere
    (all 0 for an empty source)."""
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1) * mask


def _attention_init(key, kind: str, memory_size: int, units: int) -> dict:
    """``memory``: W_a or U ``[M, H]``; additive also ``query`` W ``[H, H]`` and ``v [H]``;
    ``combine``: W_c ``[M + H, H]`` and b_c."""
    km, kq, kv, kc = jax.random.split(key, 4)
    params = {"memory": glorot_uniform(km, (memory_size, units), jnp.float32)}
    if kind == "bahdanau":
        params["query"] = glorot_uniform(kq, (units, units), jnp.float32)
        params["v"] = glorot_uniform(kv, (units, 1), jnp.float32)[:, 0]
    params["combine"], _ = dense(units).init(kc, memory_size + units)
    return params


def _scores(params, kind: str, query: jax.Array, keys: jax.Array) -> jax.Array:
    """``[B, S]`` scores of ``query [B, H]`` against the projected memory ``keys [B, S, H]``."""
    if kind == "luong":
        return jnp.einsum("bh,bsh->bs", query, keys)
    return jnp.tanh(keys + (query @ params["query"])[:, None]) @ params["v"]


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
