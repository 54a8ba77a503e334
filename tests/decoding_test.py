"""Tests for rnnjax/decoding.py: greedy, sampling and beam search against loops, exhaustive
search and known probabilities.

Truth: a Python loop of ``decode_step`` for greedy and sampling; every hypothesis scored by
teacher forcing for beam search (a beam wider than the number of hypotheses must find the best
one); and a hand-built model whose next-token probabilities are a table, where the answer is
worked out by hand, and sampled tokens and lengths must follow it.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from distributions import assert_drawn_from

import rnnjax
from rnnjax import cells
from rnnjax.decoding import beam_search, greedy, sample
from rnnjax.models import EncoderDecoder, encoder_decoder

B, S, D, H = 4, 6, 4, 8
END, START, V = 0, 3, 4
SRC_LENGTHS = jnp.array([6, 2, 1, 4])


@pytest.fixture(scope="module")
def random_model():
    """A small untrained model whose logits are scaled up, so no two hypotheses nearly tie."""
    model = encoder_decoder(
        rnnjax.rnn(cells.lstm(H)),
        cells.gru(H),
        src_embed=rnnjax.embed(7, D),
        tgt_embed=rnnjax.embed(V, D),
        head=rnnjax.dense(V),
    )
    params = model.init(jax.random.key(0))
    params["head"]["w"] = params["head"]["w"] * 4.0
    src = jax.random.randint(jax.random.key(1), (B, S), 0, 7)
    return model, params, src


def assert_a_python_loop_decodes_the_same(random_model, decoded, pick):
    """``decoded`` (tokens, lengths) are what a Python loop of ``decode_step`` feeding back
    ``pick(t, logits)`` gives for 7 steps, cut at the first END and padded with END."""
    model, params, src = random_model
    tokens, lengths = decoded
    carry, last = model.encode(params, src, SRC_LENGTHS), jnp.full((B,), START)
    want = []
    decode_step = jax.jit(model.decode_step)
    for t in range(7):
        carry, logits = decode_step(params, carry, last)
        last = pick(t, logits)
        want.append(np.asarray(last))
    want = np.stack(want, axis=1)
    for b in range(B):
        ends = np.flatnonzero(want[b] == END)
        n = ends[0] if ends.size else 7
        assert lengths[b] == n
        np.testing.assert_array_equal(tokens[b, :n], want[b, :n])
        np.testing.assert_array_equal(tokens[b, n:], END)


DECODE = dict(src_lengths=SRC_LENGTHS, start_token=START, end_token=END, max_length=7)


def test_greedy_equals_a_python_loop_and_pads_with_end(random_model):
    model, params, src = random_model
    decoded = greedy(model, params, src, **DECODE)
    assert_a_python_loop_decodes_the_same(
        random_model, decoded, lambda t, logits: jnp.argmax(logits, axis=-1)
    )
    assert 0 < int(jnp.sum(decoded[1])) < 7 * B  # the test sees both ended and unended outputs


def test_beam_of_one_is_greedy(random_model):
    model, params, src = random_model
    options = dict(src_lengths=SRC_LENGTHS, start_token=START, end_token=END, max_length=7)
    greedy_tokens, greedy_lengths = greedy(model, params, src, **options)
    tokens, lengths, _ = beam_search(model, params, src, **options, beam_size=1)
    np.testing.assert_array_equal(tokens, greedy_tokens)
    np.testing.assert_array_equal(lengths, greedy_lengths)


def test_wide_beam_finds_the_best_hypothesis_of_all(random_model):
    model, params, src = random_model
    length, alpha = 3, 0.6
    hypotheses = [(*prefix, END) for n in range(length) for prefix in nonend(n)]
    hypotheses += list(nonend(length))  # unfinished at max_length
    tokens, lengths, scores = beam_search(
        model,
        params,
        src,
        src_lengths=SRC_LENGTHS,
        start_token=START,
        end_token=END,
        max_length=length,
        beam_size=64,  # more than the 40 hypotheses
        length_penalty=alpha,
    )
    want = np.array(
        [teacher_forced_scores(model, params, src[b], b, hypotheses, alpha) for b in range(B)]
    )
    best = np.argmax(want, axis=1)
    for b in range(B):
        padded = hypotheses[best[b]] + (END,) * (length - len(hypotheses[best[b]]))
        np.testing.assert_array_equal(tokens[b], padded)
        assert lengths[b] == sum(t != END for t in padded)
    np.testing.assert_allclose(scores, want[np.arange(B), best], rtol=1e-5, atol=1e-6)


def nonend(n):
    return itertools.product([t for t in range(V) if t != END], repeat=n)


def teacher_forced_scores(model, params, src_row, b, hypotheses, alpha):
    """GNMT-normalised log-probabilities of every hypothesis for source ``b``."""
    n = len(hypotheses)
    tgt = np.full((n, 3), END)
    for i, h in enumerate(hypotheses):
        tgt[i, : len(h)] = h
    tgt_in = np.concatenate([np.full((n, 1), START), tgt[:, :-1]], axis=1)
    src = jnp.repeat(src_row[None], n, axis=0)
    src_lengths = jnp.full((n,), SRC_LENGTHS[b])
    log_p = jax.nn.log_softmax(model.apply(params, src, tgt_in, src_lengths=src_lengths))
    picked = np.take_along_axis(np.asarray(log_p), tgt[..., None], axis=2)[..., 0]
    steps = np.array([len(h) for h in hypotheses])
    total = np.sum(np.where(np.arange(3) < steps[:, None], picked, 0.0), axis=1)
    return total / ((5.0 + steps) / 6.0) ** alpha


# ---------------------------------------------------------------- a model that is a table

A = 1  # the token that competes with END
TABLE = np.log(
    np.array(
        [  # P(END), P(A), P(2), P(3) at steps 0, 1, 2, 3, 4
            [0.50, 0.45, 0.04, 0.01],
            [0.19, 0.80, 0.005, 0.005],
            [0.19, 0.80, 0.005, 0.005],
            [0.98, 0.01, 0.005, 0.005],
            [0.98, 0.01, 0.005, 0.005],
        ]
    )
)


def table_model():
    """Next-token log-probabilities depend only on the step: the carry counts steps."""

    def encode(params, src, src_lengths=None, *, key=None):
        return jnp.zeros((src.shape[0],), jnp.int32)

    def decode_step(params, carry, tokens):
        return carry + 1, params[jnp.minimum(carry, len(TABLE) - 1)]

    return EncoderDecoder(lambda key: jnp.asarray(TABLE), None, encode, decode_step)


@pytest.mark.parametrize(
    "alpha, want_tokens, want_score",
    [
        # Raw log-probability prefers stopping at once: log 0.5 > log(0.45 · 0.8² · 0.98).
        (0.0, [END] * 5, np.log(0.5)),
        # A strong length penalty prefers the longer hypothesis: 4 steps divide by (9/6)².
        (2.0, [A, A, A, END, END], np.log(0.45 * 0.8**2 * 0.98) / 1.5**2),
    ],
)
def test_length_penalty_changes_the_choice(alpha, want_tokens, want_score):
    model = table_model()
    src = jnp.zeros((2, 1), jnp.int32)
    tokens, lengths, scores = beam_search(
        model,
        model.init(None),
        src,
        start_token=START,
        end_token=END,
        max_length=5,
        beam_size=2,
        length_penalty=alpha,
    )
    np.testing.assert_array_equal(tokens, [want_tokens] * 2)
    np.testing.assert_array_equal(lengths, [want_tokens.index(END)] * 2)
    # The finished [END] hypothesis kept its score while the search went on for 4 steps.
    np.testing.assert_allclose(scores, [want_score] * 2, rtol=1e-6)


def test_greedy_on_the_table_stops_at_once_and_bad_sizes_raise():
    model = table_model()
    src = jnp.zeros((2, 1), jnp.int32)
    options = dict(start_token=START, end_token=END)
    tokens, lengths = greedy(model, model.init(None), src, **options, max_length=5)
    np.testing.assert_array_equal(tokens, np.full((2, 5), END))
    np.testing.assert_array_equal(lengths, [0, 0])
    with pytest.raises(ValueError, match="max_length"):
        greedy(model, model.init(None), src, **options, max_length=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, model.init(None), src, **options, max_length=5, beam_size=0)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 2.5"):
        greedy(model, model.init(None), src, **options, max_length=2.5)


DECODERS = {
    "greedy": greedy,
    "sample": functools.partial(sample, key=jax.random.key(0)),
    "beam_search": functools.partial(beam_search, beam_size=2),
}


@pytest.mark.parametrize("decode", DECODERS)
def test_tokens_outside_the_vocabulary_raise(random_model, decode):
    model, params, src = random_model
    run = DECODERS[decode]
    for tokens in (dict(start_token=V, end_token=END), dict(start_token=START, end_token=-1)):
        name = next(iter(k for k, v in tokens.items() if not 0 <= v < V))
        with pytest.raises(ValueError, match=f"{name} must be an int in \\[0, V={V}\\)"):
            run(model, params, src, **tokens, max_length=3)
    with pytest.raises(ValueError, match="start_token must be an int in .* got True"):
        run(model, params, src, start_token=True, end_token=END, max_length=3)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_head_wider_than_the_target_vocabulary_is_refused(decode):
    """Its extra ids would be fed back and embedded as NaN rows under jit (NaN scores, tokens
    past the vocabulary), so the decoder's embedding is probed with the largest id V - 1."""
    model = encoder_decoder(
        rnnjax.rnn(cells.gru(H)),
        cells.gru(H),
        src_embed=rnnjax.embed(7, D),
        tgt_embed=rnnjax.embed(V, D),
        head=rnnjax.dense(V + 2),
    )
    params, src = model.init(jax.random.key(0)), jnp.ones((B, S), jnp.int32)
    with pytest.raises(
        ValueError, match=rf"decoder feeds back ids up to V - 1 = {V + 1}, V = {V + 2} .*"
    ):
        DECODERS[decode](model, params, src, start_token=1, end_token=END, max_length=3)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_model_that_is_not_an_encoder_decoder_is_named(random_model, decode):
    _, _, src = random_model
    model = rnnjax.seq2seq(rnnjax.rnn(cells.gru(H)), rnnjax.dense(V), in_size=D)
    with pytest.raises(TypeError, match=r"model must be an EncoderDecoder .*, got a Model"):
        DECODERS[decode](model, {}, src, start_token=1, end_token=END, max_length=3)


