"""Tests for rnnjax/cells: every cell against a numpy step written from its documented equations.

Gradients are checked as ``jax.test_util.check_grads`` does at order 1 (its ``check_jvp`` and
``check_vjp``) in float64 (``jax.enable_x64``), where central differences are accurate to ~1e-8 and
the default float64 tolerances hold; float32 finite differences would need tolerances loose
enough to hide real errors.
"""

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import check_grads, fast_jit

import rnnjax
from rnnjax import cells
from rnnjax.cells import LSTMCarry

B, D, H, P = 3, 4, 5, 3


# ---------------------------------------------------------------- numpy references (float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def layer_norm(x, ln, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * ln["scale"] + ln["bias"]


def gate(w, k, units):
    """The k-th ``units``-wide block of a fused gate matrix or bias."""
    return w[..., k * units : (k + 1) * units]


def ref_simple(phi):
    def step(p, h, x):
        h = phi(x @ p["wx"] + h @ p["wh"] + p["b"])
        return h, h

    return step


def ref_indrnn(phi, recurrent_max=None):
    def step(p, h, x):
        u = p["u"] if recurrent_max is None else np.clip(p["u"], -recurrent_max, recurrent_max)
        h = phi(x @ p["wx"] + u * h + p["b"])
        return h, h

    return step


def ref_lstm(units, peepholes=False, proj=False, clip=None, ln=False):
    def step(p, carry, x):
        c_prev, h_prev = carry
        zx, zh = x @ p["wx"], h_prev @ p["wh"]
        if ln:
            zx, zh = layer_norm(zx, p["ln_x"]), layer_norm(zh, p["ln_h"])
        z = zx + zh + p["b"]
        i, f, g, o = (gate(z, k, units) for k in range(4))
        if peepholes:
            i = i + p["peep"][0] * c_prev
            f = f + p["peep"][1] * c_prev
        c = sigmoid(f) * c_prev + sigmoid(i) * np.tanh(g)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        if peepholes:
            o = o + p["peep"][2] * c
        h = sigmoid(o) * np.tanh(layer_norm(c, p["ln_c"]) if ln else c)
        if proj:
            h = h @ p["w_proj"]
        return LSTMCarry(c, h), h

    return step


def ref_gru(units, reset_after):
    def step(p, h, x):
        wx_r, wx_z, wx_n = (gate(p["wx"], k, units) for k in range(3))
        wh_r, wh_z, wh_n = (gate(p["wh"], k, units) for k in range(3))
        b_r, b_z, b_n = (gate(p["b"], k, units) for k in range(3))
        r = sigmoid(x @ wx_r + h @ wh_r + b_r)
        z = sigmoid(x @ wx_z + h @ wh_z + b_z)
        if reset_after:
            n = np.tanh(x @ wx_n + b_n + r * (h @ wh_n + p["bh_n"]))
        else:
            n = np.tanh(x @ wx_n + b_n + (r * h) @ wh_n)
        h = (1.0 - z) * n + z * h
        return h, h

    return step


