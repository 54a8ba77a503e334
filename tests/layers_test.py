"""Tests for rnnjax/layers.py: every layer against unroll, numpy, or each sequence run alone.

Dropout masks are made visible with probe cells: one whose output is its input, one whose
output is the carry it is given, so the variational masks can be read step by step.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import cells
from rnnjax.cells import Cell, LSTMCarry

B, T, D, H = 4, 6, 4, 8  # the sizes of models_test, so tests share compiled kernels
LENGTHS = np.array([6, 3, 0, 1], np.int32)
ONES = (64, T, 32)  # enough units for dropout statistics


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def probe(carry_of, output_of, size=D):
    """A parameter-free cell: ``carry_of(batch_shape)`` starts it, ``output_of(carry, x)``."""
    return Cell(
        init=lambda key, d: {"d": jnp.zeros((d,))},
        initial_carry=lambda params, batch_shape: carry_of(tuple(batch_shape)),
        apply=lambda params, carry, x: (carry_of(x.shape[:-1]), output_of(carry, x)),
        output_size=size,
        input_size=lambda params: params["d"].shape[0],
    )


# Outputs its input, so rnn's input dropout shows as ys = xs · mask.
echo = probe(lambda shape: jnp.zeros(shape + (H,)), lambda carry, x: x)
# Outputs what its recurrence reads of the carry and restarts from ones, so carry dropout
# shows as ys = mask.
carry_echo = probe(lambda shape: jnp.ones(shape + (H,)), lambda carry, x: carry, size=H)
carry_echo = carry_echo._replace(
    project=lambda params, x: x,
    recur=lambda params, carry, pre: (jnp.ones_like(carry), carry),
    masked_recur=lambda params, carry, pre, mask: (jnp.ones_like(carry), carry * mask),
)


# ---------------------------------------------------------------- rnn, bidirectional


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_layer_equals_unroll(reverse):
    cell = cells.lstm(H)
    layer = rnnjax.rnn(cell, reverse=reverse)
    params, out_size = layer.init(jax.random.key(0), D)
    assert out_size == H
    xs, lengths = normal(1, (B, T, D)), jnp.asarray(LENGTHS)
    carry, ys = layer.apply(params, xs, lengths=lengths)
    want_carry, want_ys = rnnjax.unroll(cell, params, xs, lengths=lengths, reverse=reverse)
    np.testing.assert_array_equal(ys, want_ys)
    jax.tree.map(np.testing.assert_array_equal, carry, want_carry)


def test_bidirectional_with_lengths_equals_each_sequence_run_alone():
    cell = cells.gru(H)
    layer = rnnjax.bidirectional(cell)
    params, out_size = layer.init(jax.random.key(0), D)
    assert out_size == 2 * H
    xs = normal(1, (B, T, D))
    (carry_f, carry_b), ys = layer.apply(params, xs, lengths=jnp.asarray(LENGTHS))
    for b, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        if n == 0:
            continue
        alone = xs[b : b + 1, :n]
        want_f, ys_f = rnnjax.unroll(cell, params["forward"], alone)
        want_b, ys_b = rnnjax.unroll(cell, params["backward"], alone[:, ::-1])
        want = np.concatenate([ys_f[0], ys_b[0, ::-1]], axis=-1)
        np.testing.assert_allclose(ys[b, :n], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry_f[b], want_f[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry_b[b], want_b[0], rtol=1e-5, atol=1e-6)


def test_bidirectional_sum_and_bad_merge():
    layer = rnnjax.bidirectional(cells.gru(H), merge="sum")
    params, out_size = layer.init(jax.random.key(0), D)
    assert out_size == H
    xs = normal(1, (B, T, D))
    _, ys_f = rnnjax.rnn(cells.gru(H)).apply(params["forward"], xs)
    _, ys_b = rnnjax.rnn(cells.gru(H), reverse=True).apply(params["backward"], xs)
    np.testing.assert_allclose(layer.apply(params, xs)[1], ys_f + ys_b, rtol=1e-6)
    with pytest.raises(ValueError, match="merge"):
        rnnjax.bidirectional(cells.gru(H), merge="mean")


# ---------------------------------------------------------------- serial, residual


def test_serial_chains_sizes_and_carries():
    first, last = rnnjax.rnn(cells.gru(H)), rnnjax.rnn(cells.lstm(H))
    layer = rnnjax.serial(first, rnnjax.dense(5), last)
    params, out_size = layer.init(jax.random.key(0), D)
    assert out_size == H and params["1"]["w"].shape == (H, 5)
    assert params["2"]["wx"].shape == (5, 4 * H)
    xs = normal(1, (B, T, D))
    carry, ys = layer.apply(params, xs)
    assert carry[1] is None and isinstance(carry[2], LSTMCarry)
    c0, hs = first.apply(params["0"], xs)
    c2, want = last.apply(params["2"], hs @ params["1"]["w"] + params["1"]["b"])
    np.testing.assert_allclose(ys, want, rtol=1e-6, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, carry, (c0, None, c2))
    # Carries chain: two halves, the second started from the first's carry, make the whole.
    carry_half, ys_half = layer.apply(params, xs[:, :3])
    _, ys_rest = layer.apply(params, xs[:, 3:], carry_half)
    np.testing.assert_allclose(jnp.concatenate([ys_half, ys_rest], 1), ys, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tuple of 3 carries"):
        layer.apply(params, xs, carry[:2])
    with pytest.raises(ValueError, match="at least one layer"):
        rnnjax.serial()


def test_residual_adds_the_input_and_rejects_a_size_change():
    inner = rnnjax.rnn(cells.gru(D))
    layer = rnnjax.residual(inner)
    params, out_size = layer.init(jax.random.key(0), D)
    assert out_size == D
    xs = normal(1, (B, T, D))
    carry, ys = layer.apply(params, xs)
    want_carry, want = inner.apply(params, xs)
    np.testing.assert_array_equal(ys, xs + want)
    np.testing.assert_array_equal(carry, want_carry)
    with pytest.raises(ValueError, match="out_size == in_size"):
        rnnjax.residual(rnnjax.dense(H)).init(jax.random.key(0), D)


# ---------------------------------------------------------------- dense, embed


def test_dense_and_embed_shapes():
    params, size = rnnjax.dense(5, activation="tanh").init(jax.random.key(0), D)
    assert size == 5 and params["w"].shape == (D, 5) and params["b"].shape == (5,)
    xs = normal(1, (B, T, D))
    carry, ys = rnnjax.dense(5, activation="tanh").apply(params, xs)
    assert carry is None
    np.testing.assert_allclose(ys, np.tanh(xs @ params["w"] + params["b"]), rtol=1e-6)
    with pytest.raises(ValueError, match=rf"dense expects inputs \[\.\.\., {D}\].*got shape"):
        rnnjax.dense(5).apply(params, normal(1, (B, T, D + 1)))
    layer = rnnjax.embed(7, D)
    params, size = layer.init(jax.random.key(0), 0)
    assert size == D and params["table"].shape == (7, D)
    tokens = jnp.array([[0, 6, 2], [1, 1, 5]])
    _, emb = layer.apply(params, tokens)
    assert emb.shape == (2, 3, D)
    np.testing.assert_array_equal(emb[0, 1], params["table"][6])
    with pytest.raises(TypeError, match="integer tokens"):
        layer.apply(params, tokens.astype(jnp.float32))


def test_embed_ids_outside_the_vocabulary_raise_or_give_nan_under_jit():
    layer = rnnjax.embed(7, D)
    params, _ = layer.init(jax.random.key(0), 0)
    for bad in ([[0, 7]], [[-1, 2]]):
        with pytest.raises(ValueError, match=r"in \[0, vocab_size=7\), got min"):
            layer.apply(params, jnp.array(bad))
    _, emb = jax.jit(layer.apply)(params, jnp.array([[-1, 7, 3]]))
    assert np.all(np.isnan(emb[0, :2])), "a negative id must not wrap to the last row"
    np.testing.assert_array_equal(emb[0, 2], params["table"][3])


# ---------------------------------------------------------------- dropout


def test_dropout_is_on_exactly_with_a_key():
    layer = rnnjax.dropout(0.5)
    xs = jnp.ones(ONES)
    np.testing.assert_array_equal(layer.apply({}, xs)[1], xs)
    ys = np.asarray(layer.apply({}, xs, key=jax.random.key(0))[1])
    assert set(np.unique(ys)) == {0.0, 2.0}
    np.testing.assert_array_equal(ys, layer.apply({}, xs, key=jax.random.key(0))[1])
    zeros = ys == 0.0
    assert not np.all(zeros == zeros[:, :1])  # a new mask at every step
    with pytest.raises(ValueError, match="rate"):
        rnnjax.dropout(1.0)


def test_variational_dropout_mask_is_constant_over_time():
    ys = rnnjax.dropout(0.5, variational=True).apply({}, jnp.ones(ONES), key=jax.random.key(0))[1]
    zeros = np.asarray(ys) == 0.0
    assert zeros.any() and not zeros.all()
    assert np.all(zeros == zeros[:, :1])


def test_variational_dropout_of_vectors_keeps_their_shape():
    """On ``[B, D]`` (e.g. in a seq2vec head) there is no time axis to share a mask over: each
    example gets its own, as plain dropout gives, and the shape stays ``[B, D]``."""
    xs = jnp.ones((256, 32))
    ys = rnnjax.dropout(0.3, variational=True).apply({}, xs, key=jax.random.key(1))[1]
    assert ys.shape == xs.shape
    assert set(np.unique(np.asarray(ys))) == {0.0, np.float32(1 / 0.7)}
    assert abs(float(jnp.mean(ys == 0.0)) - 0.3) < 0.05


@pytest.mark.parametrize("variational", [False, True])
def test_inverted_dropout_keeps_the_expectation(variational):
    _, ys = rnnjax.dropout(0.3, variational=variational).apply(
        {}, jnp.ones(ONES), key=jax.random.key(1)
    )
    assert abs(float(jnp.mean(ys)) - 1.0) < 0.05
    assert abs(float(jnp.mean(ys == 0.0)) - 0.3) < 0.05


def test_rnn_input_dropout_is_one_mask_per_sequence():
    layer = rnnjax.rnn(echo, input_dropout=0.5)
    params, _ = layer.init(jax.random.key(0), 32)
    xs = jnp.ones(ONES)
    np.testing.assert_array_equal(layer.apply(params, xs)[1], xs)
    ys = np.asarray(layer.apply(params, xs, key=jax.random.key(0))[1])
    assert set(np.unique(ys)) == {0.0, 2.0}
    assert np.all(ys == ys[:, :1])


def test_rnn_carry_dropout_is_one_mask_per_sequence_on_what_the_recurrence_reads():
    xs = jnp.ones((B, T, D))
    layer = rnnjax.rnn(carry_echo, carry_dropout=0.5)
    params, _ = layer.init(jax.random.key(0), D)
    np.testing.assert_array_equal(layer.apply(params, xs)[1], 1.0)
    ys = np.asarray(layer.apply(params, xs, key=jax.random.key(0))[1])
    assert set(np.unique(ys)) == {0.0, 2.0}
    assert np.all(ys == ys[:, :1])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference_step(kind, p, carry, x, mask):
    """One step from the equations, the recurrent products reading ``mask ⊙ h``."""
    h = carry[1] if kind == "lstm" else carry
    read, pre, w = h * mask, x @ p["wx"] + p["b"], p["wh"]
    if kind == "lstm":
        i, f, g, o = np.split(pre + read @ w, 4, axis=-1)
        c = _sigmoid(f) * carry[0] + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (c, h), h
    r, z = np.split(_sigmoid(pre[:, : 2 * H] + read @ w[:, : 2 * H]), 2, axis=-1)
    if kind == "gru":  # reset after the matmul; "gru_reset_before": before it
        n = np.tanh(pre[:, 2 * H :] + r * (read @ w[:, 2 * H :] + p["bh_n"]))
    else:
        n = np.tanh(pre[:, 2 * H :] + (r * read) @ w[:, 2 * H :])
    h = (1.0 - z) * n + z * h
    return h, h


CARRY_DROPOUT_CELLS = {
    "lstm": lambda: cells.lstm(H, forget_bias=3.0),
    "gru": lambda: cells.gru(H, bias_init=jax.nn.initializers.constant(3.0)),
    "gru_reset_before": lambda: cells.gru(
        H, reset_after=False, bias_init=jax.nn.initializers.constant(3.0)
    ),
}


@pytest.mark.parametrize("kind", list(CARRY_DROPOUT_CELLS))
def test_carry_dropout_leaves_the_memory_alone(kind):
    """Only the recurrent products read the masked h: a GRU's ``z ⊙ h`` and an LSTM's ``c``
    read the carry itself, so a cell that remembers (z, f near 1) is not rescaled by
    ``1 / keep`` at every step, which made such a GRU's state grow without bound."""
    rate, key = 0.5, jax.random.key(3)
    layer = rnnjax.rnn(CARRY_DROPOUT_CELLS[kind](), carry_dropout=rate)
    params, _ = layer.init(jax.random.key(0), D)
    xs = normal(1, (B, 20, D))
    _, ys = layer.apply(params, xs, key=key)
    mask = np.asarray(rnnjax.layers._dropout_mask(jax.random.fold_in(key, 1), rate, (B, H)))
    p, zeros = jax.tree.map(np.asarray, params), np.zeros((B, H), np.float32)
    carry, want = ((zeros, zeros) if kind == "lstm" else zeros), []
    for t in range(xs.shape[1]):
        carry, y = _reference_step(kind, p, carry, np.asarray(xs[:, t]), mask)
        want.append(y)
    np.testing.assert_allclose(ys, np.stack(want, axis=1), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(ys)) <= 1.0


