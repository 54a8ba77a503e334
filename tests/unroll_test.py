"""Tests for rnnjax/unroll.py against a Python loop over time, unpadded runs and plain lax.scan.

Gradients are checked as ``jax.test_util.check_grads`` does at order 1 (its ``check_jvp`` and
``check_vjp``) in float64 (``jax.enable_x64``); elsewhere float32 results are compared with
atol/rtol 1e-5 (1e-4 relative for gradients).
"""

import functools
import itertools
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import check_grads, fast_jit

import rnnjax
from rnnjax import cells, fused_backward

B, T, D, H, P = 3, 6, 4, 5, 3

CELLS = {
    "simple": lambda: cells.simple(H),
    "lstm": lambda: cells.lstm(H, peepholes=True, proj_size=P, cell_clip=1.0, layer_norm=True),
    "gru": lambda: cells.gru(H),
    "gru_reset_before": lambda: cells.gru(H, reset_after=False),
    "indrnn": lambda: cells.indrnn(H, recurrent_max=1.0),
    "stack": lambda: cells.stack(cells.lstm(H), cells.gru(P, learn_initial_carry=True)),
    "output_projection": lambda: cells.output_projection(cells.simple(H), 2, activation=jnp.tanh),
    "learnable_lstm": lambda: cells.lstm(H, peepholes=True, proj_size=P, learn_initial_carry=True),
    "learnable_gru": lambda: cells.gru(H, learn_initial_carry=True),
}


@functools.cache
def get_cell(name):
    """One Cell value per name for the whole module, so jitted steps are compiled once."""
    return CELLS[name]()


@functools.cache
def jitted_apply(cell):
    return fast_jit(cell.apply)


def run(cell, params, xs, carry=None, **kwargs):
    """``rnnjax.unroll`` under ``fast_jit``; array keyword arguments are traced."""
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}

    def f(params, xs, carry, arrays):
        return rnnjax.unroll(cell, params, xs, carry, **static, **arrays)

    return fast_jit(f)(params, xs, carry, arrays)


