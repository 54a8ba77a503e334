"""Greedy, sampled and beam-search decoding for ``encoder_decoder`` models, compiled with jit.

All three loop over steps with ``lax.while_loop`` (static shapes; the loop stops early once every
hypothesis has emitted ``end_token``). Tokens come back ``[B, max_length]``, padded with
``end_token`` after it is emitted; ``lengths`` counts the tokens before the first
``end_token`` (``max_length`` if there is none), so ``tokens[b, :lengths[b]]`` is the output.
"""

import functools
from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import sampling
from rnnjax._checks import check_fed_back_ids, check_kind, check_size, real_number
from rnnjax.models import EncoderDecoder
from rnnjax.models._shapes import checked_lengths

_STATIC = ("model", "start_token", "end_token", "max_length")


def _checked_before_jit(decode):
    """``decode`` (jitted) with what jit would let pass checked while still concrete: the
    model's kind, ``src_lengths`` (under jit a length past the source cannot raise, and would
    read its padding), a beam's ``length_penalty``, and sampling's key and options."""

    @functools.wraps(decode)
    def checked(model, params, src, *, src_lengths=None, **options):
        hint = "rnnjax.encoder_decoder(...); of an rnnjax.nnx module, pass module.model"
        check_kind("model", model, EncoderDecoder, hint)
        if src_lengths is not None:
            checked_lengths(src, src_lengths)
        penalty = options.get("length_penalty", 0.0)
        if not isinstance(penalty, jax.core.Tracer) and not _finite(penalty):
            raise ValueError(f"length_penalty must be a finite number, got {penalty!r}")
        if "key" in options:
            sampling.check_key(options["key"])
            sampling.check_options(
                options.get("temperature", 1.0), options.get("top_k"), options.get("top_p")
            )
        return decode(model, params, src, src_lengths=src_lengths, **options)

    return checked


def _finite(value) -> bool:
    return real_number(value) and bool(np.isfinite(float(value)))


@_checked_before_jit
@functools.partial(jax.jit, static_argnames=_STATIC)
def greedy(
    model: EncoderDecoder,
    params,
    src: jax.Array,
    *,
    src_lengths: jax.Array | None = None,
    start_token: int,
    end_token: int,
    max_length: int,
) -> tuple[jax.Array, jax.Array]:
    """Emits the most likely token at every step.

    Args:
      model: an ``EncoderDecoder`` (static: closed over by jit).
      params: its params.
      src: int source tokens ``[B, S]``; ``src_lengths`` optional int ``[B]``.
      start_token: the decoder's first input; end_token: ends a sequence.
      max_length: number of steps L.

    Returns:
      ``(tokens [B, L] int32, lengths [B] int32)``.

    Example:
      >>> tokens, lengths = rnnjax.decoding.greedy(model, params, src, start_token=1,
      ...                                          end_token=2, max_length=20)
    """

    def most_likely(t, logits):
        return jnp.argmax(logits, axis=-1)

    return _decode_one_by_one(
        model, params, src, src_lengths, start_token, end_token, max_length, most_likely
    )