def test_rnn_dropout_needs_a_key_and_is_deterministic_per_key():
    cell = cells.lstm(H)
    layer = rnnjax.rnn(cell, input_dropout=0.3, carry_dropout=0.3)
    params, _ = layer.init(jax.random.key(0), D)
    xs, lengths = normal(1, (B, T, D)), jnp.asarray(LENGTHS)
    plain = rnnjax.rnn(cell).apply(params, xs, lengths=lengths)[1]
    np.testing.assert_array_equal(layer.apply(params, xs, lengths=lengths)[1], plain)
    apply = jax.jit(layer.apply)  # one compilation for the three keys
    one = apply(params, xs, lengths=lengths, key=jax.random.key(1))[1]
    again = apply(params, xs, lengths=lengths, key=jax.random.key(1))[1]
    other = apply(params, xs, lengths=lengths, key=jax.random.key(2))[1]
    np.testing.assert_array_equal(one, again)
    assert not np.allclose(one[:2], plain[:2]) and not np.allclose(one[:2], other[:2])
    np.testing.assert_array_equal(np.asarray(one)[np.arange(T) >= LENGTHS[:, None]], 0.0)


@pytest.mark.parametrize("cell", [cells.lstm(H), cells.gru(H)], ids=["lstm", "gru"])
def test_rnn_carry_dropout_reaches_the_fused_backward_pass(cell):
    """The fused backward pass recomputes each step's gates: it must see the same mask."""
    xs, lengths, key = normal(1, (B, T, D)), jnp.asarray(LENGTHS), jax.random.key(3)

    def grads(fused):
        layer = rnnjax.rnn(cell, carry_dropout=0.4, fused_backward=fused)
        params, _ = layer.init(jax.random.key(0), D)

        def loss(params, xs):
            return jnp.sum(jnp.sin(layer.apply(params, xs, lengths=lengths, key=key)[1]))

        return jax.grad(loss, argnums=(0, 1))(params, xs)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
        grads(True),
        grads(False),
    )