def positive(x):
    """minGRU/minLSTM's g: ``x + 0.5`` for ``x >= 0``, else ``σ(x)``."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def ref_min_gru(units):
    """Feng et al. 2024: ``h = (1 - z) h + z g(h̃)``, gates of the input alone."""

    def step(p, h, x):
        pre = x @ p["wx"] + p["b"]
        z, h_tilde = sigmoid(gate(pre, 0, units)), positive(gate(pre, 1, units))
        h = (1.0 - z) * h + z * h_tilde
        return h, h

    return step


def ref_min_lstm(units):
    """Feng et al. 2024: ``h = f' h + i' g(h̃)`` with ``f' = f / (f + i)``, ``i' = i / (f + i)``."""

    def step(p, h, x):
        pre = x @ p["wx"] + p["b"]
        f, i = sigmoid(gate(pre, 0, units)), sigmoid(gate(pre, 1, units))
        h = f / (f + i) * h + i / (f + i) * positive(gate(pre, 2, units))
        return h, h

    return step


def ref_lru(units):
    """Orvieto et al. 2023: ``h = λ h + exp(γ) (x B)``, ``y = Re(h C) + x D``, in complex128;
    the carry is ``[Re h, Im h]``."""

    def step(p, carry, x):
        h = carry[..., :units] + 1j * carry[..., units:]
        lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
        h = lam * h + np.exp(p["gamma_log"]) * (x @ (p["B_re"] + 1j * p["B_im"]))
        y = (h @ (p["C_re"] + 1j * p["C_im"])).real + x @ p["D"]
        return np.concatenate([h.real, h.imag], axis=-1), y

    return step


def ref_stack(*steps):
    def step(p, carries, x):
        new = []
        for i, (s, c) in enumerate(zip(steps, carries, strict=True)):
            c, x = s(p[str(i)], c, x)
            new.append(c)
        return tuple(new), x

    return step


def ref_output_projection(inner, act=None):
    def step(p, carry, x):
        carry, y = inner(p["cell"], carry, x)
        y = y @ p["w"] + p["b"]
        return carry, (act(y) if act else y)

    return step


# name -> () -> (cell, numpy reference step). Built lazily so factories run inside each test.
CASES = {
    "simple_tanh": lambda: (cells.simple(H), ref_simple(np.tanh)),
    "simple_relu": lambda: (cells.simple(H, activation="relu"), ref_simple(relu)),
    "lstm": lambda: (cells.lstm(H), ref_lstm(H)),
    "lstm_peepholes": lambda: (cells.lstm(H, peepholes=True), ref_lstm(H, peepholes=True)),
    "lstm_proj": lambda: (cells.lstm(H, proj_size=P), ref_lstm(H, proj=True)),
    "lstm_clip": lambda: (cells.lstm(H, cell_clip=0.5), ref_lstm(H, clip=0.5)),
    "lstm_layer_norm": lambda: (cells.lstm(H, layer_norm=True), ref_lstm(H, ln=True)),
    "lstm_all": lambda: (
        cells.lstm(
            H,
            peepholes=True,
            proj_size=P,
            cell_clip=0.5,
            layer_norm=True,
            forget_bias=2.0,
            learn_initial_carry=True,
        ),
        ref_lstm(H, peepholes=True, proj=True, clip=0.5, ln=True),
    ),
    "gru_reset_after": lambda: (cells.gru(H), ref_gru(H, True)),
    "gru_reset_before": lambda: (cells.gru(H, reset_after=False), ref_gru(H, False)),
    "indrnn": lambda: (cells.indrnn(H), ref_indrnn(relu)),
    "min_gru": lambda: (cells.min_gru(H), ref_min_gru(H)),
    "min_lstm": lambda: (cells.min_lstm(H), ref_min_lstm(H)),
    "lru": lambda: (cells.lru(H, output_size=P), ref_lru(H)),
    "indrnn_max": lambda: (cells.indrnn(H, recurrent_max=0.5), ref_indrnn(relu, 0.5)),
    "stack": lambda: (
        cells.stack(
            cells.simple(H),
            cells.lstm(H, peepholes=True, proj_size=P),
            cells.gru(4, reset_after=False),
            cells.indrnn(2, activation="tanh"),
        ),
        ref_stack(
            ref_simple(np.tanh),
            ref_lstm(H, peepholes=True, proj=True),
            ref_gru(4, False),
            ref_indrnn(np.tanh),
        ),
    ),
    "output_projection": lambda: (
        cells.output_projection(cells.lstm(H, proj_size=P), 2),
        ref_output_projection(ref_lstm(H, proj=True)),
    ),
    "output_projection_tanh": lambda: (
        cells.output_projection(cells.gru(H), 2, activation=jnp.tanh),
        ref_output_projection(ref_gru(H, True), np.tanh),
    ),
}
NAMES = list(CASES)


def randomize(tree, seed, scale=1.0):
    """N(0, scale²) arrays shaped like ``tree``'s leaves (arrays or ShapeDtypeStructs).

    numpy draws them, so no JAX op is compiled for each new shape.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree)


