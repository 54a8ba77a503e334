"""Tests for rnnjax/generation.py: generation against Python loops.

Truth: the cells stepped one value at a time in Python, each prediction fed back by hand; for
language models, the whole layer rerun from a zero carry on the seed and every token chosen so
far, each step's token picked from its last logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import cells, generation

B, T0, D, H, STEPS = 3, 5, 2, 8, 12


def _seed():
    return jax.random.normal(jax.random.key(1), (B, T0, D))


def _python_loop(step, carry, seed, steps):
    """Steps ``step(carry, x) -> (carry, y)`` over the seed, then feeds each ``y`` back."""
    for t in range(seed.shape[1]):
        carry, y = step(carry, seed[:, t])
    outs = [y]
    for _ in range(steps - 1):
        carry, y = step(carry, y)
        outs.append(y)
    return jnp.stack(outs, axis=1)


def test_a_projected_cell_equals_a_python_loop_of_its_steps():
    cell = cells.output_projection(cells.stack(cells.simple(H), cells.gru(H)), D)
    params = cell.init(jax.random.key(0), D)
    seed = _seed()
    got = rnnjax.generate(rnnjax.rnn(cell), params, seed, steps=STEPS)
    step = jax.jit(lambda carry, x: cell.apply(params, carry, x))
    want = _python_loop(step, cell.initial_carry(params, (B,)), seed, STEPS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("given", ["model", "layer"])
def test_a_seq2seq_model_with_dropout_equals_a_python_loop_without_it(given):
    """Given as the model itself, or as ``serial(body, head)`` on its params."""
    c1, c2 = cells.lstm(H), cells.simple(H, activation="relu")
    body = rnnjax.serial(rnnjax.rnn(c1), rnnjax.dropout(0.5), rnnjax.rnn(c2))
    head = rnnjax.dense(D)
    model = rnnjax.seq2seq(body, head, in_size=D)
    params = model.init(jax.random.key(0))
    p1, p2, ph = params["body"]["0"], params["body"]["2"], params["head"]

    @jax.jit
    def step(carry, x):
        k1, y = c1.apply(p1, carry[0], x)
        k2, y = c2.apply(p2, carry[1], y)
        return (k1, k2), y @ ph["w"] + ph["b"]

    seed = _seed()
    if given == "model":
        got = rnnjax.generate(model, params, seed, steps=STEPS)
    else:
        layer_params = {"0": params["body"], "1": params["head"]}
        got = rnnjax.generate(rnnjax.serial(body, head), layer_params, seed, steps=STEPS)
    carry = (c1.initial_carry(p1, (B,)), c2.initial_carry(p2, (B,)))
    np.testing.assert_allclose(got, _python_loop(step, carry, seed, STEPS), rtol=1e-5, atol=1e-5)


def test_one_step_is_the_models_last_prediction_on_the_seed():
    model = rnnjax.seq2seq(rnnjax.rnn(cells.gru(H)), rnnjax.dense(D), in_size=D)
    params = model.init(jax.random.key(0))
    got = rnnjax.generate(model, params, _seed(), steps=1)
    np.testing.assert_allclose(got, model.apply(params, _seed())[:, -1:], rtol=1e-6, atol=1e-6)


def test_static_shapes_and_one_scan_whatever_the_number_of_steps():
    cell = cells.output_projection(cells.simple(H), D)
    layer, params = rnnjax.rnn(cell), cell.init(jax.random.key(0), D)
    shape = jax.eval_shape(lambda p, s: rnnjax.generate(layer, p, s, steps=300), params, _seed())
    assert shape.shape == (B, 300, D) and shape.dtype == jnp.float32

    def size(steps):  # a Python loop over steps would grow the program with them
        run = lambda p, s: rnnjax.generate(layer, p, s, steps=steps)
        return str(jax.make_jaxpr(run)(params, _seed())).count("\n")  # equations

    assert size(5) == size(500)


def test_new_values_of_the_same_shapes_reuse_the_compiled_program():
    cell = cells.output_projection(cells.simple(H), D)
    layer, params = rnnjax.rnn(cell), cell.init(jax.random.key(0), D)
    rnnjax.generate(layer, params, _seed(), steps=STEPS)
    before = generation._generate._cache_size()
    rnnjax.generate(layer, params, _seed() + 1.0, steps=STEPS)
    assert generation._generate._cache_size() == before


def test_bad_arguments_name_what_was_expected():
    cell = cells.output_projection(cells.simple(H), D)
    layer, params = rnnjax.rnn(cell), cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        rnnjax.generate(layer, params, _seed(), steps=0)
    with pytest.raises(ValueError, match=r"seed must be \[B, T0, D\] with T0 >= 1, got shape"):
        rnnjax.generate(layer, params, jnp.zeros((B, 0, D)), steps=3)
    wide = rnnjax.rnn(cells.simple(H))
    with pytest.raises(ValueError, match=f"must output its input size {D} .* got output size {H}"):
        rnnjax.generate(wide, cells.simple(H).init(jax.random.key(0), D), _seed(), steps=3)
    projected = cells.output_projection(cells.simple(H), D)
    for future in (
        rnnjax.serial(rnnjax.rnn(projected, reverse=True)),
        rnnjax.serial(rnnjax.bidirectional(cells.simple(H)), rnnjax.dense(D)),
    ):
        params, _ = future.init(jax.random.key(0), D)
        with pytest.raises(ValueError, match="needs a causal layer"):
            rnnjax.generate(future, params, _seed(), steps=3)
    model = rnnjax.seq2vec(rnnjax.rnn(cells.simple(H)), rnnjax.dense(D), in_size=D)
    with pytest.raises(TypeError, match=r"a Model with a carry-passing layer \(seq2seq\)"):
        rnnjax.generate(model, model.init(jax.random.key(0)), _seed(), steps=3)
    model = rnnjax.seq2seq(rnnjax.rnn(cells.simple(H)), rnnjax.dense(D), in_size=D)
    params = model.init(jax.random.key(1))
    del params["head"]["b"]
    with pytest.raises(ValueError, match=r"missing \['head'\]\['b'\]"):
        rnnjax.generate(model, params, _seed(), steps=3)
    with pytest.raises(
        TypeError, match=r"must be a Layer .* seq2seq Model; .* pass module.model .*\), got a Cell"
    ):
        rnnjax.generate(projected, projected.init(jax.random.key(0), D), _seed(), steps=3)


# ---------------------------------------------------------------- language models

VOCAB, TOKEN_STEPS = 6, 6


def _language_model():
    """``serial(embed, rnn, dense)``: token ids to logits over the same ids, and a seed."""
    layer = rnnjax.serial(rnnjax.embed(VOCAB, 4), rnnjax.rnn(cells.lstm(H)), rnnjax.dense(VOCAB))
    params, _ = layer.init(jax.random.key(0), None)
    params["2"]["w"] = params["2"]["w"] * 4.0  # peaked logits: greedy and sampled differ
    seed = jax.random.randint(jax.random.key(1), (B, T0), 0, VOCAB)
    return layer, params, seed


def _rerun_on_the_prefix(layer, params, seed, pick):
    """Each step reruns the layer on the seed and the tokens so far; ``pick(t, logits)``."""
    last_logits = jax.jit(lambda tokens: layer.apply(params, tokens)[1][:, -1])
    tokens = np.asarray(seed)
    for t in range(TOKEN_STEPS):
        token = np.asarray(pick(t, last_logits(jnp.asarray(tokens))))
        tokens = np.concatenate([tokens, token[:, None]], axis=1)
    return tokens[:, T0:]


def test_a_language_model_feeds_back_its_most_likely_tokens():
    layer, params, seed = _language_model()
    got = rnnjax.generate(layer, params, seed, steps=TOKEN_STEPS)
    assert got.dtype == jnp.int32
    want = _rerun_on_the_prefix(layer, params, seed, lambda t, logits: jnp.argmax(logits, -1))
    np.testing.assert_array_equal(got, want)


def test_a_language_model_with_a_key_feeds_back_drawn_tokens():
    layer, params, seed = _language_model()
    key, options = jax.random.key(2), dict(temperature=0.8, top_p=0.95)
    got = rnnjax.generate(layer, params, seed, steps=TOKEN_STEPS, key=key, **options)

    def drawn(t, logits):
        return rnnjax.sampling.draw(jax.random.fold_in(key, t), logits, **options)

    np.testing.assert_array_equal(got, _rerun_on_the_prefix(layer, params, seed, drawn))
    assert not np.array_equal(got, rnnjax.generate(layer, params, seed, steps=TOKEN_STEPS))


@pytest.mark.parametrize("extra, dtype", [(3, jnp.int32), (256, jnp.uint8)])
def test_a_head_wider_than_the_vocabulary_is_refused(extra, dtype):
    """Its extra ids would be fed back and embedded as NaN rows under jit. The fed-back ids
    are int32 whatever the seed's dtype, so a uint8 seed, in which V - 1 = 261 would wrap to
    5, a valid id, is refused too."""
    width = VOCAB + extra
    wide = rnnjax.serial(rnnjax.embed(VOCAB, 4), rnnjax.rnn(cells.gru(H)), rnnjax.dense(width))
    params, _ = wide.init(jax.random.key(0), None)
    seed = jnp.zeros((B, T0), dtype)
    with pytest.raises(
        ValueError,
        match=rf"ids up to V - 1 = {width - 1}, V = {width} .*"
        rf"vocab_size={VOCAB}\), got min {width - 1}",
    ):
        rnnjax.generate(wide, params, seed, steps=3)


def test_sampling_options_need_tokens_and_a_key():
    cell = cells.output_projection(cells.simple(H), D)
    values = rnnjax.rnn(cell), cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="need an int seed .* got a float32 seed"):
        rnnjax.generate(*values, _seed(), steps=3, key=jax.random.key(0))
    layer, params, seed = _language_model()
    with pytest.raises(ValueError, match="need a key"):
        rnnjax.generate(layer, params, seed, steps=3, top_k=2)
    with pytest.raises(TypeError, match=r"key must be one PRNG key .*, got 7"):
        rnnjax.generate(layer, params, seed, steps=3, key=7)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        rnnjax.generate(layer, params, seed, steps=3, key=jax.random.key(0), temperature=0)
    with pytest.raises(ValueError, match=r"seed must be \[B, T0\] of token ids .* got shape"):
        rnnjax.generate(layer, params, seed[..., None], steps=3)
