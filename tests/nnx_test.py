"""Tests for rnnjax/nnx.py: NNX wrappers agree with the pure functions they wrap and train."""

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnjax
from rnnjax import nnx as rnx

B, T, D = 4, 6, 3


def _xs(seed=0, shape=(B, T, D)):
    return jax.random.normal(jax.random.key(seed), shape)


def _count(state) -> int:
    return len(jax.tree.leaves(state))


def test_rnn_equals_unroll_exactly():
    cell = rnnjax.cells.lstm(5, learn_initial_carry=True)
    rnn = rnx.RNN(cell, D, rngs=nnx.Rngs(0), reverse=True)
    xs, lengths = _xs(), jnp.array([6, 3, 0, 1])
    carry, ys = rnn(xs, lengths=lengths, return_carry=True)
    want_carry, want_ys = rnnjax.unroll(cell, rnn.params, xs, lengths=lengths, reverse=True)
    np.testing.assert_array_equal(ys, want_ys)
    jax.tree.map(np.testing.assert_array_equal, carry, want_carry)


def test_params_round_trip_and_param_state_is_exactly_the_cell_params():
    cell = rnnjax.cells.stack(rnnjax.cells.gru(4), rnnjax.cells.lstm(5, learn_initial_carry=True))
    rnn = rnx.RNN(cell, D, rngs=nnx.Rngs(1))
    functional = cell.init(jax.random.key(7), D)
    assert jax.tree.structure(rnn.params) == jax.tree.structure(functional)
    param_state = nnx.state(rnn, nnx.Param)
    assert _count(param_state) == _count(functional)
    assert _count(nnx.state(rnn)) == _count(functional)  # nothing else: no rng, no buffers

    rnn.set_params(functional)  # params moved in from the functional API ...
    xs = _xs()
    np.testing.assert_array_equal(rnn(xs), rnnjax.unroll(cell, functional, xs)[1])
    with pytest.raises(ValueError, match=rf"shapes of this module: \['0'\]\['wx'\] \({D + 1}, "):
        rnn.set_params(cell.init(jax.random.key(0), D + 1))
    with pytest.raises(ValueError, match=r"entries of this module: missing \['1'\]\['b'\]"):
        rnn.set_params({**functional, "1": {k: v for k, v in functional["1"].items() if k != "b"}})


def test_layer_and_model_params_out_agree_with_functional_calls():
    body = rnnjax.bidirectional(rnnjax.cells.gru(4))
    layer = rnx.Layer(body, D, rngs=nnx.Rngs(0))
    assert layer.out_features == 8
    xs, lengths = _xs(), jnp.array([6, 2, 5, 1])
    np.testing.assert_array_equal(
        layer(xs, lengths=lengths, deterministic=True),
        body.apply(layer.params, xs, lengths=lengths)[1],
    )
    fn = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(6)), rnnjax.dense(2), in_size=D)
    model = rnx.Model(fn, rngs=nnx.Rngs(0))
    model.eval()
    np.testing.assert_array_equal(
        model(xs, lengths=lengths), fn.apply(model.params, xs, lengths=lengths)
    )
    assert _count(nnx.state(model, nnx.Param)) == _count(fn.init(jax.random.key(0)))


def test_encoder_decoder_model_takes_both_sequences_and_decodes_from_its_params():
    fn = rnnjax.encoder_decoder(
        rnnjax.serial(rnnjax.rnn(rnnjax.cells.gru(6)), rnnjax.dropout(0.5)),
        rnnjax.cells.lstm(6),
        src_embed=rnnjax.embed(9, 3),
        tgt_embed=rnnjax.embed(9, 3),
        head=rnnjax.dense(9),
        attention="luong",
    )
    model = rnx.Model(fn, rngs=nnx.Rngs(0))
    src, tgt_in = jnp.array([[3, 4, 5], [6, 7, 0]]), jnp.array([[1, 3], [1, 6]])
    lengths = jnp.array([3, 2])
    np.testing.assert_array_equal(
        model(src, tgt_in, src_lengths=lengths, deterministic=True),
        fn.apply(model.params, src, tgt_in, src_lengths=lengths),
    )
    assert not np.allclose(  # train mode: the encoder's dropout is on
        model(src, tgt_in, src_lengths=lengths),
        fn.apply(model.params, src, tgt_in, src_lengths=lengths),
    )
    options = dict(src_lengths=lengths, start_token=1, end_token=2, max_length=4)
    rnnjax.decoding.greedy(model.model, model.params, src, **options)


