"""Encoder–decoder: the encoder's final carry starts the decoder (bridged), optionally with
attention; ``encode`` and ``decode_step`` are what ``rnnjax.decoding`` needs."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_kind, check_model_params
from rnnjax._vma import varying_like
from rnnjax.cells import Cell
from rnnjax.layers import Layer
from rnnjax.models._attention import AttentionCarry, attention_init, attention_weights, scores
from rnnjax.models._bridge import (
    bridge_apply,
    bridge_init,
    carry_shape,
    flat_size,
    flatten,
    is_identity,
    pass_on,
)
from rnnjax.models._shapes import checked_lengths, valid_mask, zero_past
from rnnjax.unroll import unroll


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
    check_kind("encoder", encoder, Layer)
    check_kind("decoder_cell", decoder_cell, Cell)
    for name, layer in (("src_embed", src_embed), ("tgt_embed", tgt_embed), ("head", head)):
        check_kind(name, layer, Layer)
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
            params["attention"] = attention_init(
                jax.random.fold_in(key, 6), attention, memory_size, units
            )
        fake_src = jax.ShapeDtypeStruct((1, 1, src_size), jnp.float32)
        enc = jax.eval_shape(lambda p, x: encoder.apply(p, x)[0], params["encoder"], fake_src)
        dec = carry_shape(decoder_cell, params["decoder"], 1)
        if not is_identity(bridge, enc, dec):
            params["bridge"] = bridge_init(kb, flat_size(enc), dec)
        return params

    def encode(params, src, src_lengths=None, *, key=None):
        _check_token_shape("src", src, None)  # greedy, sample and beam_search start here
        check_model_params(init, params)
        src_lengths = checked_lengths(src, src_lengths)
        ks, ke = (None, None) if key is None else jax.random.split(key)
        _, xs = src_embed.apply(params["src_embed"], src, key=ks)
        # without attention the encoder's outputs are not read: keep only the last one
        run = encoder.last if not attends and encoder.last is not None else encoder.apply
        enc, memory = run(params["encoder"], xs, lengths=src_lengths, key=ke)
        dec = carry_shape(decoder_cell, params["decoder"], xs.shape[0], target_dtype(params))
        if is_identity(bridge, enc, dec):
            carry = pass_on(enc, dec)
        else:
            carry = bridge_apply(params["bridge"], flatten(enc), dec)
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

    def target_dtype(params):
        """The dtype of the embedded targets, the decoder's inputs (float64 under x64 with
        float64 params), which its carry follows."""
        tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        return jax.eval_shape(tgt_embed.apply, params["tgt_embed"], tokens)[1].dtype

    def step(params, carry, x):
        """One decoder step on an embedded target token ``x [B, E]``: ``(carry, output)``."""
        if not attends:
            return decoder_cell.apply(params["decoder"], carry, x)
        x = jnp.concatenate([x, carry.feed], axis=-1) if input_feeding else x
        cell_carry, h = decoder_cell.apply(params["decoder"], carry.cell, x)
        weights = attention_weights(
            scores(params["attention"], attention, h, carry.keys), carry.mask
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
        _check_token_shape("tgt_in", tgt_in, jnp.shape(src)[0])
        tgt_lengths = checked_lengths(tgt_in, tgt_lengths)
        _, xs = tgt_embed.apply(params["tgt_embed"], tgt_in, key=kt)
        if attends:  # step t reads steps <= t only, so steps past tgt_lengths need no freezing
            carry = varying_like(carry, (params, xs))
            _, ys = jax.lax.scan(lambda c, x: step(params, c, x), carry, jnp.swapaxes(xs, 0, 1))
            ys = jnp.swapaxes(ys, 0, 1)
        else:
            _, ys = unroll(decoder_cell, params["decoder"], xs, carry, lengths=tgt_lengths)
        _, logits = head.apply(params["head"], ys, lengths=tgt_lengths, key=kh)
        return zero_past(logits, tgt_lengths)

    return EncoderDecoder(init, apply, encode, decode_step)


def _check_token_shape(name: str, tokens, batch: int | None) -> None:
    """Checks ``tokens`` is ``[B, T]`` (with ``B == batch`` if given): the attention decoder
    steps its own scan, which checks nothing."""
    shape = tuple(jnp.shape(tokens))
    if len(shape) != 2 or (batch is not None and shape[0] != batch):
        want = "[B, T]" if batch is None else f"[{batch}, T] (the source's batch)"
        raise ValueError(f"{name} must be {want} tokens, got shape {shape}")
