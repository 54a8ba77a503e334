"""Tests for rnnjax/scan.py and rnnjax/cells/_linear.py: parallel scans against step-by-step truth.

The scans are checked against Python loops; each linear cell's parallel unroll against its own
step-by-step unroll (``parallel=False``): outputs, final carries and gradients (params, inputs,
carries) agree to 1e-5 relative in float32 (elementwise, above a floor of 1e-5 of each array's
largest value, where near-cancelling gradient entries live). ``check_vjp``/``check_jvp`` (what
``jax.test_util.check_grads`` runs at order 1) check the parallel form in float64.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from jax.test_util import check_jvp, check_vjp

import rnnjax
from experiments import parallel_scan_benchmark
from rnnjax import cells
from rnnjax.scan import linear_scan, log_linear_scan

B, T, D, H, OUT = 3, 7, 4, 5, 3

CELLS = {
    "min_gru": lambda: cells.min_gru(H),
    "min_lstm": lambda: cells.min_lstm(H),
    "lru": lambda: cells.lru(H, output_size=OUT),
    "min_gru_learnt_carry": lambda: cells.min_gru(H, learn_initial_carry=True),
    "lru_learnt_carry": lambda: cells.lru(H, learn_initial_carry=True),
}
LENGTHS = np.array([T, 3, 0])
RESETS = np.zeros((B, T), bool)
RESETS[0, [0, 4]] = RESETS[1, [2, 5]] = RESETS[2, 1] = True  # one past length 3, one past 0


@functools.cache
def get_cell(name):
    return CELLS[name]()


@functools.cache
def fast_compile_options():
    """XLA CPU options that cut the compile time of associative scans several times."""
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
        return options
    except jax.errors.JaxRuntimeError:
        return {}


def fast_jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=fast_compile_options(), **kwargs)


def randomize(tree, seed, scale=1.0):
    """N(0, scale²) arrays shaped like ``tree``'s leaves, drawn by numpy."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree)


def setup(cell, seed=0, dtype=jnp.float32):
    """Random params (learnt carries included), inputs and a random carry, in ``dtype``."""
    shapes = jax.eval_shape(lambda k: cell.init(k, D), jax.random.key(0))
    params = randomize(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), shapes), seed)
    xs = randomize(jax.ShapeDtypeStruct((B, T, D), dtype), seed + 1)
    carry_shape = jax.eval_shape(lambda: cell.initial_carry(params, (B,)))
    carry = randomize(jax.ShapeDtypeStruct(carry_shape.shape, dtype), seed + 2)
    return params, xs, carry


SCENARIOS = {
    "plain": {},
    "lengths_reverse": {"lengths": True, "reverse": True},
    "resets_lengths_carry": {"resets": True, "lengths": True, "carry": True},
    "everything_reverse": {
        "lengths": True,
        "reverse": True,
        "resets": True,
        "carry": True,
        "time_major": True,
    },
}
# minLSTM shares minGRU's log-space path, so fewer of its scenarios add little
CASES = [(c, s) for c in ("min_gru", "lru") for s in SCENARIOS] + [
    ("min_lstm", "plain"),
    ("min_lstm", "everything_reverse"),
    ("min_gru_learnt_carry", "resets_lengths_carry"),
    ("lru_learnt_carry", "everything_reverse"),
]


def unroll_fn(cell, scenario, parallel):
    """``(params, xs, carry) -> (final, ys)`` for a scenario; xs and ys batch-major."""
    opts = SCENARIOS[scenario]
    kwargs = {"reverse": opts.get("reverse", False), "parallel": parallel}
    if opts.get("lengths"):
        kwargs["lengths"] = jnp.asarray(LENGTHS)
    time_major = opts.get("time_major", False)

    def f(params, xs, carry):
        resets = jnp.asarray(RESETS.T if time_major else RESETS) if opts.get("resets") else None
        xs = jnp.swapaxes(xs, 0, 1) if time_major else xs
        carry = carry if opts.get("carry") else None
        final, ys = rnnjax.unroll(
            cell, params, xs, carry, resets=resets, time_major=time_major, **kwargs
        )
        return final, jnp.swapaxes(ys, 0, 1) if time_major else ys

    return f