def setup(cell, batch_shape=(B,), seed=0):
    """Random params (every leaf: biases, norms, peepholes all matter), carry and input."""
    shapes = jax.eval_shape(lambda k: cell.init(k, D), jax.random.key(0))
    params = randomize(shapes, seed, 0.7)
    carry = randomize(
        jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params), seed + 1
    )
    x = randomize(jax.ShapeDtypeStruct(batch_shape + (D,), jnp.float32), seed + 2)
    return params, carry, x


def to_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def to_f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def assert_trees_close(actual, expected, atol=1e-5, rtol=1e-5):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert jnp.shape(a) == jnp.shape(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=rtol)


# ---------------------------------------------------------------- one step against the reference


@functools.cache
def step_results(name):
    """One jit per case: apply, recur(project(x)), and project over a sequence vs per step."""
    cell, ref = CASES[name]()
    params, carry, x = setup(cell)
    xs = randomize(jax.ShapeDtypeStruct((B, 2, D), jnp.float32), 7)

    @fast_jit
    def run(params, carry, x, xs):
        split = cell.recur(params, carry, cell.project(params, x))
        steps = jnp.stack([cell.project(params, xs[:, t]) for t in range(2)], 1)
        return cell.apply(params, carry, x), split, cell.project(params, xs), steps

    return cell, ref, (params, carry, x), run(params, carry, x, xs)


@pytest.mark.parametrize("name", NAMES)
def test_apply_matches_numpy_reference(name):
    cell, ref, (params, carry, x), ((new_carry, y), *_) = step_results(name)
    want_carry, want_y = ref(to_numpy(params), to_numpy(carry), np.asarray(x, np.float64))
    assert y.shape == (B, cell.output_size)
    assert_trees_close(new_carry, want_carry)
    assert_trees_close(y, want_y)


def test_references_exercise_clipping():
    # The clip cases above only prove something if some values are actually clipped.
    cell, _ = CASES["lstm_clip"]()
    params, carry, x = setup(cell)
    unclipped, _ = ref_lstm(H)(to_numpy(params), to_numpy(carry), np.asarray(x, np.float64))
    assert np.abs(unclipped.c).max() > 0.5
    cell, _ = CASES["indrnn_max"]()
    params, _, _ = setup(cell)
    assert np.abs(params["u"]).max() > 0.5


@pytest.mark.parametrize("name", ["lstm_all", "stack"])
def test_apply_broadcasts_over_batch_shape(name):
    cell, _ = CASES[name]()
    params, carry, x = setup(cell, batch_shape=(2, 3))
    apply = fast_jit(cell.apply)
    new_carry, y = apply(params, carry, x)
    flat = jax.tree.map(lambda a: a.reshape((6,) + a.shape[2:]), carry)
    flat_carry, flat_y = apply(params, flat, x.reshape(6, D))
    assert_trees_close(jax.tree.map(lambda a: a.reshape((6,) + a.shape[2:]), new_carry), flat_carry)
    assert_trees_close(y.reshape(6, -1), flat_y)
    # No batch axis at all.
    single = jax.tree.map(lambda a: a[0, 0], carry)
    one_carry, one_y = apply(params, single, x[0, 0])
    assert_trees_close(one_y, y[0, 0])
    assert_trees_close(one_carry, jax.tree.map(lambda a: a[0, 0], new_carry))


@pytest.mark.parametrize("name", NAMES)
def test_apply_equals_recur_of_project(name):
    cell, _, _, (fused, split, pre, steps) = step_results(name)
    assert cell.project is not None and cell.recur is not None
    assert_trees_close(split, fused)
    # project over a whole [B, T, D] sequence at once (the hoisted matmul) agrees step by step.
    assert_trees_close(pre, steps)


