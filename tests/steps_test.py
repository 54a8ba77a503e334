"""Tests for rnnjax/train/steps.py (and the optimizer builder whose clipping the steps rely on)."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax.train import builders, distributed
from rnnjax.train.losses import mse, softmax_xent
from rnnjax.train.state import init_state
from rnnjax.train.steps import make_eval_step, make_train_step

B, T, D, CLASSES = 12, 5, 28, 10  # the shapes of tests/loop_test.py: compiled ops are reused


def _model():
    return rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(8)), rnnjax.dense(CLASSES), in_size=D)


MODEL, ADAM = _model(), optax.adam(1e-2)


@pytest.fixture(scope="module")
def adam_step():
    """One compiled step shared by the tests (jit compiles cost seconds; the steps do not)."""
    return make_train_step(MODEL, ADAM, softmax_xent, donate=False)


def _batch(seed=0, n=B):
    """A learnable task: the label is the time step at which feature 0 is largest, mod 3."""
    xs = np.random.default_rng(seed).normal(size=(n, T, D)).astype(np.float32)
    return {"inputs": xs, "labels": (np.argmax(xs[:, :, 0], axis=1) % CLASSES).astype(np.int32)}


def _copy(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def _assert_bitwise(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(e).tobytes()


def test_loss_decreases_and_the_step_counts(adam_step):
    state, batch = init_state(MODEL, ADAM, jax.random.key(0)), _batch()
    losses = []
    for _ in range(40):
        state, metrics = adam_step(state, batch)
        losses.append(float(metrics["loss"]))
        assert int(metrics["finite"]) == 1
    assert int(state.step) == 40
    assert losses[-1] < 0.5 * losses[0]
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "finite"}


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey], ids=["typed", "raw"])
def test_the_donating_step_leaves_the_callers_key_alive(make_key):
    """The state keeps its own copy of the key: a raw ``PRNGKey`` is its own data, and the
    step donates the state, which would delete the caller's key with it."""
    key = make_key(0)
    state = init_state(MODEL, ADAM, key)
    make_train_step(MODEL, ADAM, softmax_xent)(state, _batch())
    assert not key.is_deleted()
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(make_key(0)))


def test_non_finite_batch_leaves_the_state_unchanged(adam_step):
    state, _ = adam_step(init_state(MODEL, ADAM, jax.random.key(0)), _batch())  # moments != 0
    before = _copy(state)
    bad = _batch(1)
    bad["inputs"][3, 2, 1] = np.inf
    after, metrics = adam_step(state, bad)
    assert int(metrics["finite"]) == 0
    _assert_bitwise(after, before)
    assert int(after.step) == 1


def test_an_update_that_overflows_leaves_the_state_unchanged():
    """The loss and gradient are finite, but an infinite step size would write inf params."""
    tx = optax.sgd(jnp.inf)
    state = init_state(MODEL, tx, jax.random.key(0))
    before = _copy(state)
    after, metrics = make_train_step(MODEL, tx, softmax_xent, donate=False)(state, _batch())
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert int(metrics["finite"]) == 0
    _assert_bitwise(after, before)


@pytest.mark.parametrize("with_layout", [False, True], ids=["jit", "layout"])
def test_steps_per_call_runs_bitwise_what_that_many_calls_run(with_layout):
    """Four steps in one call, the third on a batch with an inf (its update is skipped, the
    next one goes on): the same state and each step's metrics as four one-step calls."""
    batches = [_batch(seed) for seed in range(4)]
    batches[2]["inputs"][0, 0, 0] = np.inf
    state = init_state(MODEL, ADAM, jax.random.key(0))
    layout = None
    if with_layout:
        init = lambda: init_state(MODEL, ADAM, jax.random.key(0))  # noqa: E731
        state, layout = distributed.sharded_state(init, distributed.make_mesh(1))
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    if with_layout:
        stacked = distributed.global_batch(stacked, layout.steps)
    four = make_train_step(MODEL, ADAM, softmax_xent, donate=False, layout=layout, steps_per_call=4)
    after, metrics = four(state, stacked)
    one = make_train_step(MODEL, ADAM, softmax_xent, donate=False, layout=layout)
    expected, one_by_one = state, []
    for batch in batches:
        if with_layout:
            batch = distributed.global_batch(batch, layout.batch)
        expected, m = one(expected, batch)
        one_by_one.append(m)
    _assert_bitwise(after, expected)
    assert int(after.step) == 3
    for name, values in metrics.items():
        assert values.shape == (4,)
        _assert_bitwise(values, jnp.stack([m[name] for m in one_by_one]))
    assert list(metrics["finite"]) == [1, 1, 0, 1]


def test_steps_per_call_names_unstacked_batches_and_bad_counts():
    three = make_train_step(MODEL, ADAM, softmax_xent, steps_per_call=3)
    state = init_state(MODEL, ADAM, jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=re.escape("stacked [3, batch, ...]; batch['inputs'] has shape (12, 5, 28)"),
    ):
        three(state, _batch())
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"steps_per_call must be an int >= 1, got {bad}"):
            make_train_step(MODEL, ADAM, softmax_xent, steps_per_call=bad)