def randomize(tree, seed, scale=1.0):
    """N(0, scale²) arrays shaped like ``tree``'s leaves, drawn by numpy (no per-shape compiles)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree)


def setup(cell, seed=0, shape=(B, T, D)):
    """Random params (learnt initial carries included, so they differ from zeros) and inputs."""
    params = randomize(jax.eval_shape(lambda k: cell.init(k, D), jax.random.key(0)), seed, 0.6)
    xs = randomize(jax.ShapeDtypeStruct(shape, jnp.float32), seed + 1)
    return params, xs


def random_carry(cell, params, seed, batch=B):
    return randomize(jax.eval_shape(lambda: cell.initial_carry(params, (batch,))), seed)


def loop(cell, params, xs, carry=None, *, reverse=False):
    """The truth: ``cell.apply`` step by step in Python, ``xs [B, T, D]``."""
    carry = cell.initial_carry(params, xs.shape[:1]) if carry is None else carry
    step = jitted_apply(cell)
    ys = [None] * xs.shape[1]
    for t in reversed(range(xs.shape[1])) if reverse else range(xs.shape[1]):
        carry, ys[t] = step(params, carry, xs[:, t])
    if not ys:
        return carry, jnp.zeros(xs.shape[:2] + (cell.output_size,))
    return carry, jnp.stack(ys, 1)


def take(tree, i):
    """Example ``i`` of every leaf, keeping a batch axis of 1."""
    return jax.tree.map(lambda a: a[i : i + 1], tree)


def assert_trees_close(actual, expected, atol=1e-5, rtol=1e-5):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert jnp.shape(a) == jnp.shape(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=rtol)


# ---------------------------------------------------------------- against a Python loop


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    "name", ["simple", "lstm", "gru", "gru_reset_before", "indrnn", "stack", "output_projection"]
)
def test_unroll_matches_python_loop(name, reverse):
    cell = get_cell(name)
    params, xs = setup(cell)
    final, ys = run(cell, params, xs, reverse=reverse)
    assert ys.shape == (B, T, cell.output_size)
    want_final, want_ys = loop(cell, params, xs, reverse=reverse)
    assert_trees_close(ys, want_ys)
    assert_trees_close(final, want_final)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", ["lstm", "stack"])
def test_explicit_carry_is_used(name, reverse):
    cell = get_cell(name)
    params, xs = setup(cell)
    carry = random_carry(cell, params, seed=5)
    final, ys = run(cell, params, xs, carry, reverse=reverse)
    want_final, want_ys = loop(cell, params, xs, carry, reverse=reverse)
    assert_trees_close(ys, want_ys)
    assert_trees_close(final, want_final)
    _, default_ys = loop(cell, params, xs, reverse=reverse)
    assert not np.allclose(ys, default_ys, atol=1e-3)


# ---------------------------------------------------------------- variable lengths


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", ["learnable_lstm", "stack"])
def test_padded_batch_equals_each_sequence_alone(name, reverse):
    cell = get_cell(name)
    params, xs = setup(cell)
    lengths = jnp.array([4, 0, T])
    # What lies past a sequence's end must not matter.
    garbage = jnp.where(jnp.arange(T)[None, :, None] < lengths[:, None, None], xs, 1e3)
    final, ys = run(cell, params, garbage, lengths=lengths, reverse=reverse)
    for i, n in enumerate(np.asarray(lengths)):
        alone_final, alone_ys = loop(cell, params, xs[i : i + 1, :n], reverse=reverse)
        assert_trees_close(ys[i : i + 1, :n], alone_ys)
        np.testing.assert_array_equal(ys[i, n:], 0.0)
        assert_trees_close(take(final, i), alone_final)
    # An empty sequence keeps the (learnt, non-zero) initial carry.
    assert_trees_close(take(final, 1), cell.initial_carry(params, (1,)))
    assert max(np.abs(c).max() for c in jax.tree.leaves(take(final, 1))) > 0.1


def test_unroll_of_an_unpadded_sequence_matches_its_padded_run():
    cell = get_cell("learnable_lstm")
    params, xs = setup(cell)
    final, ys = rnnjax.unroll(cell, params, xs, lengths=jnp.array([T, 4, 2]), reverse=True)
    alone_final, alone_ys = rnnjax.unroll(cell, params, xs[1:2, :4], reverse=True)
    assert_trees_close(ys[1:2, :4], alone_ys)
    assert_trees_close(take(final, 1), alone_final)
    # T == 0 is a valid (empty) sequence: the final carry is the initial carry.
    final, ys = rnnjax.unroll(cell, params, xs[:, :0])
    assert ys.shape == (B, 0, P)
    assert_trees_close(final, cell.initial_carry(params, (B,)))


# ---------------------------------------------------------------- options that must not matter

VARIANTS = {
    "fused_backward": dict(fused_backward=True),
    "hoist_true": dict(hoist=True),
    "hoist_true_remat4": dict(hoist=True, remat=4),
    "unroll3": dict(unroll=3),
    "unroll_true": dict(unroll=True),
    "remat_true": dict(remat=True),
    "remat2_divides_T": dict(remat=2),
    "remat4_not_divides_T": dict(remat=4),
}
# remat changes how unroll itself scans (blocks, time padding, masks): every combination of
# direction and masking. hoist and unroll only choose the step function and lax.scan's unroll,
# so they run forward unmasked and backward masked, saving XLA compilations (most of the time).
VARIANT_CASES = [
    (v, reverse, masked)
    for v in VARIANTS
    for reverse, masked in itertools.product([False, True], repeat=2)
    if v.startswith(("remat", "fused")) or reverse == masked
]
AUTODIFF = (("fused_backward", False),)  # the reference: plain autodiff of lax.scan


@functools.cache
def variant_problem():
    """A cell with a tuple carry and a learnt initial carry, data, lengths, resets and weights."""
    cell = cells.lstm(H, learn_initial_carry=True)
    params, xs = setup(cell, seed=10)
    carry = random_carry(cell, params, seed=12)
    lengths = jnp.array([T, 0, 3])
    resets = jnp.zeros((B, T), bool).at[0, 2].set(True).at[2, 1].set(True)
    w_ys = randomize(jax.ShapeDtypeStruct((B, T, H), jnp.float32), 13)
    return cell, params, xs, carry, lengths, resets, w_ys


@functools.cache
def outputs_and_grads(options, reverse, masked):
    """Final carry, ys and grads of a scalar loss w.r.t. (params, xs, carry), under jit."""
    cell, params, xs, carry, lengths, resets, w_ys = variant_problem()
    kwargs = dict(options, reverse=reverse)
    if masked:
        kwargs.update(lengths=lengths, resets=resets)

    def loss(params, xs, carry):
        final, ys = rnnjax.unroll(cell, params, xs, carry, **kwargs)
        value = jnp.sum(ys * w_ys) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))
        return value, (final, ys)

    grad_fn = fast_jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, aux), grads = grad_fn(params, xs, carry)
    return aux, grads


@pytest.mark.parametrize(
    "variant, reverse, masked",
    VARIANT_CASES,
    ids=[
        f"{v}-{'reverse' if r else 'forward'}-{'lengths_resets' if m else 'full'}"
        for v, r, m in VARIANT_CASES
    ],
)
def test_variant_equals_plain_scan(variant, reverse, masked):
    aux, grads = outputs_and_grads(tuple(VARIANTS[variant].items()), reverse, masked)
    want_aux, want_grads = outputs_and_grads(AUTODIFF, reverse, masked)
    assert_trees_close(aux, want_aux)
    assert_trees_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    # The loss reaches all it should: params (the learnt carry0 only through resets), xs, carry.
    params_grad, xs_grad, carry_grad = grads
    assert np.abs(xs_grad).max() > 0
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(carry_grad))
    assert all(np.abs(g).max() > 0 for k, g in params_grad.items() if k != "carry0")
    carry0_reached = [np.abs(g).max() > 0 for g in jax.tree.leaves(params_grad["carry0"])]
    assert all(carry0_reached) if masked else not any(carry0_reached)


# One-feature inputs are prefetched through the carry (a faster scan on XLA:CPU); a second input
# feature with zero weights takes the plain scan and must give the same results.
ONE_FEATURE_CASES = {
    "forward": {},
    "reverse_lengths_resets": dict(reverse=True, masked=True),
    "remat4_lengths_resets": dict(remat=4, masked=True),
    "reverse_remat_true": dict(reverse=True, remat=True),
}


@pytest.mark.parametrize("case", list(ONE_FEATURE_CASES))
@pytest.mark.parametrize("name", ["simple", "lstm", "gru", "indrnn"])
def test_one_feature_input_equals_a_second_feature_with_zero_weights(name, case):
    options = dict(ONE_FEATURE_CASES[case])
    cell = get_cell(name)
    params = randomize(jax.eval_shape(lambda k: cell.init(k, 2), jax.random.key(0)), 20, 0.6)
    params = dict(params, wx=params["wx"].at[1].set(0.0))  # feature 1 has no effect
    xs2 = randomize(jax.ShapeDtypeStruct((B, T, 2), jnp.float32), 21)
    w_ys = randomize(jax.ShapeDtypeStruct((B, T, cell.output_size), jnp.float32), 22)
    if options.pop("masked", False):
        resets = jnp.zeros((B, T), bool).at[0, 2].set(True)
        options.update(lengths=jnp.array([T, 0, 3]), resets=resets)

    def loss(params, xs):
        final, ys = rnnjax.unroll(cell, params, xs, **options)
        return jnp.sum(ys * w_ys) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final)), ys

    grad_fn = fast_jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (value1, ys1), (p_grad1, x_grad1) = grad_fn(dict(params, wx=params["wx"][:1]), xs2[..., :1])
    (value2, ys2), (p_grad2, x_grad2) = grad_fn(params, xs2)
    assert_trees_close((value1, ys1, x_grad1), (value2, ys2, x_grad2[..., :1]))
    assert_trees_close(p_grad1, dict(p_grad2, wx=p_grad2["wx"][:1]))
    assert np.abs(x_grad1).max() > 0


# ---------------------------------------------------------------- gradients vs finite differences


@pytest.mark.parametrize(
    "options, modes",
    [
        (dict(reverse=True, remat=4, resets=True), ["rev"]),
        (dict(remat=True), ["fwd", "rev"]),
        (dict(reverse=True, resets=True), ["rev"]),  # the fused backward pass
    ],
    ids=["lengths_reverse_remat4_resets", "lengths_remat", "lengths_reverse_resets_fused"],
)
def test_unroll_gradients(options, modes):
    with jax.enable_x64(True):
        cell = cells.lstm(H, learn_initial_carry=True)
        params, xs = setup(cell, seed=20)
        params, xs = jax.tree.map(lambda a: a.astype(jnp.float64), (params, xs))
        carry = random_carry(cell, params, seed=21)
        kwargs = dict(options, lengths=jnp.array([T, 2, 5]))
        if kwargs.pop("resets", False):
            kwargs["resets"] = jnp.zeros((B, T), bool).at[:, 3].set(True)

        def f(params, xs, carry):
            return rnnjax.unroll(cell, params, xs, carry, **kwargs)

        check_grads(f, (params, xs, carry), modes)


# ---------------------------------------------------------------- resets


def reference_with_resets(cell, params, xs, reset_times, reverse):
    """Runs ``xs [1, T', D]`` piece by piece, each piece from the initial carry.

    A reset at t starts a fresh run at step t: forwards the pieces are split before t, backwards
    (where step t follows step t+1) after it.
    """
    n = xs.shape[1]
    cuts = sorted({t + 1 if reverse else t for t in reset_times} | {0, n})
    spans = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    pieces = [loop(cell, params, xs[:, a:b], reverse=reverse) for a, b in spans]
    ys = jnp.concatenate([p[1] for p in pieces], 1)
    final = pieces[0][0] if reverse else pieces[-1][0]
    return final, ys


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("learnable", [False, True], ids=["zero_carry", "learnt_carry"])
def test_reset_restarts_from_the_initial_carry(learnable, reverse):
    cell = get_cell("learnable_gru" if learnable else "gru")
    params, xs = setup(cell, seed=30)
    reset_times = {0: [2], 1: [1, 4], 2: [4]}  # example 2's reset lies in its padding
    resets = np.zeros((B, T), bool)
    for i, times in reset_times.items():
        resets[i, times] = True
    lengths = jnp.array([T, T, 3])
    final, ys = run(cell, params, xs, lengths=lengths, resets=jnp.asarray(resets), reverse=reverse)
    for i in range(2):
        want_final, want_ys = reference_with_resets(
            cell, params, xs[i : i + 1], reset_times[i], reverse
        )
        assert_trees_close(ys[i : i + 1], want_ys)
        assert_trees_close(take(final, i), want_final)
    want_final, want_ys = loop(cell, params, xs[2:3, :3], reverse=reverse)
    assert_trees_close(ys[2:3, :3], want_ys)
    np.testing.assert_array_equal(ys[2, 3:], 0.0)
    assert_trees_close(take(final, 2), want_final)


# ---------------------------------------------------------------- layouts and transformations


def test_time_major_equals_batch_major_transposed():
    reverse = True
    cell = get_cell("learnable_lstm")
    params, xs = setup(cell, seed=40)
    lengths = jnp.array([T, 2, 5])
    resets = jnp.zeros((B, T), bool).at[0, 3].set(True)
    final, ys = run(cell, params, xs, lengths=lengths, resets=resets, reverse=reverse)
    tm_final, tm_ys = run(
        cell,
        params,
        jnp.swapaxes(xs, 0, 1),
        lengths=lengths,
        resets=resets.T,
        reverse=reverse,
        time_major=True,
    )
    assert tm_ys.shape == (T, B, P)
    assert_trees_close(tm_ys, jnp.swapaxes(ys, 0, 1))
    assert_trees_close(tm_final, final)


def test_jit_equals_eager():
    cell = get_cell("stack")
    params, xs = setup(cell, seed=50)
    lengths = jnp.array([1, T, 4])

    def f(params, xs, lengths):
        return rnnjax.unroll(cell, params, xs, lengths=lengths, reverse=True, remat=4)

    assert_trees_close(jax.jit(f)(params, xs, lengths), f(params, xs, lengths))


def test_vmap_over_an_extra_leading_axis():
    cell = get_cell("learnable_lstm")
    params, xs = setup(cell, seed=60, shape=(2, B, T, D))
    lengths = jnp.array([[T, 1, 3], [0, 4, T]])

    def f(xs, lengths):
        return rnnjax.unroll(cell, params, xs, lengths=lengths)

    final, ys = fast_jit(jax.vmap(f))(xs, lengths)
    assert ys.shape == (2, B, T, P)
    one = fast_jit(f)
    for n in range(2):
        want_final, want_ys = one(xs[n], lengths[n])
        assert_trees_close(ys[n], want_ys)
        assert_trees_close(take(final, n), jax.tree.map(lambda a: a[None], want_final))
    # Shared lengths (not mapped) work too.
    _, ys_shared = jax.vmap(f, in_axes=(0, None))(xs, lengths[0])  # eager vmap
    assert_trees_close(ys_shared[1], one(xs[1], lengths[0])[1])


# ---------------------------------------------------------------- bad inputs


@functools.cache
def error_problem():
    cell = get_cell("learnable_lstm")
    params, xs = setup(cell, seed=70)
    return cell, params, xs


def drop(params, key):
    return {k: v for k, v in params.items() if k != key}


def bad_call(case):
    cell, params, xs = error_problem()
    stack = get_cell("stack")  # lstm(H), then gru(P)
    stack_params = stack.init(jax.random.key(0), D)
    stack_params = stack_params | {"1": stack_params["1"] | {"b": stack_params["1"]["b"][1:]}}
    carry = cell.initial_carry(params, (B,))
    lengths = jnp.array([1, 2, 3])
    calls = {
        "rank": lambda: rnnjax.unroll(cell, params, xs[:, :, 0]),
        "rank_time_major": lambda: rnnjax.unroll(cell, params, xs[0], time_major=True),
        "feature_size": lambda: rnnjax.unroll(cell, params, jnp.ones((B, T, D + 1))),
        "int_xs": lambda: rnnjax.unroll(cell, params, jnp.ones((B, T, D), jnp.int32)),
        "lengths_shape": lambda: rnnjax.unroll(cell, params, xs, lengths=lengths[:2]),
        "lengths_2d": lambda: rnnjax.unroll(cell, params, xs, lengths=lengths[:, None]),
        "lengths_float": lambda: rnnjax.unroll(cell, params, xs, lengths=jnp.ones(B)),
        "lengths_negative": lambda: rnnjax.unroll(cell, params, xs, lengths=lengths.at[0].set(-1)),
        "lengths_too_long": lambda: rnnjax.unroll(cell, params, xs, lengths=lengths.at[2].set(7)),
        "carry_structure": lambda: rnnjax.unroll(cell, params, xs, tuple(carry)),
        "carry_missing_leaf": lambda: rnnjax.unroll(cell, params, xs, carry.c),
        "carry_shape": lambda: rnnjax.unroll(cell, params, xs, carry._replace(h=carry.h[:, :2])),
        "carry_batch": lambda: rnnjax.unroll(cell, params, xs, take(carry, 0)),
        "resets_shape": lambda: rnnjax.unroll(cell, params, xs, resets=jnp.zeros((T, B), bool)),
        "resets_time_major_shape": lambda: rnnjax.unroll(
            cell, params, jnp.swapaxes(xs, 0, 1), resets=jnp.zeros((B, T), bool), time_major=True
        ),
        "resets_dtype": lambda: rnnjax.unroll(cell, params, xs, resets=jnp.zeros((B, T))),
        "carry_dtype": lambda: rnnjax.unroll(
            cell, params, xs, carry._replace(h=carry.h.astype(jnp.bfloat16))
        ),
        "remat_negative": lambda: rnnjax.unroll(cell, params, xs, remat=-1),
        "params_missing": lambda: rnnjax.unroll(cell, drop(params, "wh"), xs),
        "params_unexpected": lambda: rnnjax.unroll(cell, params | {"wy": params["wh"]}, xs),
        "params_shape": lambda: rnnjax.unroll(
            cell, params | {"wh": jnp.pad(params["wh"], ((0, 0), (0, 1)))}, xs
        ),
        "params_nested_shape": lambda: rnnjax.unroll(stack, stack_params, xs),
    }
    return calls[case]


ERRORS = {
    "rank": (ValueError, f"xs must be [B, T, {D}] (rank 3), got shape ({B}, {T}) (rank 2)"),
    "rank_time_major": (ValueError, f"xs (time-major) must be [T, B, {D}] (rank 3), got shape"),
    "feature_size": (ValueError, f"xs must be [B, T, {D}], got shape ({B}, {T}, {D + 1})"),
    "int_xs": (TypeError, "xs must have a floating dtype, got int32"),
    "lengths_shape": (ValueError, f"lengths must have shape ({B},) = [B], got (2,)"),
    "lengths_2d": (ValueError, f"lengths must have shape ({B},) = [B], got ({B}, 1)"),
    "lengths_float": (TypeError, "lengths must have an integer dtype, got float32"),
    "lengths_negative": (ValueError, f"lengths must lie in [0, T={T}], got min -1 and max 3"),
    "lengths_too_long": (ValueError, f"lengths must lie in [0, T={T}], got min 1 and max 7"),
    "carry_structure": (
        ValueError,
        f"carry must be like LSTMCarry(c='float32[{B}, {H}]', h='float32[{B}, {P}]'), "
        f"got ('float32[{B}, {H}]', 'float32[{B}, {P}]')",
    ),
    "carry_missing_leaf": (ValueError, "carry must be like LSTMCarry("),
    "carry_shape": (ValueError, f"got LSTMCarry(c=({B}, {H}), h=({B}, 2))"),
    "carry_batch": (ValueError, f"carry must have shapes LSTMCarry(c=({B}, {H}), h=({B}, {P}))"),
    "resets_shape": (ValueError, f"resets must have shape ({B}, {T}) = [B, T], got ({T}, {B})"),
    "resets_time_major_shape": (
        ValueError,
        f"resets (time-major) must have shape ({T}, {B}) = [T, B], got ({B}, {T})",
    ),
    "resets_dtype": (TypeError, "resets must be boolean, got float32"),
    "carry_dtype": (
        TypeError,
        "carry must have dtypes LSTMCarry(c='float32', h='float32'), "
        "got LSTMCarry(c='float32', h='bfloat16')",
    ),
    "remat_negative": (ValueError, "remat must be a bool or an int >= 1 (steps per block), got -1"),
    "params_missing": (
        ValueError,
        "params must have the entries of the cell's init: missing ['wh'], unexpected none",
    ),
    "params_unexpected": (ValueError, "missing none, unexpected ['wy']"),
    "params_shape": (
        ValueError,
        f"params must have the shapes of the cell's init for input size {D}: "
        f"['wh'] ({P}, {4 * H + 1}) (expected ({P}, {4 * H}))",
    ),
    "params_nested_shape": (ValueError, f"['1']['b'] ({3 * P - 1},) (expected ({3 * P},))"),
}


@pytest.mark.parametrize(
    "case",
    list(ERRORS),
)
def test_bad_input_names_expected_and_actual(case):
    error, message = ERRORS[case]
    with pytest.raises(error, match=re.escape(message)):
        bad_call(case)()


def test_shape_errors_are_raised_at_trace_time_under_jit():
    cell, params, _ = error_problem()
    f = jax.jit(lambda xs: rnnjax.unroll(cell, params, xs))
    with pytest.raises(ValueError, match=re.escape(f"xs must be [B, T, {D}], got shape")):
        f(jnp.ones((B, T, D + 2)))


def test_lengths_may_be_a_python_list():
    cell = cells.gru(3)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (2, 4, 2))
    got = rnnjax.unroll(cell, params, xs, lengths=[4, 1])
    want = rnnjax.unroll(cell, params, xs, lengths=jnp.array([4, 1]))
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_remat_may_be_a_numpy_int():
    """A block size computed with numpy is an int like any other."""
    cell = get_cell("gru_reset_before")
    params, xs = setup(cell)
    got = run(cell, params, xs, remat=np.int64(4))
    jax.tree.map(np.testing.assert_array_equal, got, run(cell, params, xs, remat=4))


def test_lengths_list_on_the_parallel_path_keeping_only_the_last_output():
    cell = cells.min_gru(4)
    params, xs = cell.init(jax.random.key(0), 4), jnp.ones((3, 5, 4))
    options = dict(parallel=True, return_sequences=False)
    got = rnnjax.unroll(cell, params, xs, lengths=[5, 0, 2], **options)
    want = rnnjax.unroll(cell, params, xs, lengths=jnp.array([5, 0, 2]), **options)
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize(
    "make", [lambda: cells.lru(3), lambda: cells.lstm(3, peepholes=True, layer_norm=True)]
)
def test_x64_mode_unrolls_float32_and_float64_inputs(make):
    """Params are float32 whatever the mode; the carry follows float64 inputs."""
    with jax.enable_x64(True):
        cell = make()
        params = cell.init(jax.random.key(0), 2)
        assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        for dtype in (jnp.float32, jnp.float64):
            for parallel in (False, True) if cell.linear is not None else (False,):
                # jitted: one compiled program, not one per primitive in x64 mode
                run = jax.jit(functools.partial(rnnjax.unroll, cell), static_argnames="parallel")
                carry, ys = run(params, jnp.ones((2, 4, 2), dtype), parallel=parallel)
                assert ys.dtype == dtype and jax.tree.leaves(carry)[0].dtype == dtype


def test_a_traced_length_past_the_end_stops_at_the_last_step_in_both_forms():
    """Under jit a length cannot be checked; past T, the stepped form runs every step, and the
    parallel form's last output is read at T - 1 too (it read past the array: NaN)."""
    cell = cells.min_gru(3)
    params, xs = cell.init(jax.random.key(1), 2), jax.random.normal(jax.random.key(0), (2, 5, 2))

    def last(parallel):
        run = lambda lengths: rnnjax.unroll(
            cell, params, xs, lengths=lengths, parallel=parallel, return_sequences=False
        )
        return jax.jit(run)(jnp.array([7, 2]))[1]

    want = rnnjax.unroll(cell, params, xs[:1], parallel=False, return_sequences=False)[1]
    np.testing.assert_allclose(last(False)[:1], want, rtol=1e-6)
    np.testing.assert_allclose(last(True), last(False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [cells.lstm, cells.gru])
@pytest.mark.parametrize("float64", ["inputs", "bias", "initial_carry"])
def test_x64_mode_differentiates_float32_params_beside_float64_values(make, float64):
    """The fused backward pass sums its weight gradients in the steps' dtype, float64 here,
    whether float64 enters through the inputs, a param or a learnt initial carry."""
    with jax.enable_x64(True):
        cell = make(3, learn_initial_carry=True)
        params = cell.init(jax.random.key(0), 2)
        xs = jax.random.normal(jax.random.key(1), (2, 4, 2), jnp.float32)
        if float64 == "inputs":
            xs = xs.astype(jnp.float64)
        elif float64 == "bias":
            params["b"] = params["b"].astype(jnp.float64)
        else:
            params["carry0"] = jax.tree.map(lambda a: a.astype(jnp.float64), params["carry0"])

        def grad(fused):
            loss = lambda p: jnp.sum(jnp.sin(rnnjax.unroll(cell, p, xs, fused_backward=fused)[1]))
            return jax.jit(jax.grad(loss))(params)

        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            grad(True),
            grad(False),
        )


def scan_eqns(jaxpr):
    """Every ``lax.scan`` equation in ``jaxpr``, nested ones included, outermost first."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn
        for sub in jax.core.jaxprs_in_params(eqn.params):
            yield from scan_eqns(sub)


def scan_unroll(cell, length, **options):
    """The ``unroll`` of the ``lax.scan`` that ``rnnjax.unroll`` runs for ``length`` steps."""
    params = cell.init(jax.random.key(0), D)
    jaxpr = jax.make_jaxpr(lambda xs: rnnjax.unroll(cell, params, xs, **options))(
        jnp.zeros((B, length, D))
    )
    (scan,) = scan_eqns(jaxpr.jaxpr)  # inside a custom_vjp call when the backward is fused
    return scan.params["unroll"]


@pytest.mark.parametrize(
    "make_cell, length, options, expected",
    [
        (lambda: cells.simple(H), 6, {}, 6),  # the simple cell's hint: full unrolling
        (lambda: cells.simple(H), 32, {}, 32),
        (lambda: cells.simple(H), 33, {}, 1),  # too long to unroll fully
        (lambda: cells.simple(H), 6, {"unroll": 2}, 2),  # an explicit unroll wins
        (lambda: cells.lstm(H), 6, {}, 1),
        (lambda: cells.gru(H), 6, {}, 1),
        (lambda: cells.stack(cells.simple(H), cells.simple(H)), 6, {}, 6),
        (lambda: cells.stack(cells.simple(H), cells.lstm(H)), 6, {}, 1),
        (lambda: cells.output_projection(cells.simple(H), 2), 6, {}, 6),
    ],
)
def test_default_unroll_is_the_cells_own(make_cell, length, options, expected):
    assert scan_unroll(make_cell(), length, **options) == expected


@pytest.mark.parametrize("remat", [2, False], ids=["remat2", "fused_backward"])
@pytest.mark.parametrize("name", ["lstm", "stack", "learnable_gru"])
@pytest.mark.parametrize("given_carry", [False, True])
def test_unroll_inside_shard_map_equals_plain_unroll(name, given_carry, remat):
    """Under ``jax.shard_map`` (vma checks on) the initial carry must vary over the mesh axis
    like the inputs do, or ``lax.scan`` rejects the carry types; results equal the plain run."""
    cell = get_cell(name)
    params, xs = setup(cell)
    carry = random_carry(cell, params, 2) if given_carry else None
    options = {
        "lengths": jnp.array([T, 2, 4]),
        "resets": jnp.zeros((B, T), bool).at[:, 3].set(True),
    }
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    rows = jax.sharding.PartitionSpec("data")

    def unroll(params, xs, carry, options):
        return rnnjax.unroll(cell, params, xs, carry, remat=remat, **options)

    sharded = jax.shard_map(
        unroll,
        mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec(), rows, rows, rows),
        out_specs=rows,
    )
    assert_trees_close(
        fast_jit(sharded)(params, xs, carry, options),
        run(cell, params, xs, carry, remat=remat, **options),
    )


SHARD_MAP_GRADIENT_CELLS = {
    "lstm_fused": lambda: cells.lstm(H),
    "lstm_fused_peepholes": lambda: cells.lstm(H, peepholes=True, learn_initial_carry=True),
    "gru_fused": lambda: cells.gru(H),
    "lstm_bfloat16": lambda: cells.lstm(H, compute_dtype="bfloat16"),
    "simple_bfloat16": lambda: cells.simple(H, compute_dtype="bfloat16"),
}


@pytest.mark.parametrize("name", list(SHARD_MAP_GRADIENT_CELLS))
@pytest.mark.parametrize("where", ["grad_inside", "grad_of_shard_map"])
def test_gradient_inside_shard_map_with_replicated_params(name, where):
    """Params passed replicated (``PartitionSpec()``, invariant over the mesh) into a
    ``shard_map`` whose rows vary: the fused backward pass and the bfloat16 matmul's VJP (both
    ``custom_vjp``) must return cotangents of their arguments' types, or JAX refuses them. The
    gradient, taken inside the ``shard_map`` or of it, equals the plain one."""
    cell = SHARD_MAP_GRADIENT_CELLS[name]()
    params, xs = setup(cell, seed=50)
    lengths = jnp.array([T, 2, 0])
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    rows, same = jax.sharding.PartitionSpec("data"), jax.sharding.PartitionSpec()

    def loss(params, xs, lengths):
        _, ys = rnnjax.unroll(cell, params, xs, lengths=lengths)
        return jnp.sum(jnp.sin(ys))

    if where == "grad_inside":  # the gradient of a replicated input comes back summed
        grad = jax.shard_map(jax.grad(loss), mesh=mesh, in_specs=(same, rows, rows), out_specs=same)
    else:
        summed = jax.shard_map(
            lambda *args: jax.lax.psum(loss(*args), "data"),
            mesh=mesh,
            in_specs=(same, rows, rows),
            out_specs=same,
        )
        grad = jax.grad(summed)
    assert_trees_close(
        fast_jit(grad)(params, xs, lengths),
        fast_jit(jax.grad(loss))(params, xs, lengths),
        rtol=1e-4,
    )


# ---------------------------------------------------------------- the last output alone

LAST_OUTPUT_CASES = {
    "simple_full_unroll": ("simple", {}),
    "lstm_fused": ("lstm", {"masked": True}),
    "lstm_fused_reverse": ("lstm", {"masked": True, "reverse": True}),
    "stack_remat2": ("stack", {"masked": True, "remat": 2}),
    "min_gru_parallel": ("min_gru", {"masked": True, "parallel": True}),
    "min_gru_parallel_reverse": ("min_gru", {"masked": True, "parallel": True, "reverse": True}),
}


@pytest.mark.parametrize("case", list(LAST_OUTPUT_CASES))
def test_last_output_alone_equals_its_entry_of_all_outputs(case):
    """``return_sequences=False`` gives each sequence's output at the last step it runs (its
    last valid step; position 0 in reverse; zeros when empty) and the same gradients as taking
    that entry of all the outputs, on every path: the scan, the fused backward pass, remat and
    the parallel form."""
    name, options = LAST_OUTPUT_CASES[case]
    cell = cells.min_gru(H) if name == "min_gru" else get_cell(name)
    params, xs = setup(cell, seed=40)
    carry = random_carry(cell, params, seed=41)
    w = randomize(jax.ShapeDtypeStruct((B, cell.output_size), jnp.float32), 42)
    options = dict(options)
    lengths = jnp.array([T, 0, 4]) if options.pop("masked", False) else None
    if lengths is not None and "parallel" not in options:
        options["resets"] = jnp.zeros((B, T), bool).at[0, 2].set(True)
    reverse = options.get("reverse", False)

    def loss(params, xs, carry, last_only):
        final, out = rnnjax.unroll(
            cell, params, xs, carry, lengths=lengths, return_sequences=not last_only, **options
        )
        if not last_only:  # the reference: plain outputs, then the entry wanted
            out = out[:, 0] if reverse else rnnjax.models.pool_steps(out, lengths, "last")
        finals = sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))
        return jnp.sum(jnp.tanh(out) * w) + finals, out

    def outputs_and_grads(last_only):
        f = jax.value_and_grad(functools.partial(loss, last_only=last_only), (0, 1, 2), True)
        return fast_jit(f)(params, xs, carry)

    (_, last), grads = outputs_and_grads(True)
    (_, want_last), want_grads = outputs_and_grads(False)
    assert last.shape == (B, cell.output_size)
    assert_trees_close(last, want_last)
    assert_trees_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    assert np.abs(last).min(axis=1)[0] > 0  # a real output, not a zero fill
    if lengths is not None:
        np.testing.assert_array_equal(last[1], 0.0)  # the empty sequence


# ---------------------------------------------------------------- the fused backward pass


def without_activations(cell):
    """The same cell with its fused split's ``GateActivations`` dropped (the ``additive`` path)."""
    return cell._replace(fused=cell.fused._replace(activations=None))