def test_output_sizes():
    assert cells.lstm(H, proj_size=P).output_size == P
    assert cells.stack(cells.gru(H), cells.simple(2)).output_size == 2
    assert cells.output_projection(cells.lstm(H), 7).output_size == 7


def test_stack_needs_a_cell():
    with pytest.raises(ValueError, match="at least one cell"):
        cells.stack()


# ---------------------------------------------------------------- gradients


# lstm_all has every LSTM option; checking each alone again adds time, not coverage.
GRAD_NAMES = [n for n in NAMES if not n.startswith("lstm_") or n == "lstm_all"]


@pytest.mark.parametrize("name", GRAD_NAMES)
def test_apply_gradients(name):
    cell, _ = CASES[name]()
    params, carry, x = setup(cell)
    with jax.enable_x64(True):
        args = to_f64((params, carry, x))
        modes = ["fwd", "rev"] if name == "lstm_all" else ["rev"]
        check_grads(cell.apply, args, modes)


# ---------------------------------------------------------------- initialisers


def assert_orthonormal(w):
    """Columns orthonormal if the block is tall or square, rows if it is wide."""
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-5)


@pytest.mark.parametrize(
    "factory, gates, rows",
    [
        (lambda: cells.simple(H), 1, H),
        (lambda: cells.lstm(H), 4, H),
        (lambda: cells.lstm(H, proj_size=P), 4, P),
        (lambda: cells.gru(H), 3, H),
        (lambda: cells.gru(H, reset_after=False), 3, H),
    ],
    ids=["simple", "lstm", "lstm_proj", "gru", "gru_reset_before"],
)
def test_recurrent_blocks_are_orthogonal_per_gate(factory, gates, rows):
    wh = np.asarray(factory().init(jax.random.key(1), D)["wh"])
    assert wh.shape == (rows, gates * H)
    blocks = [gate(wh, k, H) for k in range(gates)]
    for block in blocks:
        assert_orthonormal(block)
    for a, b in itertools.pairwise(blocks):  # each gate drew its own matrix
        assert not np.allclose(a, b)


@pytest.mark.parametrize("forget_bias", [1.0, 2.5, 0.0])
def test_lstm_bias_is_zero_except_forget_gate(forget_bias):
    b = np.asarray(cells.lstm(H, forget_bias=forget_bias).init(jax.random.key(0), D)["b"])
    want = np.zeros(4 * H)
    want[H : 2 * H] = forget_bias  # gate order i, f, g, o
    np.testing.assert_array_equal(b, want)


def test_default_biases_and_indrnn_recurrent_weight():
    key = jax.random.key(0)
    np.testing.assert_array_equal(cells.simple(H).init(key, D)["b"], np.zeros(H))
    gru = cells.gru(H).init(key, D)
    np.testing.assert_array_equal(gru["b"], np.zeros(3 * H))
    np.testing.assert_array_equal(gru["bh_n"], np.zeros(H))
    assert "bh_n" not in cells.gru(H, reset_after=False).init(key, D)
    ind = cells.indrnn(H).init(key, D)
    np.testing.assert_array_equal(ind["b"], np.zeros(H))
    assert ind["u"].shape == (H,) and np.all((ind["u"] >= 0) & (ind["u"] < 1))


class Spy:
    """An initialiser that records the shape of every call and the array it returned."""

    def __init__(self, init):
        self.init, self.calls = init, []

    def __call__(self, key, shape, dtype=jnp.float32):
        out = self.init(key, shape, dtype)
        self.calls.append((tuple(shape), out))
        return out

    def outputs(self, shape):
        return [out for s, out in self.calls if s == shape]


