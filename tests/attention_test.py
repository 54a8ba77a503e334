"""Tests for the attention decoder of ``rnnjax.models.encoder_decoder`` (Luong and Bahdanau).

Truth: one decode step written in numpy from the papers' equations, the weights as a masked
softmax (sum 1 on valid steps, exactly 0 on padding), a Python
loop of ``decode_step`` against teacher forcing, a source alone against the same source padded,
central differences for the gradient, and greedy decoding against a beam of one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import check_grads, fast_jit

import rnnjax
from rnnjax import cells, decoding
from rnnjax.models import AttentionCarry, attention_weights, encoder_decoder

B, S, T, D, H = 4, 6, 5, 4, 8
SRC_V, TGT_V = 7, 9
SRC_LENGTHS = jnp.array([6, 2, 1, 4])
# Both scores, and input feeding on and off, in two models (compiling is nearly all the time).
KINDS = [("luong", True), ("bahdanau", False)]
IDS = ["luong_feeding", "bahdanau"]


def attentive(attention, input_feeding, encoder=None):
    return encoder_decoder(
        encoder or rnnjax.bidirectional(cells.gru(H)),
        cells.lstm(H),
        src_embed=rnnjax.embed(SRC_V, D),
        tgt_embed=rnnjax.embed(TGT_V, D),
        head=rnnjax.dense(TGT_V),
        attention=attention,
        input_feeding=input_feeding,
    )


def tokens(seed, shape, vocab):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


@pytest.fixture(scope="module", params=KINDS, ids=IDS)
def model_and_params(request):
    model = attentive(*request.param)
    return model, model.init(jax.random.key(0))


@pytest.fixture(scope="module")
def apply(model_and_params):
    model, _ = model_and_params
    return fast_jit(model.apply)


def test_weights_sum_to_one_on_valid_steps_and_are_zero_on_padding(model_and_params):
    model, params = model_and_params
    carry = model.encode(params, tokens(1, (B, S), SRC_V), SRC_LENGTHS)
    assert isinstance(carry, AttentionCarry) and carry.memory.shape == (B, S, 2 * H)
    for t in range(3):
        carry, _ = model.decode_step(params, carry, tokens(2 + t, (B,), TGT_V))
        weights = np.asarray(carry.weights)
        padding = np.arange(S) >= np.asarray(SRC_LENGTHS)[:, None]
        assert np.all(weights[padding] == 0.0)
        assert np.all(weights[~padding] > 0.0)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)


def test_masked_softmax_of_an_empty_source_is_all_zero():
    mask = jnp.array([[True, True, False], [False, False, False]])
    weights = attention_weights(jnp.array([[1.0, 2.0, 30.0], [1.0, 2.0, 3.0]]), mask)
    np.testing.assert_allclose(weights[0], [1 / (1 + np.e), np.e / (1 + np.e), 0.0], rtol=1e-6)
    np.testing.assert_array_equal(weights[1], 0.0)


def test_a_decode_step_follows_the_papers_equations_in_numpy(model_and_params):
    """Scores (Luong's ``h·W_a m``, Bahdanau's ``v·tanh(W h + U m)``), softmax over the valid
    steps, context ``Σ a m``, ``h̃ = tanh(W_c [c; h] + b_c)`` and the head, in float64 from the
    cell's output ``h`` (the cell is checked against its own reference in cells_test.py)."""
    model, params = model_and_params
    carry = model.encode(params, tokens(1, (B, S), SRC_V), SRC_LENGTHS)
    feeding = params["decoder"]["wx"].shape[0] == D + H
    feed = np.random.default_rng(0).standard_normal((B, H)).astype(np.float32)
    carry, token = carry._replace(feed=jnp.asarray(feed)), tokens(2, (B,), TGT_V)
    new, logits = fast_jit(model.decode_step)(params, carry, token)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["tgt_embed"]["table"][np.asarray(token)]
    x = np.concatenate([x, feed], axis=-1) if feeding else x
    _, h = cells.lstm(H).apply(params["decoder"], carry.cell, jnp.asarray(x, jnp.float32))
    h, memory = np.asarray(h, np.float64), np.asarray(carry.memory, np.float64)
    att = p["attention"]
    if "query" in att:  # bahdanau
        score = np.tanh(memory @ att["memory"] + (h @ att["query"])[:, None]) @ att["v"]
    else:
        score = np.einsum("bh,bsh->bs", h, memory @ att["memory"])
    valid = np.arange(S) < np.asarray(SRC_LENGTHS)[:, None]
    e = np.where(valid, np.exp(score - np.where(valid, score, -np.inf).max(-1, keepdims=True)), 0)
    weights = e / e.sum(-1, keepdims=True)
    context = np.einsum("bs,bsm->bm", weights, memory)
    combine = att["combine"]
    state = np.tanh(np.concatenate([context, h], axis=-1) @ combine["w"] + combine["b"])
    np.testing.assert_allclose(new.weights, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.feed, state, rtol=1e-5, atol=1e-6)
    want = state @ p["head"]["w"] + p["head"]["b"]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_teacher_forcing_equals_stepping_decode_step(model_and_params, apply):
    model, params = model_and_params
    src, tgt = tokens(1, (B, S), SRC_V), tokens(2, (B, T), TGT_V)
    want = apply(params, src, tgt, src_lengths=SRC_LENGTHS)
    carry = model.encode(params, src, SRC_LENGTHS)
    decode_step = fast_jit(model.decode_step)
    for t in range(T):
        carry, logits = decode_step(params, carry, tgt[:, t])
        np.testing.assert_allclose(logits, want[:, t], rtol=1e-5, atol=1e-5)