def outputs_and_grads(f, params, xs, carry, seed=5):
    """``f``'s outputs and the gradients of a random linear function of them, jitted."""

    def loss(params, xs, carry):
        outs = f(params, xs, carry)
        weights = randomize(jax.eval_shape(lambda: outs), seed)
        return sum(
            jnp.vdot(w, o)
            for w, o in zip(jax.tree.leaves(weights), jax.tree.leaves(outs), strict=True)
        ), outs

    grads, outs = fast_jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)
    return outs, grads


def assert_close(got, want, rtol=1e-5):
    """Elementwise ``rtol``, with an absolute floor of ``rtol`` times each array's largest value."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        atol = rtol * float(np.max(np.abs(w), initial=0.0))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name, scenario", CASES)
def test_parallel_equals_sequential(name, scenario):
    cell = get_cell(name)
    params, xs, carry = setup(cell)
    got = outputs_and_grads(unroll_fn(cell, scenario, True), params, xs, carry)
    want = outputs_and_grads(unroll_fn(cell, scenario, False), params, xs, carry)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert_close(got, want)
    (final, ys), _ = got
    if SCENARIOS[scenario].get("lengths"):
        np.testing.assert_array_equal(ys[1, 3:], 0.0)
        np.testing.assert_array_equal(ys[2], 0.0)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "lru"])
def test_parallel_gradients(name):
    """check_grads on the parallel form, float64, with lengths, resets, reverse and a carry."""
    cell = get_cell(name)
    with jax.enable_x64(True):
        params, xs, carry = setup(cell, seed=3, dtype=jnp.float64)
        f = unroll_fn(cell, "everything_reverse", True)
        fast_f, args = fast_jit(f), (params, xs, carry)
        check_jvp(fast_f, fast_jit(functools.partial(jax.jvp, f)), args, eps=1e-4)
        vjp = fast_jit(lambda args, ct: jax.vjp(f, *args)[1](ct))
        check_vjp(fast_f, lambda *a: (fast_f(*a), functools.partial(vjp, a)), args, eps=1e-4)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "lru"])
def test_generation_steps_match_the_parallel_unroll(name):
    """``cell.apply`` one input at a time (as in generation) gives the parallel unroll's values."""
    cell = get_cell(name)
    params, xs, _ = setup(cell, seed=7)
    final, ys = fast_jit(lambda p, x: rnnjax.unroll(cell, p, x, parallel=True))(params, xs)
    carry, step = cell.initial_carry(params, (B,)), fast_jit(cell.apply)
    for t in range(T):
        carry, y = step(params, carry, xs[:, t])
        assert_close(y, ys[:, t])
    assert_close(carry, final)


def loop(a, b, h0, reverse):
    """The truth: ``h_t = a_t h_{t-1} + b_t`` over axis 0, in NumPy float64/complex128."""
    a, b = np.broadcast_to(np.asarray(a), np.shape(b)), np.asarray(b)
    h, hs = np.asarray(h0), [None] * len(b)
    for t in reversed(range(len(b))) if reverse else range(len(b)):
        h = hs[t] = a[t] * h + b[t]
    return np.stack(hs)


def scan(fn, **kwargs):
    """``fn`` (a scan of rnnjax.scan) with keyword options, compiled fast."""
    return fast_jit(functools.partial(fn, **kwargs))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["real", "complex", "broadcast_a"])
def test_linear_scan_matches_loop(kind, reverse):
    rng = np.random.default_rng(0)
    a, b, h0 = rng.uniform(-1, 1, (9, 2, 3)), rng.normal(size=(9, 2, 3)), rng.normal(size=(2, 3))
    if kind == "complex":
        a = a * np.exp(1j * rng.uniform(0, 6, a.shape))
        b, h0 = b + 1j * rng.normal(size=b.shape), h0 * 1j
    if kind == "broadcast_a":
        a = a[0, 0]  # one multiplier per feature, as in the LRU
    got = scan(linear_scan, reverse=reverse)(a, b, h0)
    assert got.dtype == (jnp.complex64 if kind == "complex" else jnp.float32)
    np.testing.assert_allclose(got, loop(a, b, h0, reverse), rtol=1e-5, atol=1e-5)
    from_zero = scan(linear_scan, reverse=reverse)(a, b)
    np.testing.assert_allclose(from_zero, loop(a, b, 0 * h0, reverse), rtol=1e-5, atol=1e-5)


