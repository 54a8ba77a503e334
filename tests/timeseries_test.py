"""Tests for rnnjax/train/tasks/timeseries.py and its configs: tiny runs of both configs, and
the deep model's dropout (random in training, off and equal to no dropout in evaluation)."""

from pathlib import Path

import jax
import numpy as np
import pytest

from rnnjax.data import series
from rnnjax.train import launch, read_metrics, tasks
from rnnjax.train.loop import train_and_evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
TINY = {
    "num_epochs": 2,
    "batch_size": 20,
    "learning_rate": 0.01,
    "progress": False,
    "generate_steps": 30,
    "data.n_steps": 10,
    "data.train_windows": 100,
    "data.test_windows": 30,
    "model.units": 8,
}


def _config(name: str, **overrides):
    return launch.load_config(str(CONFIGS / f"{name}.py"), TINY | overrides)


@pytest.fixture(scope="module", params=["timeseries", "timeseries_deep"])
def run(request, tmp_path_factory):
    """A tiny run of a config: ``(config, workdir, records)``."""
    config = _config(request.param)
    workdir = tmp_path_factory.mktemp(request.param)
    return config, workdir, train_and_evaluate(config, workdir)


def test_a_tiny_run_learns_and_writes_its_metrics_and_figures(run):
    config, workdir, records = run
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == read_metrics(workdir / "metrics.jsonl")
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < losses[0], losses
    assert np.isfinite(records[-1]["test_loss"])
    for figure in ("prediction.png", "generation.png", "learning_curves.png"):
        assert (workdir / figure).stat().st_size > 0, figure


def test_deep_dropout_is_random_in_training_and_off_in_evaluation():
    task = tasks.build(_config("timeseries_deep", **{"model.dropout": 0.5}))
    assert task.train["inputs"].shape == task.train["targets"].shape == (100, 10, 1)
    assert task.test["inputs"].shape == (30, 10, 1) and task.headline == "loss"
    assert not np.allclose(task.train["inputs"][:30], task.test["inputs"])  # another seed
    params = jax.jit(task.model.init)(jax.random.key(0))
    assert sorted(params["body"]) == ["0", "1", "2", "3", "4"]  # rnn, dropout, rnn, dropout, rnn
    batch = {"inputs": task.test["inputs"][:4]}
    forward = jax.jit(task.forward)
    a, b = (forward(params, batch, jax.random.key(k)) for k in (1, 2))
    assert a.shape == (4, 10, 1)
    assert not np.allclose(a, b)
    evaluation = forward(params, batch)
    np.testing.assert_array_equal(evaluation, forward(params, batch))

    plain = tasks.build(_config("timeseries_deep", **{"model.dropout": 0.0}))
    body = params["body"]
    plain_params = {"body": {"0": body["0"], "1": body["2"], "2": body["4"]}} | {
        "head": params["head"]
    }
    np.testing.assert_allclose(evaluation, jax.jit(plain.forward)(plain_params, batch), rtol=1e-6)


def test_one_seed_for_train_and_test_is_refused():
    """The same seed draws the same start times, so the test windows would be training ones."""
    config = _config("timeseries", **{"data.seed": 1, "data.test_seed": 1})
    train, test = (
        series.window_starts(n, config.data.n_steps, seed=1)
        for n in (config.data.train_windows, config.data.test_windows)
    )
    assert np.isin(test, train).all()  # why: the test split would measure recall
    with pytest.raises(ValueError, match="data.seed and data.test_seed must differ, got both 1"):
        tasks.build(config)


@pytest.mark.parametrize("steps", [0, -1])
def test_a_bad_generate_steps_is_named_before_training(steps):
    """The report generates once training ends, which a bad count would only reach then."""
    with pytest.raises(ValueError, match=f"generate_steps must be an int >= 1, got {steps}"):
        tasks.build(_config("timeseries", generate_steps=steps))