def test_rnn_passes_on_every_unroll_option_a_layer_does_not_set_itself():
    """``UNROLL_OPTIONS`` lists ``rnnjax.unroll``'s keyword options but those of the layer's
    own shapes and calls; an option added to ``unroll`` must be added there too."""
    keywords = {
        name
        for name, p in inspect.signature(rnnjax.unroll).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    set_by_layers = {"lengths", "reverse", "resets", "time_major", "return_sequences"}
    assert set(rnnjax.layers.UNROLL_OPTIONS) == keywords - set_by_layers


def test_rnn_carry_dropout_rejects_a_stack_and_bad_rates():
    with pytest.raises(ValueError, match="carry_dropout needs"):
        rnnjax.rnn(cells.stack(cells.gru(H), cells.gru(H)), carry_dropout=0.2)
    for rates in ({"input_dropout": 1.0}, {"carry_dropout": -0.1}):
        with pytest.raises(ValueError, match="dropout"):
            rnnjax.rnn(cells.gru(H), **rates)


@pytest.mark.parametrize("option", [{"time_major": True}, {"return_sequences": False}])
def test_rnn_refuses_unroll_options_that_change_the_layers_shapes(option):
    """A layer is ``[B, T, D] -> [B, T, O]`` (``last`` gives ``[B, O]``); ``time_major`` made
    it ``[T, B, O]`` (and carry dropout fail on shapes), ``return_sequences`` was ignored."""
    (name,) = option
    for make in (rnnjax.rnn, rnnjax.bidirectional):
        with pytest.raises(ValueError, match=f"batch-major.*takes no {name}"):
            make(cells.gru(H), **option)


@pytest.mark.parametrize("cell", [cells.min_gru(H), cells.lru(H)], ids=["min_gru", "lru"])
def test_carry_dropout_refuses_linear_recurrences(cell):
    """Their carry is the memory itself; there is no recurrent matmul to drop it into. Refused
    where the layer is built, not at its first apply with a key."""
    with pytest.raises(ValueError, match="A linear recurrence .* has no recurrent matmul"):
        rnnjax.rnn(cell, carry_dropout=0.5)


def test_dense_bfloat16_compute_is_a_float32_accumulated_product_of_rounded_operands():
    layer = rnnjax.dense(6, compute_dtype="bfloat16")
    params, _ = layer.init(jax.random.key(0), 40)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 40))
    _, ys = layer.apply(params, xs)
    rounded = [np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (xs, params["w"])]
    want = rounded[0] @ rounded[1] + np.asarray(params["b"])
    assert ys.dtype == jnp.float32
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
    _, plain = rnnjax.dense(6).apply(params, xs)
    assert np.max(np.abs(ys - plain)) > 1e-4  # the option is in effect