def test_linear_scan_time_axis_and_float32_accumulation():
    """bfloat16 inputs are accumulated in float32: the result is the exact scan of their values."""
    rng = np.random.default_rng(1)
    a, b = (
        jnp.asarray(x, jnp.bfloat16)
        for x in (rng.uniform(0, 1, (2, 50, 3)), rng.normal(size=(2, 50, 3)))
    )
    got = scan(linear_scan, axis=1)(a, b)
    assert got.dtype == jnp.float32
    a64, b64 = (np.swapaxes(np.asarray(x, np.float64), 0, 1) for x in (a, b))
    want = np.swapaxes(loop(a64, b64, 0.0, False), 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_negative_time_axis_equals_the_positive_one(reverse):
    rng = np.random.default_rng(2)
    a, b, h0 = rng.uniform(0, 1, (3, 9, 4)), rng.normal(size=(3, 9, 4)), rng.normal(size=(3, 4))
    for scan_fn, args in ((linear_scan, (a, b, h0)), (log_linear_scan, (np.log(a), b, h0))):
        got = scan_fn(*args, axis=-2, reverse=reverse)
        np.testing.assert_array_equal(got, scan_fn(*args, axis=1, reverse=reverse))


def test_scan_inputs_are_checked_by_name():
    b = jnp.ones((5, 3))
    cases = [
        (
            lambda: linear_scan(jnp.ones((4, 3)), b),
            "a must broadcast to b's shape (5, 3), got (4, 3)",
        ),
        (
            lambda: linear_scan(0.5, b, jnp.ones(4)),
            "h0 must be b's shape without axis 0, (3,), got (4,)",
        ),
        (lambda: linear_scan(0.5, b, axis=2), "axis 2 is not an axis of b, whose shape is (5, 3)"),
        (lambda: log_linear_scan(0.0, b, jnp.ones((5, 3))), "log_h0 must be log_b's shape"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    with pytest.raises(TypeError, match="takes real logs, got complex64"):
        log_linear_scan(0.0, b.astype(jnp.complex64))


@pytest.mark.parametrize("reverse", [False, True])
def test_log_linear_scan_matches_loop_with_zeros(reverse):
    """-inf logs (zero a: restarts; zero b: no input) give exact zeros and finite gradients."""
    rng = np.random.default_rng(2)
    a, b, h0 = rng.uniform(0, 1, (12, 4)), rng.uniform(0, 2, (12, 4)), rng.uniform(0.1, 1, (4,))
    a[3, 1] = a[7, 2] = 0.0
    b[:, 3] = 0.0
    b[5:, 0] = 0.0
    with np.errstate(divide="ignore"):
        log_a, log_b, log_h0 = (jnp.asarray(np.log(x), jnp.float32) for x in (a, b, h0))
    got = jnp.exp(scan(log_linear_scan, reverse=reverse)(log_a, log_b, log_h0))
    np.testing.assert_allclose(got, loop(a, b, h0, reverse), rtol=1e-5, atol=1e-30)
    from_zero = jnp.exp(scan(log_linear_scan, reverse=reverse)(log_a, log_b))
    np.testing.assert_allclose(from_zero, loop(a, b, 0 * h0, reverse), rtol=1e-5, atol=1e-30)

    def total(log_a, log_b):
        return jnp.sum(jnp.exp(log_linear_scan(log_a, log_b, reverse=reverse)))

    grads = fast_jit(jax.grad(total, (0, 1)))(log_a, log_b)
    assert all(np.isfinite(g).all() for g in grads)


def test_log_space_survives_long_products():
    """4096 steps of a ≈ 0.3: products underflow, the log-space scan still matches float64."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 0.5, (4096, 2)), rng.uniform(0.5, 1.5, (4096, 2))
    got = jnp.exp(scan(log_linear_scan)(np.log(a), np.log(b)))
    np.testing.assert_allclose(got, loop(a, b, np.zeros(2), False), rtol=1e-5)


def test_empty_sequence_keeps_the_carry():
    cell = get_cell("min_gru")
    params, _, carry = setup(cell)
    final, ys = rnnjax.unroll(cell, params, jnp.zeros((B, 0, D)), carry)
    assert ys.shape == (B, 0, H)
    np.testing.assert_array_equal(final, carry)


def test_lru_init_follows_the_paper():
    cell = cells.lru(64, r_min=0.4, r_max=0.9, max_phase=np.pi / 2)
    params = fast_jit(cell.init, static_argnums=1)(jax.random.key(0), D)
    radius = np.exp(-np.exp(params["nu_log"]))
    phase = np.exp(params["theta_log"])
    assert (radius >= 0.4 - 1e-6).all() and (radius <= 0.9 + 1e-6).all()
    assert (phase >= 0).all() and (phase <= np.pi / 2).all()
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - radius**2), rtol=1e-5)
    assert cell.output_size == 64 and cells.lru(8, output_size=3).output_size == 3
    assert cell.initial_carry(params, (2,)).shape == (2, 128)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r_min": 0.5, "r_max": 0.5}, "r_min < r_max"),
        ({"r_max": 1.5}, "r_max <= 1"),
        ({"max_phase": 0.0}, "max_phase must be positive"),
    ],
)
def test_lru_rejects_bad_rings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cells.lru(4, **kwargs)


def test_benchmark_runs_and_finds_the_crossover():
    rows = parallel_scan_benchmark.benchmark(
        ["lru"], [3], batch=2, units=2, input_size=2, repeats=1, compute_dtype="bfloat16"
    )
    assert [r["T"] for r in rows] == [3] and all(r["speedup"] > 0 for r in rows)
    assert rows[0]["compute_dtype"] == "bfloat16"
    assert "T" in parallel_scan_benchmark.crossover(rows)
    fake = [{"T": 64, "speedup": 0.5}, {"T": 256, "speedup": 2.0}]
    assert "crossover at T ≈ 128 " in parallel_scan_benchmark.crossover(fake)


def test_benchmark_refuses_lengths_and_counts_below_one():
    """``--lengths=0`` reported "sequential faster at every T measured (up to T=0)"."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    for values in ({"lengths": ["0"]}, {"lengths": ["abc"]}, {"repeats": 0}, {"batch": 0}):
        with pytest.raises(flags.IllegalFlagValueError), flagsaver.flagsaver(**values):
            pass


# ---------------------------------------------------------------- mixed precision (compute_dtype)


def bfloat16_values(a):
    """``a`` rounded to bfloat16, stored as float32."""
    return jnp.asarray(a, jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_bfloat16_compute_equals_float32_on_rounded_operands(name):
    """The input matmul is their only one: with ``x`` and ``wx`` already bfloat16 values, the
    bfloat16 cell gives the float32 cell's outputs (products exact, float32 accumulation), in
    both forms."""
    mixed, plain = getattr(cells, name)(H, compute_dtype="bfloat16"), getattr(cells, name)(H)
    params, xs, carry = setup(plain)
    params, xs = params | {"wx": bfloat16_values(params["wx"])}, bfloat16_values(xs)
    for parallel in (True, False):
        got = fast_jit(unroll_fn(mixed, "resets_lengths_carry", parallel))(params, xs, carry)
        want = fast_jit(unroll_fn(plain, "resets_lengths_carry", parallel))(params, xs, carry)
        assert_close(got, want)


@pytest.mark.parametrize("name, rtol", [("min_gru", 1e-5), ("min_lstm", 1e-5), ("lru", 1e-2)])
def test_bfloat16_compute_keeps_float32_state_and_gradients(name, rtol):
    """bfloat16 matmuls differ from float32 by bfloat16's precision, not more; the carry, the
    outputs and the gradients stay float32, and the parallel form equals the stepped one (the
    LRU's readout rounds a state the two forms sum in different orders, hence its rtol)."""
    kwargs = {"output_size": OUT} if name == "lru" else {}
    mixed = getattr(cells, name)(H, compute_dtype="bfloat16", **kwargs)
    plain = getattr(cells, name)(H, **kwargs)
    params, xs, carry = setup(plain)
    got = outputs_and_grads(unroll_fn(mixed, "everything_reverse", True), params, xs, carry)
    want = outputs_and_grads(unroll_fn(plain, "everything_reverse", True), params, xs, carry)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got))
    (_, ys16), grads16 = got
    (_, ys32), grads32 = want
    error = np.max(np.abs(np.asarray(ys16) - np.asarray(ys32)))
    assert 1e-5 < error < 5e-2 * np.max(np.abs(np.asarray(ys32)))  # the option is in effect
    assert_close(grads16, grads32, rtol=1e-1)
    stepped = outputs_and_grads(unroll_fn(mixed, "everything_reverse", False), params, xs, carry)
    assert_close(got, stepped, rtol=rtol)


def test_bad_compute_dtype_of_a_linear_cell_is_named():
    with pytest.raises(ValueError, match="compute_dtype must be a float dtype"):
        cells.lru(H, compute_dtype="int8")