FUSED_CELLS = {
    "lstm_all_options": lambda: get_cell("lstm"),  # layer norm: pre and rec kept apart
    "learnable_lstm": lambda: get_cell("learnable_lstm"),  # additive: z = pre + rec kept
    "learnable_gru": lambda: get_cell("learnable_gru"),
    # no peepholes: the activations are kept (GateActivations), as a GRU's are
    "clipped_lstm": lambda: cells.lstm(H, proj_size=P, cell_clip=0.3, learn_initial_carry=True),
    "lstm_bfloat16": lambda: cells.lstm(H, proj_size=P, compute_dtype="bfloat16"),
    "gru_bfloat16": lambda: cells.gru(H, learn_initial_carry=True, compute_dtype="bfloat16"),
    # FusedStep.additive=2H without GateActivations: r, z summed, n's pre and rec kept apart
    "gru_summed_rz": lambda: without_activations(cells.gru(H, learn_initial_carry=True)),
}
# float32: weight gradients summed inside the reverse loop; bfloat16 at these sizes: after it,
# and inside it when the size limit for "after" is set below any size
FUSED_CASES = [(name, False) for name in FUSED_CELLS] + [
    ("lstm_bfloat16", True),
    ("gru_bfloat16", True),
]


@pytest.mark.parametrize(
    "name, in_loop",
    FUSED_CASES,
    ids=[name + ("-weight_grads_in_loop" if in_loop else "") for name, in_loop in FUSED_CASES],
)
def test_fused_backward_equals_autodiff(name, in_loop, monkeypatch):
    """Outputs and gradients (params, inputs, given carry) equal plain autodiff of the scan,
    with lengths, resets and reverse all in play."""
    if in_loop:
        monkeypatch.setattr(fused_backward, "AFTER_LOOP_MAX_BYTES", -1)
    cell = FUSED_CELLS[name]()
    assert cell.fused is not None
    params, xs = setup(cell, seed=30)
    carry = random_carry(cell, params, seed=31)
    w_ys = randomize(jax.ShapeDtypeStruct((B, T, cell.output_size), jnp.float32), 32)
    masks = dict(lengths=jnp.array([T, 0, 4]), resets=jnp.zeros((B, T), bool).at[0, 2].set(True))

    def loss(params, xs, carry, fused):
        final, ys = rnnjax.unroll(
            cell, params, xs, carry, reverse=True, fused_backward=fused, **masks
        )
        return jnp.sum(ys * w_ys) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(final))

    def value_and_grads(fused):
        return fast_jit(jax.value_and_grad(functools.partial(loss, fused=fused), argnums=(0, 1, 2)))

    value, grads = value_and_grads(True)(params, xs, carry)
    want_value, want_grads = value_and_grads(False)(params, xs, carry)
    assert_trees_close(value, want_value)
    assert_trees_close(grads, want_grads, atol=1e-5, rtol=1e-4)
    reached = {k: g for k, g in grads[0].items() if k != "carry0"}  # carry given: none
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(reached))