def test_dense_bfloat16_gradient_is_a_bfloat16_product_accumulated_in_float32():
    """Both backward matmuls take bfloat16-rounded operands, the cotangent included, and
    accumulate in float32; the weight gradient sums over every leading axis of the input."""
    layer = rnnjax.dense(6, compute_dtype="bfloat16")
    params, _ = layer.init(jax.random.key(0), 40)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 40))
    cotangent = jax.random.normal(jax.random.key(2), (3, 5, 6))
    _, vjp = jax.vjp(lambda params, xs: layer.apply(params, xs)[1], params, xs)
    params_grad, xs_grad = vjp(cotangent)

    def rounded(a):
        return np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64)

    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves((params_grad, xs_grad)))
    want_xs = rounded(cotangent) @ rounded(params["w"]).T
    want_w = np.einsum("btd,bto->do", rounded(xs), rounded(cotangent))
    np.testing.assert_allclose(xs_grad, want_xs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(params_grad["w"], want_w, rtol=1e-5, atol=1e-5)
    exact_w = np.einsum("btd,bto->do", np.asarray(xs, np.float64), np.asarray(cotangent))
    assert np.max(np.abs(params_grad["w"] - exact_w)) > 1e-3  # the cotangent is rounded too


def test_a_carry_of_the_wrong_form_is_named():
    """serial takes a tuple of one carry per layer, bidirectional a (forward, backward) pair; one
    cell's LSTMCarry (itself a named pair) is neither."""
    xs = jnp.ones((2, 3, D))
    lstm = cells.lstm(H)
    one = lstm.initial_carry(lstm.init(jax.random.key(0), D), (2,))
    layers = {
        "serial": (rnnjax.serial(rnnjax.rnn(lstm)), r"tuple of 1 carries, got a LSTMCarry"),
        "bidirectional": (
            rnnjax.bidirectional(lstm),
            r"tuple of 2 carries \(forward, backward\), got a LSTMCarry",
        ),
    }
    for layer, named in layers.values():
        params, _ = layer.init(jax.random.key(0), D)
        with pytest.raises(ValueError, match=named):
            layer.apply(params, xs, one)
    params, _ = layers["serial"][0].init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"tuple of 1 carries, got a tuple of 2"):
        layers["serial"][0].apply(params, xs, (one, one))