@_checked_before_jit
@functools.partial(jax.jit, static_argnames=(*_STATIC, "top_k"))
def sample(
    model: EncoderDecoder,
    params,
    src: jax.Array,
    *,
    key: jax.Array,
    src_lengths: jax.Array | None = None,
    start_token: int,
    end_token: int,
    max_length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Draws every step's token from the decoder's distribution (ancestral sampling), for
    varied outputs where ``greedy`` and ``beam_search`` give the single most likely one.

    Args:
      model, params, src, src_lengths, start_token, end_token, max_length: as for ``greedy``.
      key: a PRNG key; step t draws with ``jax.random.fold_in(key, t)``, so the same key gives
        the same tokens.
      temperature, top_k, top_p: as for ``rnnjax.sampling.draw`` (``top_k=1`` is greedy);
        temperature and top_p may change without recompiling.

    Returns:
      ``(tokens [B, L] int32, lengths [B] int32)``, as ``greedy``.

    Example:
      >>> tokens, lengths = rnnjax.decoding.sample(model, params, src, key=key, start_token=1,
      ...                                          end_token=2, max_length=20, temperature=0.7)
    """

    def drawn(t, logits):
        step_key = jax.random.fold_in(key, t)
        return sampling.draw(step_key, logits, temperature=temperature, top_k=top_k, top_p=top_p)

    return _decode_one_by_one(
        model, params, src, src_lengths, start_token, end_token, max_length, drawn
    )


def _decode_one_by_one(model, params, src, src_lengths, start_token, end_token, max_length, pick):
    """Feeds back, step by step, the token ``pick(t, logits [B, V])`` chooses."""
    check_size("max_length", max_length)
    batch = src.shape[0]
    tokens = jnp.full((batch, max_length), end_token, jnp.int32)
    first = jnp.full((batch,), start_token, jnp.int32)
    carry = model.encode(params, src, src_lengths)
    _check_tokens(model, params, carry, start_token, end_token)
    init = (0, carry, first, jnp.zeros((batch,), bool), tokens)

    def step(loop):
        t, carry, last, done, tokens = loop
        carry, logits = model.decode_step(params, carry, last)
        token = jnp.where(done, end_token, pick(t, logits)).astype(jnp.int32)
        return t + 1, carry, token, done | (token == end_token), tokens.at[:, t].set(token)

    def running(loop):
        return (loop[0] < max_length) & ~jnp.all(loop[3])

    *_, tokens = jax.lax.while_loop(running, step, init)
    return tokens, jnp.sum(tokens != end_token, axis=1, dtype=jnp.int32)


class _Beams(NamedTuple):
    tokens: jax.Array  # [B, K, L] int32
    log_probs: jax.Array  # [B, K] float32, summed over the hypothesis
    steps: jax.Array  # [B, K] int32, tokens generated including end_token
    done: jax.Array  # [B, K] bool


@_checked_before_jit
@functools.partial(jax.jit, static_argnames=(*_STATIC, "beam_size"))
def beam_search(
    model: EncoderDecoder,
    params,
    src: jax.Array,
    *,
    src_lengths: jax.Array | None = None,
    start_token: int,
    end_token: int,
    max_length: int,
    beam_size: int,
    length_penalty: float = 0.6,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Keeps the ``beam_size`` best hypotheses by length-normalised log-probability.

    A hypothesis of n generated tokens (its ``end_token`` included) scores
    ``log P / ((5 + n) / 6) ** length_penalty`` (GNMT, Wu et al. 2016). A finished hypothesis
    stays in the beam with its score frozen at its real length and competes with live ones; the
    search ends when all have finished or at ``max_length``. With ``beam_size=1`` it is greedy.

    Args:
      model, params, src, src_lengths, start_token, end_token, max_length: as for ``greedy``.
      beam_size: K hypotheses per example.
      length_penalty: the exponent α; 0 ranks by log-probability alone.

    Returns:
      ``(tokens [B, L] int32, lengths [B] int32, scores [B] float32)`` of each example's best
      hypothesis; ``scores`` are its normalised log-probabilities.

    Example:
      >>> tokens, lengths, scores = rnnjax.decoding.beam_search(
      ...     model, params, src, start_token=1, end_token=2, max_length=20, beam_size=4)
    """
    check_size("max_length", max_length)
    check_size("beam_size", beam_size)
    batch, k = src.shape[0], beam_size
    carry = model.encode(params, src, src_lengths)
    _check_tokens(model, params, carry, start_token, end_token)
    carry = jax.tree.map(lambda c: jnp.repeat(c, k, axis=0), carry)
    beams = _Beams(
        tokens=jnp.full((batch, k, max_length), end_token, jnp.int32),
        # Only the first beam is live at the start, so the first step's K picks are distinct.
        log_probs=jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf), (batch, 1)),
        steps=jnp.zeros((batch, k), jnp.int32),
        done=jnp.zeros((batch, k), bool),
    )

    def step(loop):
        t, carry, beams = loop
        last = jnp.where(t == 0, start_token, beams.tokens[:, :, jnp.maximum(t - 1, 0)])
        carry, logits = model.decode_step(params, carry, last.reshape(-1))
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
        log_p = log_p.reshape(batch, k, logits.shape[-1])  # sizes spelt out: B may be 0
        beams, parents = _extend(beams, log_p, t, end_token, length_penalty)
        rows = (jnp.arange(batch)[:, None] * k + parents).reshape(-1)
        return t + 1, jax.tree.map(lambda c: c[rows], carry), beams

    def running(loop):
        beams = loop[2]  # a beam left at -inf (fewer candidates than K) can never finish
        return (loop[0] < max_length) & ~jnp.all(beams.done | jnp.isneginf(beams.log_probs))

    _, _, beams = jax.lax.while_loop(running, step, (0, carry, beams))
    scores = beams.log_probs / _penalty(beams.steps, length_penalty)
    best = jnp.argmax(scores, axis=1)
    tokens = jnp.take_along_axis(beams.tokens, best[:, None, None], axis=1)[:, 0]
    lengths = jnp.sum(tokens != end_token, axis=1, dtype=jnp.int32)
    return tokens, lengths, jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0]