@pytest.mark.parametrize("make_cell", [cells.gru, cells.lstm], ids=["gru", "lstm"])
def test_fused_backward_composes_with_vmap_both_ways(make_cell):
    """``grad`` of a ``vmap`` and ``vmap`` of a ``grad`` through the fused backward pass equal
    autodiff's (a step's own bias cotangent, summed over the batch in ``pullback``, included)."""
    cell = make_cell(H)
    params, _ = setup(cell, seed=50)
    xs = randomize(jax.ShapeDtypeStruct((3, B, T, D), jnp.float32), 51)  # [V, B, T, D]

    def loss(params, xs, fused):
        return jnp.sum(jnp.sin(rnnjax.unroll(cell, params, xs, fused_backward=fused)[1]))

    def both(fused):
        def summed(params):
            return jnp.sum(jax.vmap(lambda x: loss(params, x, fused))(xs))

        return jax.grad(summed)(params), jax.vmap(lambda x: jax.grad(loss)(params, x, fused))(xs)

    assert_trees_close(both(True), both(False), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "make_cell",
    [
        lambda: cells.lstm(H),
        lambda: cells.lstm(H, proj_size=P, cell_clip=0.3),
        lambda: cells.gru(H),
        lambda: cells.gru(H, compute_dtype="bfloat16"),
    ],
    ids=["lstm", "clipped_projected_lstm", "gru", "gru_bfloat16"],
)
def test_gate_activations_split_the_gates_and_pull_back_like_autodiff(make_cell):
    """``combine(activate(...))`` is the step's ``gates``, and ``pullback`` gives from the
    activations alone what autodiff of ``activate`` gives (params, ``pre`` and ``rec``)."""
    cell = make_cell()
    fused = cell.fused
    params, _ = setup(cell, seed=40)
    carry = random_carry(cell, params, seed=41)
    width = params["wh"].shape[-1]
    pre, rec = (randomize(jax.ShapeDtypeStruct((B, width), jnp.float32), s) for s in (42, 43))
    gate_params = {k: v for k, v in params.items() if k not in ("wx", "wh")}

    a, activate_vjp = jax.vjp(fused.activations.activate, gate_params, pre, rec)
    assert_trees_close(
        fused.activations.combine(params, carry, a), fused.gates(params, carry, pre, rec)
    )
    d_a = tuple(randomize(jax.ShapeDtypeStruct(x.shape, x.dtype), 44 + i) for i, x in enumerate(a))
    d_params, d_pre, d_rec = fused.activations.pullback(gate_params, a, d_a)
    want_params, want_pre, want_rec = activate_vjp(d_a)
    assert_trees_close((d_pre, d_rec), (want_pre, want_rec), atol=1e-6, rtol=1e-5)
    reached = {k: g for k, g in want_params.items() if np.abs(g).max() > 0}
    assert_trees_close(d_params, reached, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "make_cell, widths",
    [
        (lambda: cells.lstm(H), [H] * 6),  # c and h in; the four gates' activations
        (lambda: cells.lstm(H, peepholes=True), [H, H, 4 * H]),  # c and h in; z = pre + rec
        (lambda: cells.gru(H), [H, 2 * H, H, H]),  # h in; r and z; n; n's recurrent term
        (lambda: without_activations(cells.gru(H)), [H, 2 * H, H, H]),  # r+z sums; n's pre, rec
        (lambda: cells.lstm(H, layer_norm=True), [H, H, 4 * H, 4 * H]),  # pre, rec apart
    ],
    ids=["lstm", "peephole_lstm", "gru", "gru_summed_rz", "layer_norm_lstm"],
)
def test_fused_backward_keeps_per_step_only_the_carry_and_what_the_gates_read(make_cell, widths):
    """The per-step residuals, ``[T, B, width]`` each, besides the inputs: a gate column read
    only through ``pre + rec`` is kept once, summed, and a step with ``GateActivations`` keeps
    its activations: an LSTM its four gates', a GRU r, z, n and n's recurrent term."""
    cell = make_cell()
    params, xs = setup(cell)

    def loss(params):
        return jnp.sum(rnnjax.unroll(cell, params, xs)[1])

    _, backward = jax.vjp(loss, params)  # a pytree whose leaves are the residuals
    per_step = [a.shape[-1] for a in jax.tree.leaves(backward) if a.shape[:2] == (T, B)]
    assert sorted(per_step) == sorted([xs.shape[-1], *widths])  # the inputs, time-major


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "autodiff"])
def test_fused_backward_casts_and_transposes_the_recurrent_weight_once(fused):
    """With bfloat16 matmuls the reverse loop must not re-cast or re-transpose ``wh`` at every
    step (on XLA:CPU that made the per-step ``dz · Whᵀ`` 3x slower than the forward matmul);
    autodiff of the scan does both inside its loop."""
    cell = cells.lstm(H, compute_dtype="bfloat16")
    params, xs = setup(cell)
    wh_shapes = {params["wh"].shape, params["wh"].shape[::-1]}

    def loss(params):
        return jnp.sum(rnnjax.unroll(cell, params, xs, fused_backward=fused)[1])

    jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    in_loops = [
        eqn.primitive.name
        for scan in scan_eqns(jaxpr)
        for eqn in scan.params["jaxpr"].jaxpr.eqns
        if eqn.primitive.name in ("transpose", "convert_element_type")
        and eqn.invars[0].aval.shape in wh_shapes
    ]
    assert (in_loops == []) == fused, in_loops