def test_padding_changes_nothing(model_and_params, apply):
    _, params = model_and_params
    src, tgt = tokens(1, (B, S), SRC_V), tokens(2, (B, T), TGT_V)
    logits = apply(params, src, tgt, src_lengths=SRC_LENGTHS)
    padding = np.arange(S) >= np.asarray(SRC_LENGTHS)[:, None]
    repadded = apply(params, jnp.where(padding, 3, src), tgt, src_lengths=SRC_LENGTHS)
    np.testing.assert_array_equal(logits, repadded)
    # Example 1 holds 2 valid source steps: alone, unpadded, it must give the same logits.
    alone = apply(params, jnp.tile(src[1:2, :2], (B, 1)), jnp.tile(tgt[1:2], (B, 1)))
    np.testing.assert_allclose(logits[1], alone[0], rtol=1e-5, atol=1e-5)


def test_target_lengths_zero_the_logits_past_them(model_and_params, apply):
    _, params = model_and_params
    tgt_lengths = jnp.array([5, 3, 0, 1])
    logits = apply(
        params, tokens(1, (B, S), SRC_V), tokens(2, (B, T), TGT_V), tgt_lengths=tgt_lengths
    )
    assert logits.shape == (B, T, TGT_V)
    past = np.arange(T) >= np.asarray(tgt_lengths)[:, None]
    assert np.all(np.asarray(logits)[past] == 0.0) and np.all(np.asarray(logits)[~past] != 0.0)


@pytest.mark.parametrize("kind", ["luong", "bahdanau"])
def test_decode_step_gradients_match_central_differences(kind):
    """In float64 (the cells' zero initial carry is float32, so the carry is cast after encode):
    two steps of input-fed attention, differentiated by params, cell carry and memory."""
    model = encoder_decoder(
        rnnjax.rnn(cells.gru(3)),
        cells.gru(3),
        src_embed=rnnjax.embed(SRC_V, 2),
        tgt_embed=rnnjax.embed(TGT_V, 2),
        head=rnnjax.dense(TGT_V),
        attention=kind,
        input_feeding=True,
    )
    params = model.init(jax.random.key(0))
    carry = model.encode(params, tokens(1, (2, 3), SRC_V), jnp.array([3, 2]))
    tgt = tokens(2, (2, 2), TGT_V)

    def logits(params, cell, memory, keys):
        step_carry = carry._replace(cell=cell, memory=memory, keys=keys)
        step_carry, first = model.decode_step(params, step_carry, tgt[:, 0])
        return first + model.decode_step(params, step_carry, tgt[:, 1])[1]

    with jax.enable_x64(True):
        args = (params, carry.cell, carry.memory, carry.keys)
        check_grads(logits, jax.tree.map(lambda a: a.astype(jnp.float64), args))


@pytest.mark.parametrize("model_and_params", KINDS[:1], ids=IDS[:1], indirect=True)
def test_greedy_is_a_beam_of_one(model_and_params):
    model, params = model_and_params
    params = dict(params, head=jax.tree.map(lambda a: a * 4.0, params["head"]))
    options = dict(
        src=tokens(1, (B, S), SRC_V), src_lengths=SRC_LENGTHS, start_token=3, end_token=0
    )
    greedy_tokens, greedy_lengths = decoding.greedy(model, params, **options, max_length=7)
    beam_tokens, beam_lengths, _ = decoding.beam_search(
        model, params, **options, max_length=7, beam_size=1
    )
    np.testing.assert_array_equal(beam_tokens, greedy_tokens)
    np.testing.assert_array_equal(beam_lengths, greedy_lengths)
    wide, _, scores = decoding.beam_search(model, params, **options, max_length=7, beam_size=3)
    assert wide.shape == (B, 7) and np.all(np.isfinite(scores))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="attention must be one of"):
        attentive("dot", False)
    with pytest.raises(ValueError, match="input_feeding=True needs an attention decoder"):
        attentive("none", True)


def test_bad_targets_are_named(model_and_params):
    """The attention decoder steps its own scan, so its targets are checked before it."""
    model, params = model_and_params
    src, tgt = tokens(1, (B, S), SRC_V), tokens(2, (B, 3), TGT_V)
    with pytest.raises(ValueError, match=r"tgt_in must be \[4, T\] \(the source's batch\)"):
        model.apply(params, src, tgt[:1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(4,\)"):
        model.apply(params, src, tgt, tgt_lengths=jnp.array([1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=3\]"):
        model.apply(params, src, tgt, tgt_lengths=jnp.array([4, 1, 1, 1]))
    with pytest.raises(TypeError, match="lengths must have an integer dtype"):
        model.apply(params, src, tgt, src_lengths=jnp.ones(B))
    listed = model.apply(params, src, tgt, tgt_lengths=[3, 2, 1, 0], src_lengths=[6, 2, 1, 4])
    want = model.apply(
        params, src, tgt, tgt_lengths=jnp.array([3, 2, 1, 0]), src_lengths=SRC_LENGTHS
    )
    np.testing.assert_array_equal(listed, want)