@pytest.mark.parametrize("decode", DECODERS)
def test_source_lengths_past_the_source_raise(random_model, decode):
    """Checked before the decoder is jitted: inside, a length past the source cannot raise."""
    model, params, src = random_model
    run = DECODERS[decode]
    lengths = np.full(src.shape[0], src.shape[1] + 1)
    with pytest.raises(ValueError, match=f"lengths must lie in \\[0, T={src.shape[1]}\\]"):
        run(model, params, src, src_lengths=lengths, start_token=START, end_token=END, max_length=3)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_source_that_is_not_a_batch_of_token_rows_is_named(random_model, decode):
    model, params, src = random_model
    with pytest.raises(ValueError, match=r"src must be \[B, T\] tokens, got shape \(6,\)"):
        DECODERS[decode](model, params, src[0], start_token=START, end_token=END, max_length=3)


@pytest.mark.parametrize("penalty", [float("nan"), "0.6", np.array([0.6, 0.6]), True])
def test_a_length_penalty_that_is_not_a_finite_number_is_named(random_model, penalty):
    model, params, src = random_model
    with pytest.raises(ValueError, match="length_penalty must be a finite number, got"):
        beam_search(
            model,
            params,
            src,
            start_token=START,
            end_token=END,
            max_length=3,
            beam_size=2,
            length_penalty=penalty,
        )


