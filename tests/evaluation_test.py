"""Tests for rnnjax/train/evaluation.py: a workdir's newest checkpoint evaluated again."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnjax.train import launch, read_metrics, train_and_evaluate
from rnnjax.train.evaluation import CONFUSION_FILE, evaluate_workdir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_idx):
    config = launch.load_config(
        str(ROOT / "experiments" / "configs" / "mnist_rnn.py"),
        {
            "num_epochs": 2,
            "batch_size": 10,
            "model.units": 8,
            "progress": False,
            "data.manual_dir": str(tiny_idx),
            "data.data_dir": str(tmp_path_factory.mktemp("tfds")),
        },
    )
    run = tmp_path_factory.mktemp("run")
    train_and_evaluate(config, run)
    return run


def test_evaluation_reproduces_the_runs_last_test_metrics(workdir):
    result = evaluate_workdir(workdir)
    last = read_metrics(workdir / "metrics.jsonl")[-1]
    assert result["step"] == last["step"]
    assert result["test_accuracy"] == pytest.approx(last["test_accuracy"], abs=1e-6)
    assert result["test_loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == 25  # every test example once
    assert np.trace(matrix) / matrix.sum() == pytest.approx(last["test_accuracy"], abs=1e-6)
    assert (workdir / CONFUSION_FILE).stat().st_size > 0


def test_a_relative_workdir_is_evaluated(workdir, monkeypatch):
    """As the README's ``--workdir=runs/mnist``: orbax needs absolute paths underneath."""
    monkeypatch.chdir(workdir.parent)
    result = evaluate_workdir(workdir.name)
    last = read_metrics(workdir / "metrics.jsonl")[-1]
    assert result["step"] == last["step"]
    assert result["test_accuracy"] == pytest.approx(last["test_accuracy"], abs=1e-6)


def test_the_command_prints_metrics(workdir):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test_accuracy" in done.stdout


def test_a_directory_without_a_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        evaluate_workdir(tmp_path)


def test_evaluation_leaves_every_checkpoint_in_place(workdir, tmp_path):
    """Evaluating reads only: a trainer may be saving (a tmp dir) and keeping more steps."""
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    checkpoints = copy / "checkpoints"
    newest = max(int(p.name) for p in checkpoints.iterdir())
    for step in (1, 2, 3):  # older steps than keep=3 would keep
        shutil.copytree(checkpoints / str(newest), checkpoints / str(step))
    shutil.copytree(checkpoints / str(newest), checkpoints / f"{newest + 1}.orbax-checkpoint-tmp")
    before = {(str(p), p.stat().st_mtime_ns) for p in checkpoints.rglob("*")}
    assert evaluate_workdir(copy)["step"] == newest
    assert {(str(p), p.stat().st_mtime_ns) for p in checkpoints.rglob("*")} == before


def test_data_moved_since_the_run_is_read_where_it_is_now(workdir, tiny_idx, tmp_path):
    moved = tmp_path / "idx"
    shutil.copytree(tiny_idx, moved)
    last = read_metrics(workdir / "metrics.jsonl")[-1]
    result = evaluate_workdir(workdir, manual_dir=str(moved), data_dir=str(tmp_path / "tfds"))
    assert result["test_accuracy"] == pytest.approx(last["test_accuracy"], abs=1e-6)
    assert (tmp_path / "tfds").is_dir()  # prepared there, from the moved files
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        evaluate_workdir(workdir, manual_dir=str(tmp_path / "gone"), data_dir=str(tmp_path / "d"))