@pytest.mark.parametrize("kind", ["simple", "indrnn", "lstm", "gru"])
def test_custom_initialisers_are_honoured(kind):
    kernel = Spy(jax.nn.initializers.he_normal())
    recurrent = Spy(jax.nn.initializers.normal(3.0))
    bias = jax.nn.initializers.constant(0.25)
    kwargs = dict(kernel_init=kernel, recurrent_init=recurrent, bias_init=bias)
    if kind == "lstm":
        params = cells.lstm(H, proj_size=P, forget_bias=1.0, **kwargs).init(jax.random.key(0), D)
        np.testing.assert_array_equal(params["wx"], jnp.concatenate(kernel.outputs((D, H)), -1))
        np.testing.assert_array_equal(params["wh"], jnp.concatenate(recurrent.outputs((P, H)), -1))
        np.testing.assert_array_equal(params["w_proj"], kernel.outputs((H, P))[0])
        want_b = np.full(4 * H, 0.25)
        want_b[H : 2 * H] += 1.0
        np.testing.assert_allclose(params["b"], want_b)
        return
    factory = {"simple": cells.simple, "indrnn": cells.indrnn, "gru": cells.gru}[kind]
    params = factory(H, **kwargs).init(jax.random.key(0), D)
    gates = 3 if kind == "gru" else 1
    rec_shape = (H,) if kind == "indrnn" else (H, H)
    np.testing.assert_array_equal(params["wx"], jnp.concatenate(kernel.outputs((D, H)), -1))
    assert len(kernel.outputs((D, H))) == gates
    rec = params["u" if kind == "indrnn" else "wh"]
    np.testing.assert_array_equal(rec, jnp.concatenate(recurrent.outputs(rec_shape), -1))
    np.testing.assert_allclose(params["b"], np.full(gates * H, 0.25))


def test_output_projection_initialisers_are_honoured():
    kernel = Spy(jax.nn.initializers.he_normal())
    cell = cells.output_projection(
        cells.simple(H), 2, kernel_init=kernel, bias_init=jax.nn.initializers.ones
    )
    params = cell.init(jax.random.key(0), D)
    np.testing.assert_array_equal(params["w"], kernel.outputs((H, 2))[0])
    np.testing.assert_array_equal(params["b"], np.ones(2))


# ---------------------------------------------------------------- learnable initial carry


LEARNABLE = {
    "simple": lambda: cells.simple(H, learn_initial_carry=True),
    "indrnn": lambda: cells.indrnn(H, learn_initial_carry=True),
    "gru": lambda: cells.gru(H, learn_initial_carry=True),
    "lstm": lambda: cells.lstm(H, proj_size=P, learn_initial_carry=True),
}


@pytest.mark.parametrize("kind", list(LEARNABLE))
def test_learnable_initial_carry(kind):
    cell = LEARNABLE[kind]()
    params = cell.init(jax.random.key(0), D)
    assert "carry0" in params
    params = {**params, "carry0": randomize(params["carry0"], 3)}
    # initial_carry broadcasts carry0 over any batch shape.
    for batch_shape in [(B,), (2, 3), ()]:
        carry = cell.initial_carry(params, batch_shape)
        assert jax.tree.structure(carry) == jax.tree.structure(params["carry0"])
        for got, c0 in zip(jax.tree.leaves(carry), jax.tree.leaves(params["carry0"]), strict=True):
            np.testing.assert_array_equal(got, np.broadcast_to(c0, batch_shape + c0.shape))
    # Gradients reach every leaf of carry0 through initial_carry and a step.
    x = randomize(jax.ShapeDtypeStruct((B, D), jnp.float32), 4)

    @fast_jit
    @jax.grad
    def loss(p):
        carry, y = cell.apply(p, cell.initial_carry(p, (B,)), x)
        return jnp.sum(y**2) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

    grads = loss(params)["carry0"]
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6