def test_a_seq2seq_module_generates_from_its_params():
    fn = rnnjax.seq2seq(rnnjax.rnn(rnnjax.cells.gru(6)), rnnjax.dense(D), in_size=D)
    model = rnx.Model(fn, rngs=nnx.Rngs(0))
    got = rnnjax.generate(model.model, model.params, _xs(), steps=4)
    layer_params = {"0": model.params["body"], "1": model.params["head"]}
    layer = rnnjax.serial(rnnjax.rnn(rnnjax.cells.gru(6)), rnnjax.dense(D))
    np.testing.assert_allclose(got, rnnjax.generate(layer, layer_params, _xs(), steps=4))


def _dropout_model():
    body = rnnjax.serial(rnnjax.rnn(rnnjax.cells.gru(8), carry_dropout=0.3), rnnjax.dropout(0.5))
    return rnnjax.seq2seq(body, rnnjax.dense(2), in_size=D)


def test_eval_is_deterministic_and_train_draws_fresh_dropout_keys():
    fn = _dropout_model()
    model = rnx.Model(fn, rngs=nnx.Rngs(0, dropout=1))
    xs = _xs()
    model.eval()
    clean = fn.apply(model.params, xs)
    np.testing.assert_array_equal(model(xs), clean)
    model.train()
    first, second = model(xs), model(xs)
    assert not np.allclose(first, second)
    assert not np.allclose(first, clean)
    np.testing.assert_array_equal(model(xs, deterministic=True), clean)
    key = jax.random.key(3)
    np.testing.assert_array_equal(model(xs, rngs=key), fn.apply(model.params, xs, key=key))
    np.testing.assert_array_equal(nnx.view(model, deterministic=True)(xs), clean)


def test_train_mode_without_a_dropout_stream_is_a_clear_error():
    layer = rnx.Layer(rnnjax.dropout(0.5), D, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="no dropout rngs"):
        layer(_xs())
    np.testing.assert_array_equal(layer(_xs(), deterministic=True), _xs())


def test_call_time_rngs_of_another_type_are_named():
    """``rngs=0`` is not "no dropout rngs": the error names what it takes and what came."""
    layer = rnx.Layer(rnnjax.dropout(0.5), D, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"rngs must be an nnx.Rngs, .* or a key .*, got int"):
        layer(_xs(), rngs=0)


def test_nnx_jit_matches_eager_and_advances_the_dropout_stream():
    model = rnx.Model(_dropout_model(), rngs=nnx.Rngs(0))
    xs = _xs()
    call = nnx.jit(lambda m, x: m(x))
    model.eval()
    np.testing.assert_allclose(call(model, xs), model(xs), rtol=1e-6, atol=1e-6)
    model.train()
    assert not np.allclose(call(model, xs), call(model, xs))


class Regressor(nnx.Module):
    """A user's own module: an rnnjax GRU over the sequence, then ``nnx.Linear`` on its end."""

    def __init__(self, rngs: nnx.Rngs):
        self.rnn = rnx.RNN(rnnjax.cells.gru(16), D, rngs=rngs)
        self.head = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, xs):
        carry, _ = self.rnn(xs, return_carry=True)
        return self.head(carry)[:, 0]


def test_trains_inside_an_nnx_module_with_nnx_optimizer():
    xs = _xs(0, (64, 8, D))
    ys = jnp.mean(xs[..., 0], axis=1) - xs[:, -1, 1]  # needs memory and the last step
    model = Regressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    assert _count(nnx.state(model, nnx.Param)) == _count(model.rnn.params) + 2

    def loss_fn(model):
        return jnp.mean((model(xs) - ys) ** 2)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_wrappers_do_no_maths_of_their_own():
    tree = ast.parse(inspect.getsource(rnx))  # code only: docstring examples may use jnp
    banned = {"jnp", "numpy", "lax", "tanh", "sigmoid", "matmul", "dot", "einsum", "exp"}
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult))
        assert getattr(node, "id", None) not in banned, node.id
        assert getattr(node, "attr", None) not in banned, node.attr
        for alias in (
            getattr(node, "names", []) if isinstance(node, ast.Import | ast.ImportFrom) else []
        ):
            assert "numpy" not in alias.name and "lax" not in alias.name, alias.name
