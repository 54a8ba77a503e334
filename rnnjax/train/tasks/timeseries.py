"""The chapter's time series: predict the next value at every step, then generate creatively.

The model is ``num_layers`` recurrent layers (dropout between them in training) and a dense
head to one value per step, trained with MSE on windows of ``rnnjax.data.series``. The report
draws a test window's predictions and 300 values generated from a seed (``rnnjax.generate``).
"""

from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend, no global figure state

from rnnjax import layers, models
from rnnjax._checks import check_size
from rnnjax.data import series
from rnnjax.generation import generate
from rnnjax.train import builders, losses
from rnnjax.train.steps import model_forward
from rnnjax.train.tasks._task import Task

PREDICTION_FILE = "prediction.png"
GENERATION_FILE = "generation.png"


def build(config) -> Task:
    """Windows of ``config.data`` (train and test from their own seeds) and the forecaster of
    ``config.model``; the report generates ``config.generate_steps`` values."""
    check_size("generate_steps", config.generate_steps)  # the report runs once training ends
    data = config.data
    if data.seed == data.test_seed:  # the same draw: the test windows would be training ones
        raise ValueError(
            f"data.seed and data.test_seed must differ, got both {data.seed}: with one seed the "
            "test windows are the first training windows"
        )
    grid = {"t_min": data.t_min, "t_max": data.t_max, "resolution": data.resolution}
    train = series.windows(data.train_windows, data.n_steps, seed=data.seed, **grid)
    test_starts = series.window_starts(data.test_windows, data.n_steps, seed=data.test_seed, **grid)
    test = series.windows_at(test_starts, data.n_steps, resolution=data.resolution)
    # the chapter's OutputProjectionWrapper, as one dense matmul over all steps
    model = models.seq2seq(builders.recurrent_body(config.model), layers.dense(1), in_size=1)

    def report(params, workdir: Path) -> None:
        workdir = Path(workdir)
        forward = jax.jit(model_forward(model))
        window = {"inputs": test["inputs"][:1]}
        prediction = np.asarray(forward(params, window))[0, :, 0]
        times = series.window_times(test_starts[:1], data.n_steps + 1, resolution=data.resolution)
        plot_prediction(times[0], test, prediction, workdir / PREDICTION_FILE)
        seeds = np.stack([np.zeros_like(test["inputs"][0]), test["inputs"][0]])
        generated = np.asarray(generate(model, params, seeds, steps=config.generate_steps))
        plot_generation(times[0, 0], data.resolution, seeds, generated, workdir / GENERATION_FILE)

    return Task(train, test, model, model_forward(model), losses.mse, report=report)


def plot_prediction(times, test, prediction, out_path: Path) -> None:
    """The first test window: inputs at ``times[:-1]``, targets and predictions one step on."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(times[:-1], test["inputs"][0, :, 0], "bo", markersize=8, label="inputs")
    ax.plot(
        times[1:],
        test["targets"][0, :, 0],
        "w*",
        markersize=10,
        markeredgecolor="k",
        label="targets",
    )
    ax.plot(times[1:], prediction, "r.", markersize=10, label="predictions")
    ax.set(xlabel="t", ylabel="value", title="Next-value prediction on a test window")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)


def plot_generation(t0: float, resolution: float, seeds, generated, out_path: Path) -> None:
    """Two panels: generation seeded with zeros (as the book) and with the first test window,
    the latter against the true series (seen in training only up to ``t_max``)."""
    seed_steps, steps = seeds.shape[1], generated.shape[1]
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 2)
    for ax, seed, out, title in zip(
        axes, seeds, generated, ("seeded with zeros", "seeded with a test window"), strict=True
    ):
        times = np.arange(seed_steps + steps) * resolution
        if title.endswith("window"):
            times = times + t0
            ax.plot(times, series.series(times), color="0.7", lw=1, label="the series")
        ax.plot(times[:seed_steps], seed[:, 0], "b.-", label="seed")
        ax.plot(times[seed_steps:], out[:, 0], "r.-", markersize=3, label="generated")
        ax.set(xlabel="t", title=f"Creative generation, {title}")
        ax.legend()
    axes[0].set_ylabel("value")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
