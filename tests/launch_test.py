"""Tests for rnnjax/train/launch.py and the launcher ``python -m experiments.main``."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnjax.train import launch, read_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
CONFIG_FILES = sorted(p for p in CONFIGS.glob("*.py") if p.stem not in ("common", "__init__"))
CONFIG = CONFIGS / "mnist_rnn.py"
REQUIRED = (
    "task",
    "seed",
    "num_epochs",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "mesh.data",
    "mesh.cpu_devices",
    "cpu_vector_width",
    "steps_per_call",
)


def _launch(*args: str, jit_cache: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    if jit_cache:  # compiled once per session; tests/loop_test.py's launches reuse it
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(jit_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
    command = [sys.executable, "-m", "experiments.main", f"--config={CONFIG}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_launcher_trains_with_overrides_on_local_idx_files(
    tmp_path, tmp_path_factory, tiny_idx
):
    workdir = tmp_path / "run"
    done = _launch(
        f"--workdir={workdir}",
        f"--config.data.manual_dir={tiny_idx}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.num_epochs=2",
        "--config.batch_size=10",
        "--config.model.units=8",
        "--config.seed=3",
        "--config.checkpoint_every_steps=4",
        "--config.keep_checkpoints=2",
        "--config.progress=False",
        jit_cache=tmp_path_factory.getbasetemp() / "jax_cache",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"epoch 2  train_loss \S+  test_accuracy \S+", done.stdout)
    cores = len(os.sched_getaffinity(0))  # one device per core, as many as divide the batch
    devices = max(n for n in range(1, cores + 1) if 10 % n == 0)
    assert f"training on {devices} cpu device(s), {10 // devices} rows" in done.stdout
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["units"] == 8 and saved["seed"] == 3 and saved["num_epochs"] == 2
    assert (tmp_path / "tfds" / "mnist_idx").is_dir()  # prepared offline into the data_dir
    records = read_metrics(workdir / "metrics.jsonl")
    assert [(r["step"], r["epoch"]) for r in records] == [(6, 1), (12, 2)]
    assert (workdir / "learning_curves.png").is_file()
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    # Saved at steps 4, 6 (epoch 1), 8 and 12 (epoch 2); the newest 2 are kept.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "8"]


def test_an_unknown_key_fails_at_once_listing_the_valid_keys(tmp_path):
    start = time.monotonic()
    done = _launch(f"--workdir={tmp_path / 'run'}", "--config.num_epoch=3", "--config.data.nme=x")
    assert done.returncode != 0
    assert "Unknown config key(s) ['num_epoch', 'data.nme']" in done.stderr
    valid = done.stderr.split("Valid keys: ")[1].strip().split(", ")
    assert set(REQUIRED) <= set(valid) and "model.units" in valid
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing was loaded, built or written
    assert time.monotonic() - start < 120


def test_a_bad_cpu_vector_width_fails_before_anything_is_written(tmp_path):
    done = _launch(f"--workdir={tmp_path / 'run'}", "--config.cpu_vector_width=300")
    assert done.returncode != 0
    assert "cpu_vector_width must be one of (0, 128, 256, 512) bits, got 300" in done.stderr
    assert not (tmp_path / "run").exists()


def test_an_empty_workdir_is_refused_before_anything_is_written(tmp_path, tiny_idx):
    """``--workdir=$RUN`` with RUN unset: the run must not fill the current directory."""
    env = os.environ | {"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "experiments.main", f"--config={CONFIG}", "--workdir="]
    command += [f"--config.data.manual_dir={tiny_idx}", f"--config.data.data_dir={tmp_path}/tfds"]
    (tmp_path / "cwd").mkdir()
    done = subprocess.run(
        command, cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "--workdir must name a directory, got an empty path" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["cwd"]  # no data prepared either
    assert not list((tmp_path / "cwd").iterdir())


def test_unknown_overrides_checks_every_form_of_flag():
    config = f"--config={CONFIG}"
    assert launch.unknown_overrides([config, "--config.seed=1", "--config.data.name", "x"]) is None
    assert launch.unknown_overrides(["--config.sed=1"]) is None  # no config file: absl reports
    message = launch.unknown_overrides([config, "--config.model.unit=4", "--workdir=/tmp/w"])
    assert message.startswith("Unknown config key(s) ['model.unit']")
    assert "model.units" in message


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_has_the_required_keys(path):
    keys = launch.flatten_keys(launch.load_config_file(str(path)))
    missing = [key for key in REQUIRED if key not in keys]
    missing += [
        group for group in ("data.", "model.") if not any(k.startswith(group) for k in keys)
    ]
    assert not missing, f"{path.name} lacks {missing}"


def test_load_config_file_names_a_missing_file():
    with pytest.raises(FileNotFoundError, match="--config must name a config file"):
        launch.load_config_file("experiments/configs/nope.py")


def test_load_config_applies_overrides_and_rejects_unknown_keys():
    path = str(ROOT / "experiments" / "configs" / "mnist_rnn.py")
    config = launch.load_config(path, {"num_epochs": 1, "model.units": 8})
    assert (config.num_epochs, config.model.units) == (1, 8)
    with pytest.raises(KeyError, match=r"\['model.unit'\].*Valid keys: .*model.units"):
        launch.load_config(path, {"model.unit": 8})
