"""Tests for rnnjax/models.py: seq2vec, seq2seq, vec2seq and encoder_decoder.

Truth comes from numpy pooling, ``rnnjax.unroll`` on each sequence alone, a Python loop of
``decode_step`` and, at the end, an encoder–decoder that learns to reverse digit strings.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from gradcheck import check_grads

import rnnjax
from rnnjax import cells, decoding
from rnnjax.cells import LSTMCarry
from rnnjax.layers import Layer
from rnnjax.models import encoder_decoder, seq2seq, seq2vec, vec2seq

B, T, D, H = 4, 6, 4, 8  # one set of sizes, so tests share compiled kernels
LENGTHS = np.array([6, 3, 0, 1], np.int32)

# A head that passes its input through, so a model's output is the pooled body output.
identity = Layer(lambda key, n: ({}, n), lambda p, xs, carry=None, **kw: (None, xs))


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def numpy_pool(ys, lengths, pool):
    out = np.zeros((ys.shape[0], ys.shape[2]), np.float32)
    for b, n in enumerate(lengths):
        if n:
            valid = ys[b, :n]
            out[b] = {"last": valid[-1], "mean": valid.mean(0), "max": valid.max(0)}[pool]
    return out


# ---------------------------------------------------------------- seq2vec, seq2seq


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_seq2vec_pools_valid_steps_like_numpy(pool):
    body = rnnjax.rnn(cells.gru(H))
    model = seq2vec(body, identity, in_size=D, pool=pool)
    params = model.init(jax.random.key(0))
    xs = normal(1, (B, T, D))
    got = model.apply(params, xs, lengths=jnp.asarray(LENGTHS))
    _, ys = body.apply(params["body"], xs, lengths=jnp.asarray(LENGTHS))
    want = numpy_pool(np.asarray(ys), LENGTHS, pool)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[2], 0.0)  # the empty sequence


EMPTY_BODIES = {  # an rnn's own `last`, a residual's, and a body without `last` (pooled after)
    "rnn": lambda: rnnjax.rnn(cells.gru(H)),
    "residual": lambda: rnnjax.serial(rnnjax.dense(H), rnnjax.residual(rnnjax.rnn(cells.gru(H)))),
    "ends_in_dense": lambda: rnnjax.serial(rnnjax.rnn(cells.gru(H)), rnnjax.dense(H)),
}


@pytest.mark.parametrize("body", EMPTY_BODIES)
@pytest.mark.parametrize("lengths", [None, "zeros"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_seq2vec_pools_sequences_of_no_steps_to_zeros(pool, lengths, body):
    """T = 0: every sequence is empty, so every pool gives zeros, as for one empty sequence."""
    model = seq2vec(EMPTY_BODIES[body](), identity, in_size=D, pool=pool)
    xs = jnp.zeros((B, 0, D))
    lengths = None if lengths is None else jnp.zeros((B,), jnp.int32)
    got = model.apply(model.init(jax.random.key(0)), xs, lengths=lengths)
    np.testing.assert_array_equal(got, numpy_pool(np.zeros((B, 0, H)), [0] * B, pool))


LAST_BODIES = {
    "rnn_dropout": lambda: rnnjax.rnn(cells.lstm(H), input_dropout=0.2, carry_dropout=0.3),
    "serial_residual": lambda: rnnjax.serial(
        rnnjax.dense(H),
        rnnjax.dropout(0.2),
        rnnjax.residual(rnnjax.rnn(cells.gru(H), carry_dropout=0.2)),
    ),
}


@pytest.mark.parametrize("body", list(LAST_BODIES))
def test_seq2vec_last_without_all_outputs_equals_pooling_them(body):
    """With ``Layer.last`` seq2vec never stores all outputs; values and gradients equal pooling
    the outputs of ``apply``, dropout keys and lengths included."""
    body = LAST_BODIES[body]()
    assert body.last is not None
    model = seq2vec(body, rnnjax.dense(3), in_size=D)
    params = model.init(jax.random.key(0))
    xs, lengths, key = normal(1, (B, T, D)), jnp.asarray(LENGTHS), jax.random.key(5)

    def pooled_loss(params):
        kb, kh = jax.random.split(key)
        _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
        pooled = rnnjax.models.pool_steps(ys, lengths, "last")
        return jnp.sum(jnp.sin(rnnjax.dense(3).apply(params["head"], pooled, key=kh)[1]))

    def model_loss(params):
        return jnp.sum(jnp.sin(model.apply(params, xs, lengths=lengths, key=key)))

    value, grads = jax.jit(jax.value_and_grad(model_loss))(params)
    want_value, want_grads = jax.jit(jax.value_and_grad(pooled_loss))(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_which_bodies_have_a_final_output():
    forward = rnnjax.rnn(cells.gru(H))
    assert rnnjax.rnn(cells.gru(H), reverse=True).last is not None
    assert rnnjax.bidirectional(cells.gru(H)).last is not None
    assert rnnjax.serial(forward, rnnjax.dense(2)).last is None
    # a residual adds xs at the last valid step: only there is a causal layer's final output
    assert rnnjax.residual(rnnjax.bidirectional(cells.gru(H), merge="sum")).last is None
    assert rnnjax.serial(forward, rnnjax.bidirectional(cells.gru(H))).last is not None


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_seq2vec_of_a_bidirectional_body_takes_each_directions_final_output(merge):
    """Forward at the last valid step, backward at the first (where it ends), as PyTorch's
    ``h_n`` holds them; outputs and gradients."""
    body = rnnjax.bidirectional(cells.lstm(H), merge=merge)
    model = seq2vec(body, rnnjax.dense(3), in_size=D)
    params = model.init(jax.random.key(0))
    xs, lengths = normal(1, (B, T, D)), jnp.asarray(LENGTHS)

    def final_outputs(params):
        p = params["body"]
        _, yf = rnnjax.rnn(cells.lstm(H)).apply(p["forward"], xs, lengths=lengths)
        _, yb = rnnjax.rnn(cells.lstm(H), reverse=True).apply(p["backward"], xs, lengths=lengths)
        last = jnp.maximum(lengths - 1, 0)
        forward = yf[jnp.arange(B), last] * (lengths > 0)[:, None]  # empty: zeros
        pooled = (
            jnp.concatenate([forward, yb[:, 0]], -1) if merge == "concat" else forward + yb[:, 0]
        )
        return jnp.sum(jnp.sin(rnnjax.dense(3).apply(params["head"], pooled)[1]))

    def model_loss(params):
        return jnp.sum(jnp.sin(model.apply(params, xs, lengths=lengths)))

    value, grads = jax.value_and_grad(model_loss)(params)
    want_value, want_grads = jax.value_and_grad(final_outputs)(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_seq2vec_rejects_unknown_pool():
    with pytest.raises(ValueError, match="pool"):
        seq2vec(rnnjax.rnn(cells.gru(H)), identity, in_size=D, pool="sum")


def test_seq2seq_is_zero_past_lengths_and_ignores_padding():
    model = seq2seq(rnnjax.rnn(cells.lstm(H)), rnnjax.dense(2), in_size=D)
    params = model.init(jax.random.key(0))
    xs = normal(1, (B, T, D))
    lengths = jnp.asarray(LENGTHS)
    out = model.apply(params, xs, lengths=lengths)
    assert out.shape == (B, T, 2)
    assert np.all(np.asarray(out)[np.arange(T) >= LENGTHS[:, None]] == 0.0)
    padding = np.arange(T)[None, :, None] >= LENGTHS[:, None, None]
    other = model.apply(params, jnp.where(padding, 9.0, xs), lengths=lengths)
    np.testing.assert_array_equal(out, other)
    alone = model.apply(params, xs[1:2, :3])  # the sequence of length 3 on its own
    np.testing.assert_allclose(out[1, :3], alone[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- vec2seq


@pytest.mark.parametrize("mode", ["init", "input"])
def test_vec2seq_shapes_and_the_vector_matters(mode):
    model = vec2seq(cells.gru(H), rnnjax.dense(2), in_size=D, length=T, mode=mode)
    params = model.init(jax.random.key(0))
    vec = normal(1, (B, D))
    out = model.apply(params, vec)
    assert out.shape == (B, T, 2)
    other = model.apply(params, vec + 1.0)
    assert np.all(np.abs(np.asarray(out - other)).max(axis=(1, 2)) > 1e-3)
    short = model.apply(params, vec, lengths=jnp.asarray(LENGTHS))
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(short[b, :n], out[b, :n], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(short[b, n:], 0.0)


def test_vec2seq_init_mode_sets_every_carry_leaf_through_the_bridge():
    cell = cells.lstm(H)
    model = vec2seq(cell, identity, in_size=D, length=T, mode="init")
    params = model.init(jax.random.key(0))
    vec = normal(1, (B, D))
    bridge = params["bridge"]
    c, h = (np.tanh(vec @ bridge[i]["w"] + bridge[i]["b"]) for i in ("0", "1"))
    xs = jnp.zeros((B, T, 1))
    _, want = rnnjax.unroll(cell, params["cell"], xs, LSTMCarry(c, h))
    np.testing.assert_allclose(model.apply(params, vec), want, rtol=1e-5, atol=1e-6)


def test_vec2seq_input_mode_feeds_the_vector_at_every_step():
    cell = cells.gru(H)
    model = vec2seq(cell, identity, in_size=D, length=T, mode="input")
    params = model.init(jax.random.key(0))
    vec = normal(1, (B, D))
    xs = jnp.repeat(vec[:, None], T, axis=1)
    _, want = rnnjax.unroll(cell, params["cell"], xs)
    np.testing.assert_allclose(model.apply(params, vec), want, rtol=1e-6, atol=1e-6)


def test_vec2seq_init_mode_in_float64_matches_central_differences():
    """Under x64 a float64 vector makes float64 inputs, so the bridged carry is float64 too."""
    model = vec2seq(cells.lstm(3), rnnjax.dense(2), in_size=D, length=3, mode="init")
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(0)))
        vec = normal(1, (2, D)).astype(jnp.float64)
        assert model.apply(params, vec).dtype == jnp.float64
        check_grads(model.apply, (params, vec))


def test_vec2seq_rejects_bad_mode_and_bad_vector():
    with pytest.raises(ValueError, match="mode"):
        vec2seq(cells.gru(H), identity, in_size=D, length=T, mode="every")
    model = vec2seq(cells.gru(H), identity, in_size=D, length=T)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        model.apply(model.init(jax.random.key(0)), jnp.ones((B, D + 1)))
    with pytest.raises(ValueError, match="length must be an int >= 1, got -1"):
        vec2seq(cells.gru(H), identity, in_size=D, length=-1)


@pytest.mark.parametrize("pool", ["mean", "max", "seq2seq"])
def test_lengths_are_checked_even_without_a_recurrent_body(pool):
    """A ``dense`` body checks no lengths; the model does, and takes them as a list."""
    body = rnnjax.dense(H)
    model = (
        seq2seq(body, identity, in_size=D)
        if pool == "seq2seq"
        else seq2vec(body, identity, in_size=D, pool=pool)
    )
    params, xs = model.init(jax.random.key(0)), normal(1, (B, T, D))
    np.testing.assert_array_equal(
        model.apply(params, xs, lengths=LENGTHS.tolist()), model.apply(params, xs, lengths=LENGTHS)
    )
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\) = \[B\], got \(1,\)"):
        model.apply(params, xs, lengths=jnp.array([2]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\], got min 0 and max 7"):
        model.apply(params, xs, lengths=jnp.array([7, 1, 0, 2]))


# ---------------------------------------------------------------- encoder_decoder

SRC_V, TGT_V, S = 7, 9, 5


def small(encoder, decoder_cell, **kw):
    return encoder_decoder(
        encoder,
        decoder_cell,
        src_embed=rnnjax.embed(SRC_V, D),
        tgt_embed=rnnjax.embed(TGT_V, D),
        head=rnnjax.dense(TGT_V),
        **kw,
    )


def tokens(seed, shape, vocab):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


def test_encoder_decoder_teacher_forcing_shapes_and_zero_past_target_lengths():
    model = small(rnnjax.rnn(cells.lstm(H)), cells.lstm(H))
    params = model.init(jax.random.key(0))
    assert "bridge" not in params  # identical carries pass on unchanged
    src, tgt = tokens(1, (B, S), SRC_V), tokens(2, (B, T), TGT_V)
    logits = model.apply(params, src, tgt, src_lengths=jnp.array([5, 2, 1, 3]))
    assert logits.shape == (B, T, TGT_V)
    masked = model.apply(params, src, tgt, tgt_lengths=jnp.asarray(LENGTHS))
    assert np.all(np.asarray(masked)[np.arange(T) >= LENGTHS[:, None]] == 0.0)


@pytest.mark.parametrize("last", [False, True], ids=["all_outputs", "last_output"])
def test_identity_bridge_passes_the_encoder_carry_and_lengths_ignore_padding(last):
    """Without attention an encoder with ``Layer.last`` keeps only its last output."""
    encoder = rnnjax.serial(rnnjax.rnn(cells.gru(H)), rnnjax.dropout(0.5))
    if last:
        encoder = rnnjax.serial(rnnjax.dropout(0.5), rnnjax.rnn(cells.gru(H)))
    assert (encoder.last is not None) == last
    model = small(encoder, cells.gru(H), bridge="identity")
    params = model.init(jax.random.key(0))
    src, lengths = tokens(1, (B, S), SRC_V), jnp.array([5, 2, 1, 3])
    _, xs = rnnjax.embed(SRC_V, D).apply(params["src_embed"], src)
    gru_params = params["encoder"]["1" if last else "0"]
    want, _ = rnnjax.unroll(cells.gru(H), gru_params, xs, lengths=lengths)
    np.testing.assert_array_equal(model.encode(params, src, lengths), want)
    tgt = tokens(2, (B, T), TGT_V)
    logits = model.apply(params, src, tgt, src_lengths=lengths)
    padding = np.arange(S) >= np.asarray(lengths)[:, None]
    other = model.apply(params, jnp.where(padding, SRC_V - 1, src), tgt, src_lengths=lengths)
    np.testing.assert_array_equal(logits, other)
    alone = model.apply(params, src[1:2, :2], tgt[1:2])
    np.testing.assert_allclose(logits[1], alone[0], rtol=1e-5, atol=1e-5)


def test_deep_encoder_matches_a_stacked_decoder_by_identity():
    encoder = rnnjax.serial(rnnjax.rnn(cells.lstm(H)), rnnjax.rnn(cells.gru(H)))
    model = small(encoder, cells.stack(cells.lstm(H), cells.gru(H)))
    params = model.init(jax.random.key(0))
    assert "bridge" not in params
    carry = model.encode(params, tokens(1, (B, S), SRC_V))
    assert isinstance(carry, tuple) and isinstance(carry[0], LSTMCarry)
    assert carry[1].shape == (B, H)


@pytest.mark.parametrize(
    "encoder",
    [rnnjax.bidirectional(cells.gru(H)), rnnjax.serial(rnnjax.rnn(cells.gru(H)))],
    ids=["bidirectional", "serial"],
)
def test_dense_bridge_reads_every_carry_leaf(encoder):
    model = small(encoder, cells.lstm(H), bridge="auto")
    params = model.init(jax.random.key(0))
    src = tokens(1, (B, S), SRC_V)
    carry = model.encode(params, src)
    assert isinstance(carry, LSTMCarry) and carry.c.shape == carry.h.shape == (B, H)
    _, xs = rnnjax.embed(SRC_V, D).apply(params["src_embed"], src)
    enc, _ = encoder.apply(params["encoder"], xs)
    flat = np.concatenate([np.asarray(a) for a in jax.tree.leaves(enc)], axis=-1)
    bridge = params["bridge"]
    np.testing.assert_allclose(
        carry.h, np.tanh(flat @ bridge["1"]["w"] + bridge["1"]["b"]), rtol=1e-5, atol=1e-6
    )


def test_bridge_errors_are_clear():
    with pytest.raises(ValueError, match="bridge must be one of"):
        small(rnnjax.rnn(cells.gru(H)), cells.gru(H), bridge="last")
    with pytest.raises(ValueError, match=r"bridge='identity'.*\(8,\) and LSTMCarry"):
        small(rnnjax.rnn(cells.gru(H)), cells.lstm(H), bridge="identity").init(jax.random.key(0))
    with pytest.raises(ValueError, match="final carry is empty"):
        small(rnnjax.serial(rnnjax.dense(H)), cells.gru(H)).init(jax.random.key(0))


@pytest.mark.parametrize(
    "bridge, attention", [("auto", "none"), ("dense", "luong")], ids=["identity", "dense_luong"]
)
def test_encoder_decoder_in_float64_matches_central_differences(bridge, attention):
    """Under x64 with float64 params the embeddings, hence the decoder's inputs and carry, are
    float64: the bridge must hand the decoder a float64 carry (and "auto" stay identity)."""
    model = small(rnnjax.rnn(cells.gru(3)), cells.gru(3), bridge=bridge, attention=attention)
    params = model.init(jax.random.key(0))
    src, tgt = tokens(1, (2, 3), SRC_V), tokens(2, (2, 2), TGT_V)

    def logits(params):
        return model.apply(params, src, tgt, src_lengths=jnp.array([3, 2]))

    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        assert logits(params64).dtype == jnp.float64
        check_grads(logits, (params64,))


def test_decode_step_loop_equals_teacher_forcing():
    model = small(rnnjax.bidirectional(cells.lstm(H)), cells.gru(H))
    params = model.init(jax.random.key(0))
    src, tgt = tokens(1, (B, S), SRC_V), tokens(2, (B, T), TGT_V)
    want = model.apply(params, src, tgt)
    carry = model.encode(params, src)
    decode_step = jax.jit(model.decode_step)
    for t in range(T):
        carry, logits = decode_step(params, carry, tgt[:, t])
        np.testing.assert_allclose(logits, want[:, t], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- learning to reverse strings

START, END, V, MAX_DIGITS = 10, 11, 12, 5


def reversal_data(rng, n, exclude=None):
    """Digit strings of 3–5 digits and their reversals (+ END), right-padded."""
    lengths = rng.integers(3, MAX_DIGITS + 1, 2 * n)
    src = np.where(np.arange(MAX_DIGITS) < lengths[:, None], rng.integers(0, 10, (2 * n, 5)), 0)
    keep = np.ones(2 * n, bool) if exclude is None else ~np.isin(ids(src, lengths), ids(*exclude))
    src, lengths = src[keep][:n], lengths[keep][:n]
    t = np.arange(MAX_DIGITS + 1)
    source_pos = np.clip(lengths[:, None] - 1 - t, 0, MAX_DIGITS - 1)
    tgt_out = np.where(t < lengths[:, None], np.take_along_axis(src, source_pos, 1), END)
    tgt_in = np.concatenate([np.full((len(src), 1), START), tgt_out[:, :-1]], axis=1)
    return tuple(a.astype(np.int32) for a in (src, lengths, tgt_in, tgt_out))


def ids(src, lengths):
    return src @ (10 ** np.arange(MAX_DIGITS)) + lengths * 10**MAX_DIGITS


@pytest.fixture(scope="module")
def reverser():
    """An LSTM encoder–decoder trained with adam to reverse digit strings (~10 s on one core)."""
    model = encoder_decoder(
        rnnjax.rnn(cells.lstm(64)),
        cells.lstm(64),
        src_embed=rnnjax.embed(10, 32),
        tgt_embed=rnnjax.embed(V, 32),
        head=rnnjax.dense(V),
    )
    tx = optax.adam(1e-2)

    def loss(params, src, lengths, tgt_in, tgt_out):
        logits = model.apply(params, src, tgt_in, src_lengths=lengths, tgt_lengths=lengths + 1)
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, tgt_out)
        mask = jnp.arange(MAX_DIGITS + 1) <= lengths[:, None]
        return jnp.sum(xent * mask) / jnp.sum(mask)

    @jax.jit
    def train_step(params, opt_state, batch):
        grads = jax.grad(loss)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    held_out = reversal_data(np.random.default_rng(1), 500)
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0))
    opt_state = tx.init(params)
    for _ in range(600):
        batch = reversal_data(rng, 128, exclude=held_out[:2])
        params, opt_state = train_step(params, opt_state, batch)
    return model, params, held_out


def exact_match(tokens, tgt_out):
    return float(np.mean(np.all(np.asarray(tokens) == tgt_out, axis=1)))


def decode_options(held_out):
    src, lengths, _, _ = held_out
    return dict(src=src, src_lengths=lengths, start_token=START, end_token=END, max_length=6)


def test_encoder_decoder_learns_to_reverse_strings(reverser):
    model, params, held_out = reverser
    tokens, lengths = decoding.greedy(model, params, **decode_options(held_out))
    assert exact_match(tokens, held_out[3]) >= 0.95
    assert np.mean(np.asarray(lengths) == held_out[1]) >= 0.95


def test_trained_beam_of_one_is_greedy_and_beam_of_four_is_no_worse(reverser):
    model, params, held_out = reverser
    options = decode_options(held_out)
    greedy_tokens, greedy_lengths = decoding.greedy(model, params, **options)
    tokens, lengths, _ = decoding.beam_search(model, params, **options, beam_size=1)
    np.testing.assert_array_equal(tokens, greedy_tokens)
    np.testing.assert_array_equal(lengths, greedy_lengths)
    tokens4, _, _ = decoding.beam_search(model, params, **options, beam_size=4)
    assert exact_match(tokens4, held_out[3]) >= exact_match(greedy_tokens, held_out[3])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: rnnjax.rnn(rnnjax.dense(3)), "rnn's cell must be a Cell (e.g. rnnjax.cells"),
        (lambda: rnnjax.rnn(cells.gru(3), remats=2), "rnn got unknown options ['remats']"),
        (
            lambda: rnnjax.unroll(rnnjax.rnn(cells.gru(3)), {}, jnp.ones((1, 2, 3))),
            "unroll's cell must be a Cell (e.g. rnnjax.cells.lstm(64)), got a Layer",
        ),
        (lambda: rnnjax.bidirectional(cells.gru(3), rnnjax.dense(3)), "got a Layer"),
        (lambda: rnnjax.serial(rnnjax.rnn(cells.gru(3)), cells.gru(3)), "serial's layer 1"),
        (lambda: rnnjax.residual(cells.gru(3)), "residual's layer must be a Layer"),
        (lambda: rnnjax.dense(0), "dense's size must be an int >= 1, got 0"),
        (
            lambda: rnnjax.serial(rnnjax.dense(3)).init(jax.random.key(0), 0),
            "dense's input size must be an int >= 1, got 0",  # was a ZeroDivisionError
        ),
        (lambda: rnnjax.embed(10, 0), "embed's size must be an int >= 1, got 0"),
        (lambda: seq2vec(cells.gru(H), identity, in_size=D), "body must be a Layer"),
        (lambda: seq2seq(rnnjax.rnn(cells.gru(H)), identity, in_size=0), "in_size must be"),
        (lambda: vec2seq(rnnjax.rnn(cells.gru(H)), identity, in_size=D, length=2), "a Cell"),
        (
            lambda: encoder_decoder(
                rnnjax.rnn(cells.gru(H)),
                rnnjax.rnn(cells.gru(H)),
                src_embed=rnnjax.embed(5, 3),
                tgt_embed=rnnjax.embed(5, 3),
                head=rnnjax.dense(5),
            ),
            "decoder_cell must be a Cell",
        ),
    ],
)
def test_pieces_of_the_wrong_kind_or_size_are_refused_where_the_model_is_built(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()


def _translator(units):
    return encoder_decoder(
        rnnjax.rnn(cells.gru(units)),
        cells.gru(units),
        src_embed=rnnjax.embed(5, 3),
        tgt_embed=rnnjax.embed(5, 3),
        head=rnnjax.dense(5),
    )


def test_params_of_another_model_are_named_by_their_whole_path():
    """A missing entry failed on a bare KeyError, a wrong shape deep inside one layer with the
    path inside that layer only."""
    xs, tokens = jnp.ones((B, T, D)), jnp.ones((B, T), jnp.int32)
    classifier = seq2vec(rnnjax.rnn(cells.gru(H)), rnnjax.dense(3), in_size=D)
    params = classifier.init(jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("missing ['head']['b'], ['head']['w']")):
        classifier.apply({"body": params["body"]}, xs)
    wider = seq2vec(rnnjax.rnn(cells.gru(H)), rnnjax.dense(4), in_size=D).init(jax.random.key(0))
    want = f"['head']['w'] ({H}, 4) (expected ({H}, 3))"
    with pytest.raises(ValueError, match=re.escape(want)):
        jax.jit(classifier.apply)(wider, xs)
    translator = _translator(H)
    other = _translator(H + 1).init(jax.random.key(0))
    want = f"['encoder']['wh'] ({H + 1}, {3 * (H + 1)}) (expected ({H}, {3 * H}))"
    for call in (
        lambda: translator.apply(other, tokens, tokens),
        lambda: decoding.greedy(
            translator, other, tokens, start_token=1, end_token=2, max_length=3
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(want)):
            call()
    translator.apply(translator.init(jax.random.key(0)), tokens, tokens)  # its own params pass