@pytest.mark.parametrize("with_layout", [False, True], ids=["jit", "layout"])
def test_eval_step_masked_sums_equal_the_real_examples(with_layout):
    """Under a layout the step is two programs (per-example values, then sums): same sums."""
    params = MODEL.init(jax.random.key(1))
    layout = None
    if with_layout:
        state, layout = distributed.sharded_state(
            lambda: init_state(MODEL, ADAM, jax.random.key(1)), distributed.make_mesh(1)
        )
        params = state.params
    eval_step = make_eval_step(MODEL, softmax_xent, layout=layout)
    real = _batch(2, n=7)
    padded = {k: np.concatenate([v, v[:5]]) for k, v in real.items()}  # 5 padding examples
    padded["mask"] = np.arange(12) < 7
    if with_layout:
        padded = distributed.global_batch(padded, layout.batch)
    sums = jax.device_get(eval_step(params, padded))
    assert all(np.shape(v) == () for v in sums.values())
    assert float(sums["count"]) == 7.0
    # Against a per-example computation in numpy on the real examples only.
    logits = np.asarray(jax.jit(MODEL.apply)(params, real["inputs"]), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    losses = -log_probs[np.arange(7), real["labels"]]
    accuracy = np.mean(np.argmax(logits, -1) == real["labels"])
    np.testing.assert_allclose(sums["loss"] / sums["count"], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(sums["accuracy"] / sums["count"], accuracy, rtol=1e-6)


def test_grad_clip_norm_clips_by_global_norm_before_adam():
    params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    grads = {"w": np.full((3, 2), 30.0, np.float32), "b": np.array([40.0, -10.0], np.float32)}
    adam = optax.adam(0.1)
    adam_update = jax.jit(adam.update)
    for clip in (0.0, 1.0, 1e3):
        config = ml_collections.ConfigDict({"learning_rate": 0.1, "grad_clip_norm": clip})
        tx = builders.optimizer(config)
        update = jax.jit(tx.update)
        state, adam_state = tx.init(params), adam.init(params)
        for scale in (1.0, 0.01):  # the second gradient is below the threshold
            scaled = {k: g * scale for k, g in grads.items()}
            norm = np.sqrt(sum(np.sum(np.square(g)) for g in scaled.values()))
            factor = min(1.0, clip / norm) if clip else 1.0
            updates, state = update(scaled, state, params)
            clipped = {k: g * factor for k, g in scaled.items()}
            expected, adam_state = adam_update(clipped, adam_state, params)
            for k in params:
                np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5)


def test_train_step_reports_the_unclipped_grad_norm_and_takes_the_clipped_step():
    tx = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
    state = init_state(MODEL, tx, jax.random.key(0))
    new, metrics = make_train_step(MODEL, tx, softmax_xent, donate=False)(state, _batch())
    assert float(metrics["grad_norm"]) > 1e-2
    old, new = jax.tree.leaves(_copy(state.params)), jax.tree.leaves(_copy(new.params))
    change = np.sqrt(sum(np.sum(np.square(n - o)) for n, o in zip(new, old, strict=True)))
    np.testing.assert_allclose(change, 1e-3, rtol=1e-3)


def test_mse_equals_numpy_and_refuses_targets_of_another_shape():
    rng = np.random.default_rng(0)
    predictions, targets = rng.normal(size=(2, 4, 5, 1)).astype(np.float32)
    loss, metrics = mse(predictions, {"targets": targets})
    per_example = np.mean(np.square(predictions - targets).reshape(4, -1), axis=1)
    np.testing.assert_allclose(metrics["loss"], per_example, rtol=1e-6)
    np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-6)
    # [B, 1] predictions against [B] targets would broadcast to [B, B]: a wrong loss, silently.
    with pytest.raises(ValueError, match=r"predictions. shape \(4, 1\), got \(4,\)"):
        mse(predictions[:, 0], {"targets": targets[:, 0, 0]})


def test_softmax_xent_equals_numpy_and_names_labels_of_the_wrong_shape():
    logits = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0, 2], np.int32)
    loss, metrics = softmax_xent(logits, {"labels": labels})
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(metrics["loss"], -log_probs[np.arange(6), labels], rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], logits.argmax(-1) == labels)
    np.testing.assert_allclose(loss, np.mean(-log_probs[np.arange(6), labels]), rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels must be .*\(6,\).* got .*\(6, 1\)"):
        softmax_xent(logits, {"labels": labels[:, None]})
    with pytest.raises(TypeError, match="labels must be integer class indices, got dtype float32"):
        softmax_xent(logits, {"labels": labels.astype(np.float32)})


def test_a_batch_without_what_the_model_or_the_loss_reads_is_named(adam_step):
    """They failed on a bare KeyError: 'labels'."""
    state = init_state(MODEL, ADAM, jax.random.key(0))
    eval_step = make_eval_step(MODEL, softmax_xent)
    for lacking, reader in (("inputs", "the model's forward"), ("labels", "softmax_xent")):
        batch = {k: v for k, v in _batch().items() if k != lacking}
        want = f"{reader} reads batch['{lacking}'], which this batch lacks (it has {sorted(batch)})"
        with pytest.raises(KeyError, match=re.escape(want)):
            adam_step(state, batch)
        with pytest.raises(KeyError, match=re.escape(want)):
            eval_step(state.params, batch)
    with pytest.raises(KeyError, match=re.escape("mse reads batch['targets']")):
        mse(np.zeros((2, 1)), {"labels": np.zeros(2)})