BFLOAT16_PARAMS_CASES = {
    "lstm_fused": (lambda: cells.lstm(H, learn_initial_carry=True), {}),
    "gru_fused": (lambda: cells.gru(H), {}),
    "indrnn": (lambda: cells.indrnn(H, learn_initial_carry=True), {}),
    "min_lstm_stepped": (lambda: cells.min_lstm(H, learn_initial_carry=True), {"parallel": False}),
    "min_lstm_parallel": (lambda: cells.min_lstm(H, learn_initial_carry=True), {"parallel": True}),
    "lru_parallel": (lambda: cells.lru(H), {"parallel": True}),
}


@pytest.mark.parametrize("inputs", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(BFLOAT16_PARAMS_CASES))
def test_bfloat16_params_train_like_their_float32_values(case, inputs):
    """Params stored in bfloat16 (a learnt initial carry too), inputs in float32 or bfloat16:
    the carry takes the dtype its step gives, the parallel form returns the stepped form's
    dtypes, the fused backward pass sums the weight gradients in float32 and returns them in
    bfloat16, and everything stays within bfloat16 rounding of the float32 run on the same
    (rounded) values."""
    make, options = BFLOAT16_PARAMS_CASES[case]
    cell = make()
    params, xs = setup(cell, seed=60)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    lengths = jnp.array([T, 2, 0])

    def outputs_and_grads(params, xs, **more):
        def loss(params):
            _, ys = rnnjax.unroll(cell, params, xs, lengths=lengths, **(options | more))
            return jnp.sum(jnp.sin(ys.astype(jnp.float32))), ys

        return fast_jit(jax.grad(loss, has_aux=True))(params)[::-1]

    ys, grads = outputs_and_grads(params, xs.astype(inputs))
    stepped_ys, _ = outputs_and_grads(params, xs.astype(inputs), parallel=False)
    assert ys.dtype == stepped_ys.dtype
    assert {a.dtype for a in jax.tree.leaves(grads)} == {jnp.dtype(jnp.bfloat16)}
    as_float = functools.partial(jax.tree.map, lambda a: a.astype(jnp.float32))
    want_ys, want_grads = outputs_and_grads(as_float(params), xs.astype(inputs).astype(jnp.float32))
    np.testing.assert_allclose(as_float(ys), want_ys, atol=0.05)
    for got, want in zip(
        jax.tree.leaves(as_float(grads)), jax.tree.leaves(want_grads), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=0.1 * float(jnp.max(jnp.abs(want))) + 1e-3)