@pytest.mark.parametrize("kind", list(LEARNABLE))
def test_default_initial_carry_is_zeros_and_not_a_param(kind):
    factory = {
        "simple": cells.simple,
        "indrnn": cells.indrnn,
        "gru": cells.gru,
        "lstm": lambda h: cells.lstm(h, proj_size=P),
    }[kind]
    cell = factory(H)
    params = cell.init(jax.random.key(0), D)
    assert "carry0" not in params
    carry = cell.initial_carry(params, (B,))
    sizes = [H, P] if kind == "lstm" else [H]
    assert [c.shape for c in jax.tree.leaves(carry)] == [(B, s) for s in sizes]
    assert all(np.all(np.asarray(c) == 0) for c in jax.tree.leaves(carry))
    # An int B is (B,), as jnp.zeros takes it; anything else is named.
    assert jax.tree.map(jnp.shape, cell.initial_carry(params, B)) == jax.tree.map(jnp.shape, carry)
    with pytest.raises(TypeError, match=r"batch_shape must be a tuple of ints such as \(B,\)"):
        cell.initial_carry(params, 2.5)


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("factory", [cells.simple, cells.indrnn], ids=["simple", "indrnn"])
@pytest.mark.parametrize(
    "activation, reference",
    [
        ("tanh", np.tanh),
        ("relu", relu),
        ("sin", np.sin),  # not in jax.nn: falls back to jax.numpy
        (jax.nn.sigmoid, sigmoid),
        (lambda z: 2.0 * z, lambda z: 2.0 * z),
    ],
    ids=["tanh", "relu", "jnp_sin", "callable_sigmoid", "lambda"],
)
def test_activation_by_name_or_callable(factory, activation, reference):
    cell = factory(H, activation=activation)
    params, carry, x = setup(cell)
    _, y = fast_jit(cell.apply)(params, carry, x)
    step = ref_simple(reference) if factory is cells.simple else ref_indrnn(reference)
    _, want = step(to_numpy(params), to_numpy(carry), np.asarray(x, np.float64))
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factory", [cells.simple, cells.indrnn], ids=["simple", "indrnn"])
@pytest.mark.parametrize("name", ["no_such_activation", "pi", "initializers"])
def test_bad_activation_name_raises(factory, name):
    with pytest.raises(ValueError, match=f"activation must be a callable.*got '{name}'"):
        factory(H, activation=name)


def test_output_projection_activation_by_name():
    cell = cells.output_projection(cells.simple(H), 2, activation="tanh")
    params, carry, x = setup(cell)
    _, y = cell.apply(params, carry, x)
    _, want = ref_output_projection(ref_simple(np.tanh), np.tanh)(
        to_numpy(params), to_numpy(carry), np.asarray(x, np.float64)
    )
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- mixed precision (compute_dtype)

# Cells whose every matmul operand is a step input (x, the carry's h or a weight matrix), so
# rounding those inputs to bfloat16 beforehand reproduces the bfloat16 matmuls exactly.
MIXED = {
    "simple": lambda **kw: (cells.simple(H, **kw), ref_simple(np.tanh)),
    "lstm": lambda **kw: (cells.lstm(H, peepholes=True, **kw), ref_lstm(H, peepholes=True)),
    "gru": lambda **kw: (cells.gru(H, **kw), ref_gru(H, True)),
    "indrnn": lambda **kw: (cells.indrnn(H, **kw), ref_indrnn(relu)),
}


def to_bfloat16_values(tree, matrices_only=False):
    """Leaves rounded to bfloat16 and stored as float32 (only the 2-D ones with
    ``matrices_only``)."""

    def rounded(a):
        if matrices_only and a.ndim < 2:
            return a
        return jnp.asarray(a, jnp.bfloat16).astype(jnp.float32)

    return jax.tree.map(rounded, tree)


@pytest.mark.parametrize("name", list(MIXED))
def test_bfloat16_compute_equals_float32_on_rounded_operands(name):
    cell, ref = MIXED[name](compute_dtype="bfloat16")
    params, carry, x = setup(cell)
    params = to_bfloat16_values(params, matrices_only=True)
    carry, x = to_bfloat16_values(carry), to_bfloat16_values(x)
    new_carry, y = jax.jit(cell.apply)(params, carry, x)
    want_carry, want_y = ref(to_numpy(params), to_numpy(carry), np.asarray(x, np.float64))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((new_carry, y)))
    assert_trees_close(new_carry, want_carry)
    assert_trees_close(y, want_y)