def _extend(beams: _Beams, log_p, t, end_token: int, alpha: float):
    """One step: each beam's V continuations, of which the K best by normalised score stay."""
    batch, k, vocab = log_p.shape
    # A finished hypothesis has one continuation, end_token, which leaves its score as it is.
    frozen = jnp.where(jnp.arange(vocab) == end_token, 0.0, -jnp.inf)
    cand = beams.log_probs[..., None] + jnp.where(beams.done[..., None], frozen, log_p)
    steps = beams.steps + (~beams.done).astype(jnp.int32)
    ranked = cand / _penalty(steps, alpha)[..., None]
    _, picks = jax.lax.top_k(ranked.reshape(batch, k * vocab), k)
    parents, words = picks // vocab, (picks % vocab).astype(jnp.int32)

    def from_parent(a):
        return jnp.take_along_axis(a, parents.reshape(parents.shape + (1,) * (a.ndim - 2)), 1)

    new = _Beams(
        tokens=from_parent(beams.tokens).at[:, :, t].set(words),
        log_probs=jnp.take_along_axis(cand.reshape(batch, k * vocab), picks, axis=1),
        steps=from_parent(steps),
        done=from_parent(beams.done) | (words == end_token),
    )
    return new, parents


def _penalty(steps: jax.Array, alpha: float) -> jax.Array:
    return ((5.0 + steps.astype(jnp.float32)) / 6.0) ** alpha


def _check_tokens(model, params, carry, start_token: int, end_token: int) -> None:
    """Checks both tokens are ids of the decoder's vocabulary (its logits' size V), and that
    its target embedding takes every id the head can emit: an id out of range would be fed to
    the embedding (NaN under jit) or never be emitted. The probes run on the first row of the
    carry: the batch may be symbolic (``jax.export``), or empty."""
    rows = 0 if jax.tree.leaves(carry)[0].shape[0] == 0 else 1
    first_row = jax.tree.map(lambda c: c[:rows], carry)
    tokens = jax.ShapeDtypeStruct((rows,), jnp.int32)
    _, logits = jax.eval_shape(model.decode_step, params, first_row, tokens)
    vocab = logits.shape[-1]
    for name, token in (("start_token", start_token), ("end_token", end_token)):
        if isinstance(token, bool) or not isinstance(token, Integral) or not 0 <= token < vocab:
            raise ValueError(f"{name} must be an int in [0, V={vocab}), got {token!r}")

    def step(params, tokens):
        return model.decode_step(params, first_row, tokens)

    if rows:  # nothing is fed back to an empty batch
        check_fed_back_ids("the decoder", step, params, (rows,), vocab)