def test_an_empty_batch_decodes_to_empty_outputs_as_greedy_does(random_model):
    model, params, src = random_model
    options = dict(start_token=START, end_token=END, max_length=4)
    tokens, lengths = greedy(model, params, src[:0], **options)
    got = beam_search(model, params, src[:0], beam_size=2, **options)
    assert [a.shape for a in got] == [tokens.shape, lengths.shape, (0,)]


def test_source_lengths_as_a_list(random_model):
    model, params, src = random_model
    options = dict(start_token=START, end_token=END, max_length=4)
    want = greedy(model, params, src, src_lengths=SRC_LENGTHS, **options)
    got = greedy(model, params, src, src_lengths=SRC_LENGTHS.tolist(), **options)
    np.testing.assert_array_equal(got[0], want[0])


def test_a_beam_wider_than_the_hypotheses_stops_once_they_have_finished():
    """Beams without a candidate stay at -inf and never emit END; the search must not wait
    for them until max_length."""
    steps = []
    only_end = jnp.full((V,), -jnp.inf).at[END].set(0.0)  # every hypothesis ends at once

    def decode_step(params, carry, tokens):
        jax.debug.callback(lambda carry: steps.append(1), carry)  # runs when a step runs
        return carry, jnp.broadcast_to(only_end, (tokens.shape[0], V))

    model = EncoderDecoder(
        None, None, lambda p, src, lengths=None: jnp.zeros(len(src)), decode_step
    )
    options = dict(start_token=START, end_token=END, max_length=20, beam_size=3)
    tokens, lengths, scores = beam_search(model, None, jnp.zeros((2, 1), jnp.int32), **options)
    jax.effects_barrier()
    np.testing.assert_array_equal(lengths, [0, 0])
    np.testing.assert_array_equal(scores, [0.0, 0.0])
    assert len(steps) == 1, f"{len(steps)} decoder steps for a search that ends after one"