@pytest.mark.parametrize("name", list(MIXED))
def test_bfloat16_compute_rounds_unrounded_operands(name):
    """Without pre-rounding, bfloat16 matmuls differ from float32 (so the option is in effect)
    but only by bfloat16's relative precision (float32 accumulation)."""
    mixed, _ = MIXED[name](compute_dtype="bfloat16")
    plain, _ = MIXED[name]()
    params, carry, x = setup(plain)
    _, y16 = jax.jit(mixed.apply)(params, carry, x)
    _, y32 = jax.jit(plain.apply)(params, carry, x)
    error = np.max(np.abs(np.asarray(y16) - np.asarray(y32)))
    assert 1e-5 < error < 5e-2


def test_bfloat16_gradients_are_float32_and_close():
    mixed, plain = cells.lstm(H, compute_dtype="bfloat16"), cells.lstm(H)
    params, carry, x = setup(plain)

    def loss(cell, params):
        return jnp.sum(cell.apply(params, carry, x)[1] ** 2)

    g16 = jax.jit(jax.grad(functools.partial(loss, mixed)))(params)
    g32 = jax.jit(jax.grad(functools.partial(loss, plain)))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    assert_trees_close(g16, g32, atol=5e-2, rtol=5e-2)


def test_bad_compute_dtype_raises():
    with pytest.raises(ValueError, match="compute_dtype"):
        cells.lstm(H, compute_dtype="int8")
    with pytest.raises(ValueError, match="compute_dtype"):
        cells.gru(H, compute_dtype="not_a_dtype")


@pytest.mark.parametrize(
    "make",
    [
        lambda: cells.simple(H),
        lambda: cells.gru(H, reset_after=False),
        lambda: cells.lstm(H, peepholes=True),
        lambda: cells.lru(H),
        lambda: cells.stack(cells.gru(H), cells.lstm(H)),
        lambda: cells.output_projection(cells.min_lstm(H), 3),
    ],
    ids=["simple", "gru_before", "lstm_peepholes", "lru", "stack", "output_projection"],
)
def test_a_step_input_of_another_size_is_named(make):
    """A cell stepped by hand (``apply``) got a dot_general shape error naming neither."""
    cell = make()
    params = cell.init(jax.random.key(0), D)
    carry = cell.initial_carry(params, (B,))
    with pytest.raises(ValueError, match=re.escape(f"x must be [..., {D}] (the params' input")):
        cell.apply(params, carry, jnp.ones((B, D + 1)))


@pytest.mark.parametrize(
    "factory", [cells.simple, cells.indrnn, cells.lstm, cells.gru, cells.min_gru, cells.lru]
)
def test_units_and_the_input_size_must_be_positive_ints(factory):
    for units in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"units .* must be an int >= 1, got {units}"):
            factory(units)
    for size in (0, 2.0):  # 0 failed on a ZeroDivisionError inside the initialiser
        with pytest.raises(
            ValueError, match=f"a cell's input size must be an int >= 1, got {size}"
        ):
            factory(4).init(jax.random.key(0), size)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: cells.gru(True), "units (its carry size) must be an int >= 1, got True"),
        (lambda: cells.lru(4, output_size=0), "output_size must be an int >= 1, got 0"),
        (lambda: cells.output_projection(cells.gru(4), 0), "size must be an int >= 1, got 0"),
        (lambda: cells.output_projection(rnnjax.dense(3), 2), "cell must be a Cell"),
        (lambda: cells.stack(cells.gru(4), rnnjax.rnn(cells.gru(4))), "stack's cell 1 must be"),
        (lambda: cells.lstm(4, cell_clip=0.0), "cell_clip must be None or a number > 0, got 0.0"),
        (lambda: cells.indrnn(4, recurrent_max=-1), "recurrent_max must be None or a number > 0"),
        (lambda: cells.lstm(4, proj_size=-2), "proj_size must be an int >= 1, got -2"),
    ],
)
def test_sizes_and_wrapped_cells_are_checked_where_built(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()