def test_fused_backward_rejects_what_it_cannot_honour():
    xs = jnp.ones((B, T, D))
    simple = get_cell("simple")
    with pytest.raises(ValueError, match="needs a cell with a FusedStep"):
        rnnjax.unroll(simple, simple.init(jax.random.key(0), D), xs, fused_backward=True)
    lstm = get_cell("learnable_lstm")
    with pytest.raises(ValueError, match="cannot be combined with remat=True"):
        rnnjax.unroll(lstm, lstm.init(jax.random.key(0), D), xs, remat=True, fused_backward=True)
    min_gru = cells.min_gru(H)  # on the parallel path too, which accelerators take by default
    params = min_gru.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="needs a cell with a FusedStep"):
        rnnjax.unroll(min_gru, params, xs, parallel=True, fused_backward=True)


def test_parallel_rejects_what_it_cannot_honour_and_defaults_to_what_was_asked(monkeypatch):
    """``parallel=True`` on a cell with no linear form, or beside ``remat``/``hoist`` (options
    of the stepped form), is an error; left to its default on an accelerator, the parallel form
    yields to those options rather than ignore them."""
    xs = jnp.ones((B, T, D))
    for name in ("lstm", "stack"):
        cell = get_cell(name)
        with pytest.raises(ValueError, match="parallel=True needs a cell linear in its carry"):
            rnnjax.unroll(cell, cell.init(jax.random.key(0), D), xs, parallel=True)
    min_gru = cells.min_gru(H)
    params = min_gru.init(jax.random.key(0), D)
    for options in ({"remat": 2}, {"hoist": True}):
        with pytest.raises(ValueError, match="cannot be combined with"):
            rnnjax.unroll(min_gru, params, xs, parallel=True, **options)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

    def parallel_form(*args, **kwargs):
        raise RuntimeError("the parallel form ran")

    monkeypatch.setattr(sys.modules["rnnjax.unroll"], "unroll_linear", parallel_form)
    rnnjax.unroll(min_gru, params, xs, remat=2)  # steps
    with pytest.raises(RuntimeError, match="the parallel form ran"):
        rnnjax.unroll(min_gru, params, xs)


def test_fused_backward_composes_with_second_order_and_leaves_forward_mode_to_autodiff():
    """``jax.hessian`` (forward over reverse) goes through the fused backward pass and equals
    autodiff's; forward mode alone is not defined for a ``custom_vjp`` and stays one flag away."""
    cell = get_cell("learnable_lstm")
    params, xs = setup(cell, seed=40)

    def loss(b, fused):
        return jnp.sum(jnp.sin(rnnjax.unroll(cell, dict(params, b=b), xs, fused_backward=fused)[1]))

    hessians = [
        fast_jit(jax.hessian(functools.partial(loss, fused=f)))(params["b"]) for f in (None, False)
    ]
    assert_trees_close(*hessians, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(functools.partial(loss, fused=None), (params["b"],), (params["b"],))
    jax.jvp(functools.partial(loss, fused=False), (params["b"],), (params["b"],))