# ---------------------------------------------------------------- sampling


def test_sampling_equals_a_python_loop_of_draws_fed_back(random_model):
    model, params, src = random_model
    key, options = jax.random.key(5), dict(temperature=1.5, top_k=3)
    decoded = sample(model, params, src, key=key, **DECODE, **options)

    def drawn(t, logits):
        return rnnjax.sampling.draw(jax.random.fold_in(key, t), logits, **options)

    assert_a_python_loop_decodes_the_same(random_model, decoded, drawn)
    greedy_tokens, _ = greedy(model, params, src, **DECODE)
    assert not np.array_equal(decoded[0], greedy_tokens)  # the draws mattered


def test_top_k_of_one_samples_greedily_and_a_key_always_the_same_tokens(random_model):
    model, params, src = random_model
    want = greedy(model, params, src, **DECODE)
    for seed in range(3):
        got = sample(model, params, src, key=jax.random.key(seed), top_k=1, **DECODE)
        jax.tree.map(np.testing.assert_array_equal, got, want)
    first, again = (sample(model, params, src, key=jax.random.key(1), **DECODE) for _ in "12")
    jax.tree.map(np.testing.assert_array_equal, again, first)


TABLE_DRAWS = 8192


def table_step_probabilities(temperature=1.0, top_k=None):
    """Each step's next-token probabilities after the temperature and top-k, in numpy."""
    p = np.exp(TABLE) ** (1.0 / temperature)
    if top_k is not None:
        p = np.where(p >= np.sort(p, axis=1)[:, -top_k : -top_k + 1], p, 0.0)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "options", [{}, {"temperature": 0.5}, {"top_k": 2}], ids=["plain", "cold", "top_k"]
)
def test_sampled_tokens_and_lengths_follow_the_tables_probabilities(options):
    """The first token's distribution is step 0's row; a sequence has length n when steps
    0..n-1 drew other tokens and step n drew END (max_length 5 when none did)."""
    model = table_model()
    src = jnp.zeros((TABLE_DRAWS, 1), jnp.int32)
    tokens, lengths = sample(
        model,
        model.init(None),
        src,
        key=jax.random.key(6),
        start_token=START,
        end_token=END,
        max_length=5,
        **options,
    )
    p = table_step_probabilities(**options)
    assert_drawn_from(tokens[:, 0], p[0])
    go_on = np.cumprod(np.concatenate([[1.0], 1.0 - p[:, END]]))  # no END in the steps before
    assert_drawn_from(lengths, np.append(go_on[:5] * p[:, END], go_on[5]))
    ended = np.arange(5) >= np.asarray(lengths)[:, None]
    np.testing.assert_array_equal(np.asarray(tokens)[ended], END)  # padded after the end


def test_a_new_temperature_or_top_p_reuses_the_compiled_program(random_model):
    model, params, src = random_model
    options = dict(key=jax.random.key(0), start_token=START, end_token=END, max_length=4)
    sample(model, params, src, temperature=0.5, top_p=0.9, **options)
    compiled = sample.__wrapped__  # under the checks, the jitted decoder
    before = compiled._cache_size()
    sample(model, params, src, temperature=1.7, top_p=0.5, **options)
    assert compiled._cache_size() == before


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number > 0, got -1.0"),
        (
            {"top_k": V + 1},
            ValueError,
            f"top_k must be at most the vocabulary size V={V}, got {V + 1}",
        ),
        ({"top_p": 2}, ValueError, r"top_p must be None or a number in \(0, 1\], got 2"),
        ({"key": 0}, TypeError, r"key must be one PRNG key such as jax.random.key\(0\), got 0"),
        ({"key": jax.random.split(jax.random.key(0))}, TypeError, "got an array of shape \\(2,\\)"),
    ],
)
def test_bad_sampling_options_name_what_was_expected(random_model, options, error, message):
    model, params, src = random_model
    options = {"key": jax.random.key(0)} | options
    with pytest.raises(error, match=message):
        sample(model, params, src, start_token=START, end_token=END, max_length=3, **options)
