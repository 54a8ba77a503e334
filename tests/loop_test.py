"""Tests for rnnjax/train/loop.py: interrupted runs resume bitwise, damage, NaN stop, outputs.

One uninterrupted in-process run is the reference. Interrupted runs are the launcher in a
subprocess (SIGKILL mid-save, SIGKILL between saves, SIGTERM) or in-process (SIGINT), finished by
an in-process rerun; each must end with the reference's train state bit for bit and its metrics.
"""

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from trainruns import restore_final_state

from rnnjax.train import (
    Checkpoints,
    NonFiniteError,
    builders,
    init_state,
    launch,
    loop,
    read_metrics,
)
from rnnjax.train.loop import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "mnist_rnn.py"
STEPS = 18  # 3 epochs of 60 // 10 batches
TIMEOUT = 300


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_idx):
    """Holds a link to the IDX folder, the tfds data_dir (prepared by the reference run) and
    the runs."""
    root = tmp_path_factory.mktemp("loop")
    (root / "idx").symlink_to(tiny_idx)
    return root


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory):
    """A compilation cache for the launched runs, shared with tests/launch_test.py's."""
    return tmp_path_factory.getbasetemp() / "jax_cache"


def _overrides(dirs: Path, **extra) -> dict:
    return {
        "num_epochs": 3,
        "batch_size": 10,
        "model.units": 8,
        "checkpoint_every_steps": 2,
        "progress": False,
        "mesh.cpu_devices": 1,  # launched runs on one device, as in-process ones: bitwise equal
        "data.manual_dir": str(dirs / "idx"),
        "data.data_dir": str(dirs / "tfds"),
        **extra,
    }


@pytest.fixture(scope="module")
def reference(dirs):
    """The uninterrupted run: ``(final train state, metrics records)``."""
    config = launch.load_config(str(CONFIG), _overrides(dirs))
    records = train_and_evaluate(config, dirs / "reference")
    return restore_final_state(dirs / "reference", STEPS), records


def _assert_same_run(workdir: Path, reference):
    """Bitwise the reference's final train state, and its records but for the speed."""
    state, records = reference
    actual = restore_final_state(workdir, STEPS)
    assert jax.tree.structure(actual) == jax.tree.structure(state)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(state), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and np.array_equal(a, e) and a.tobytes() == e.tobytes()
    assert _without_speed(read_metrics(workdir / "metrics.jsonl")) == _without_speed(records)
    assert (workdir / "learning_curves.png").is_file()


def _without_speed(records):
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]


def _names(workdir: Path) -> set[str]:
    try:
        return {p.name for p in (workdir / "checkpoints").iterdir()}
    except FileNotFoundError:
        return set()


def _in_flight(names: set[str]) -> list[int]:
    """The steps that orbax is writing (their tmp directories exist)."""
    return [int(n.split(".")[0]) for n in names if ".orbax-checkpoint-tmp" in n]


def _saving(first: int):
    """True while orbax writes step ``first`` or a later one (should a poll miss ``first``)."""
    return lambda names: any(step >= first for step in _in_flight(names))


def _newest(names: set[str]) -> int:
    """The newest complete step (0 when none)."""
    return max((int(n) for n in names if n.isdigit()), default=0)


def _saved_beyond(step: int):
    """True once a step after ``step`` is complete and no save is in flight."""
    return lambda names: _newest(names) > step and not _in_flight(names)


def _interrupt(workdir: Path, overrides: dict, ready, sig, jit_cache: Path):
    """Runs the launcher, sends ``sig`` once ``ready(checkpoint names)``, waits for the exit.

    Returns the exit code, the checkpoint directory's names right after the exit and the log.
    """
    args = [sys.executable, "-m", "experiments.main", f"--config={CONFIG}", f"--workdir={workdir}"]
    args += [f"--config.{key}={value}" for key, value in overrides.items()]
    env = os.environ | {
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(jit_cache),  # seconds of compilation saved per run
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    log = workdir.parent / f"{workdir.name}.{sig.name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        try:
            while not ready(_names(workdir)):
                assert proc.poll() is None, f"the run ended first:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "timed out waiting for the kill point"
                time.sleep(0.001)
            proc.send_signal(sig)
            code = proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, _names(workdir), log.read_text()


def _stopped_step(log: str) -> int:
    """The step named by the loop's "Stopped by a signal" warning."""
    found = re.search(r"Stopped by a signal (at step (\d+)|after epoch (\d+))", log)
    assert found, log[-3000:]
    return int(found.group(2) or STEPS // 3 * int(found.group(3)))


class _SignalWhen:
    """Sends ``sig`` to this process from a thread once ``ready(checkpoint names)``.

    While active, a signal that the loop did not take over is only recorded, never raised.
    """

    def __init__(self, workdir: Path, ready, sig):
        self.workdir, self.ready, self.sig, self.stray = workdir, ready, sig, []
        self.done = threading.Event()

    def _watch(self):
        while not self.done.is_set():
            if self.ready(_names(self.workdir)):
                os.kill(os.getpid(), self.sig)
                return
            time.sleep(0.001)

    def __enter__(self):
        self.previous = signal.signal(self.sig, lambda *_: self.stray.append(self.sig))
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def __exit__(self, *exc_info):
        self.done.set()
        self.thread.join()
        signal.signal(self.sig, self.previous)
        assert not self.stray, "the signal arrived outside the training loop"


def _damage(step_dir: Path, edit):
    """Applies ``edit`` to every array data file (``state/**/d/<hash>``) of a checkpoint."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(edit(path.read_bytes()))


def _flip_a_byte(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]


def test_outputs_of_an_uninterrupted_run(dirs, reference):
    _, records = reference
    workdir = dirs / "reference"
    assert records == read_metrics(workdir / "metrics.jsonl")
    keys = {"step", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert [set(r) for r in records] == [keys | {"examples_per_sec"}] * 3
    assert [(r["step"], r["epoch"]) for r in records] == [(6, 1), (12, 2), (18, 3)]
    for r in records:
        assert all(np.isfinite(r[k]) for k in keys)
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
        assert r["examples_per_sec"] > 0
        # Every test example counts once, the padded last eval batch included.
        assert r["test_accuracy"] * 25 == pytest.approx(round(r["test_accuracy"] * 25))
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 100 for e in events)
    assert (workdir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(_names(workdir), key=int) == ["14", "16", "18"]  # keep_checkpoints = 3


def test_sigkill_mid_save_and_between_saves_then_sigint_resume_bitwise(
    dirs, reference, jit_cache, caplog
):
    workdir, overrides = dirs / "killed", _overrides(dirs)
    # Killed while step 6 (the end of epoch 1) is saved: its record is already written.
    code, names, log = _interrupt(workdir, overrides, _saving(6), signal.SIGKILL, jit_cache)
    assert code == -signal.SIGKILL, log[-3000:]
    (killed,) = _in_flight(names)  # the kill left the step half written
    assert str(killed) not in names
    records = [r["step"] for r in read_metrics(workdir / "metrics.jsonl")]
    assert records == [6, 12][: 1 + (killed >= 12)]  # the record of an epoch end comes first
    # Resumes at the step before, killed between saves two checkpoints later.
    ready = _saved_beyond(_newest(names) + 2)
    code, names, log = _interrupt(workdir, overrides, ready, signal.SIGKILL, jit_cache)
    assert code == -signal.SIGKILL, log[-3000:]
    assert "Checkpoint step" not in log  # a tmp directory is not a damaged step
    assert not any("damaged" in n for n in names), names
    # Ctrl-C, in-process, after the next checkpoint: saves the current step, returns early.
    resumed = _newest(names)
    with (
        caplog.at_level(logging.WARNING),
        _SignalWhen(workdir, _saved_beyond(resumed), signal.SIGINT),
    ):
        records = train_and_evaluate(launch.load_config(str(CONFIG), overrides), workdir)
    stopped = _stopped_step(caplog.text)
    assert resumed < stopped < STEPS
    assert _newest(_names(workdir)) == stopped
    assert [r["step"] for r in records] == [6, 12, 18][: stopped // 6]
    assert not (workdir / "learning_curves.png").exists()
    train_and_evaluate(launch.load_config(str(CONFIG), overrides), workdir)
    _assert_same_run(workdir, reference)


def test_sigterm_saves_the_current_step_exits_cleanly_and_resumes_bitwise(
    dirs, reference, jit_cache
):
    workdir = dirs / "terminated"
    ready, overrides = _saved_beyond(6), _overrides(dirs)
    code, names, log = _interrupt(workdir, overrides, ready, signal.SIGTERM, jit_cache)
    assert code == 0, log[-3000:]
    stopped = _stopped_step(log)
    assert 6 < stopped < STEPS
    assert _newest(names) == stopped
    assert not any("tmp" in n for n in names), names  # the save finished before the exit
    assert not (workdir / "learning_curves.png").exists()
    train_and_evaluate(launch.load_config(str(CONFIG), _overrides(dirs)), workdir)
    _assert_same_run(workdir, reference)


def test_damaged_newest_checkpoints_fall_back_and_still_end_bitwise(dirs, reference, caplog):
    workdir = dirs / "damaged"
    shutil.copytree(dirs / "reference", workdir)
    _damage(workdir / "checkpoints" / "18", lambda data: data[: len(data) // 2])
    _damage(workdir / "checkpoints" / "16", _flip_a_byte)
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(launch.load_config(str(CONFIG), _overrides(dirs)), workdir)
    assert "Checkpoint step 18" in caplog.text and "Checkpoint step 16" in caplog.text
    assert "damaged" in caplog.text
    assert {"18.damaged", "16.damaged"} <= _names(workdir)
    _assert_same_run(workdir, reference)


def test_non_finite_loss_stops_naming_the_step_and_keeps_a_finite_checkpoint(dirs):
    workdir = dirs / "nan"
    config = launch.load_config(
        str(CONFIG), _overrides(dirs, learning_rate=1e38, checkpoint_every_steps=1)
    )
    with pytest.raises(NonFiniteError, match=r"at step \d+") as error:
        train_and_evaluate(config, workdir)
    bad = int(re.search(r"at step (\d+)", str(error.value)).group(1))
    assert f"last good checkpoint is step {bad}" in str(error.value)
    model = builders.classifier(config.model, in_size=28, num_classes=10)
    template = init_state(model, builders.optimizer(config), jax.random.key(0))
    with Checkpoints(workdir / "checkpoints") as ckpts:
        assert ckpts.steps()[-1] == bad
        state, _ = ckpts.restore(template)
    assert int(state.step) == bad
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert not (workdir / "learning_curves.png").exists()


def test_a_batch_larger_than_the_training_split_is_named(dirs, tmp_path):
    config = launch.load_config(str(CONFIG), _overrides(dirs, batch_size=1000))
    with pytest.raises(ValueError, match=r"has \d+ examples, fewer than batch_size=1000"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("key", ["checkpoint_every_steps", "log_every_steps", "steps_per_call"])
def test_a_zero_step_cadence_is_named_before_anything_runs(dirs, tmp_path, key):
    config = launch.load_config(str(CONFIG), _overrides(dirs, **{key: 0}))
    with pytest.raises(ValueError, match=rf"config\.{key} must be >= 1 \(steps\), got 0"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("below", ["", "run"])
def test_a_file_where_the_workdir_goes_is_named_before_data_is_loaded(
    dirs, tmp_path, monkeypatch, below
):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("kept")
    monkeypatch.setattr(loop.tasks, "build", lambda config: pytest.fail("data was loaded"))
    config = launch.load_config(str(CONFIG), _overrides(dirs))
    with pytest.raises(NotADirectoryError, match=f"workdir must be a directory, but {blocker}"):
        train_and_evaluate(config, blocker / below)
    assert blocker.read_text() == "kept"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"keep_checkpoints": 1}, "config.keep_checkpoints must be >= 2"),
        ({"seed": -1}, "config.seed must be >= 0"),
        ({"num_epochs": 0}, "config.num_epochs must be >= 1"),
        ({"batch_size": 0}, "config.batch_size must be >= 1"),
        ({"lr_schedule": "step"}, "lr_schedule must be 'constant' or 'cosine', got 'step'"),
        ({"learning_rate": -0.01}, "learning_rate must be >= 0, got -0.01"),
        ({"grad_clip_norm": -1.0}, "grad_clip_norm must be >= 0, got -1.0"),
        ({"mesh.data": 1000}, "mesh.data must be"),
    ],
)
def test_bad_settings_are_named_before_data_is_loaded_or_anything_written(
    dirs, reference, tmp_path, monkeypatch, changes, named
):
    """Also in a workdir that holds a run: a refused rerun must leave its config.json as it
    was (a saved num_epochs=0 broke ``evaluate_workdir``)."""
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    saved = (workdir / "config.json").read_bytes()
    monkeypatch.setattr(loop.tasks, "build", lambda config: pytest.fail("data was loaded"))
    config = launch.load_config(str(CONFIG), _overrides(dirs, **changes))
    with pytest.raises(ValueError, match=re.escape(named)):
        train_and_evaluate(config, workdir)
    assert (workdir / "config.json").read_bytes() == saved
    with pytest.raises(ValueError, match=re.escape(named)):
        train_and_evaluate(config, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"learning_rate": 0.01}, ["learning_rate: 0.001 → 0.01"]),
        ({"batch_size": 12, "seed": 1}, ["batch_size: 10 → 12", "seed: 0 → 1"]),
    ],
)
def test_resuming_with_another_config_is_refused_and_keeps_the_saved_one(
    dirs, reference, tmp_path, changes, named
):
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    saved = (workdir / "config.json").read_bytes()
    # Allowed changes (devices, cadence, paths) are not named.
    allowed = {
        "mesh.data": 1,
        "log_every_steps": 3,
        "data.manual_dir": str(dirs / "idx") + "/",
        "cpu_vector_width": 256,
    }
    config = launch.load_config(str(CONFIG), _overrides(dirs, **changes, **allowed))
    with pytest.raises(ValueError, match="Use a new workdir") as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert all(n in message for n in named), message
    assert not any(f"{key}:" in message for key in allowed), message
    assert (workdir / "config.json").read_bytes() == saved


def test_resuming_with_more_epochs_trains_on(dirs, reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    config = launch.load_config(str(CONFIG), _overrides(dirs, num_epochs=4))
    records = train_and_evaluate(config, workdir)
    assert [r["step"] for r in records] == [6, 12, 18, 24]
    assert loop.saved_config(workdir)["num_epochs"] == 4


def _counting_calls(monkeypatch) -> list[int]:
    """The number of steps each train call of the loop runs, as it runs them."""
    counts, train = [], loop._Run._train

    def counted(self, state, stream, count):
        counts.append(count)
        return train(self, state, stream, count)

    monkeypatch.setattr(loop._Run, "_train", counted)
    return counts


def test_rerunning_a_finished_run_says_there_is_nothing_left(dirs, reference, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    (workdir / "learning_curves.png").unlink()
    train_and_evaluate(launch.load_config(str(CONFIG), _overrides(dirs)), workdir)
    assert "has trained its 3 epochs: nothing left to train" in capsys.readouterr().out
    _assert_same_run(workdir, reference)  # the figures written again


def test_resuming_with_fewer_epochs_than_trained_is_refused(dirs, reference, tmp_path):
    """Step 18 is no epoch's end of a 2-epoch run: neither trained on nor reported."""
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    config = launch.load_config(str(CONFIG), _overrides(dirs, num_epochs=2))
    with pytest.raises(ValueError, match="trained to step 18, past the end of num_epochs=2"):
        train_and_evaluate(config, workdir)
    _assert_same_run(workdir, reference)


@pytest.mark.parametrize(("steps_per_call", "checkpoint_every"), [(2, 2), (3, 6), (4, 2)])
def test_several_steps_per_call_give_bitwise_the_same_run(
    dirs, reference, tmp_path, monkeypatch, steps_per_call, checkpoint_every
):
    """Calls of several steps stop at every checkpoint and epoch end (6 steps); between them
    the reference's one-step calls and these give the same params and metrics, bit for bit."""
    counts = _counting_calls(monkeypatch)
    overrides = {"steps_per_call": steps_per_call, "checkpoint_every_steps": checkpoint_every}
    config = launch.load_config(str(CONFIG), _overrides(dirs, **overrides))
    train_and_evaluate(config, tmp_path / "run")
    fits = steps_per_call <= checkpoint_every
    assert counts == ([steps_per_call] * (STEPS // steps_per_call) if fits else [1] * STEPS)
    _assert_same_run(tmp_path / "run", reference)


def test_a_run_resumes_bitwise_with_another_steps_per_call(dirs, reference, tmp_path, monkeypatch):
    """Stopped (as by a signal) after its first epoch of 3-step calls, then resumed with 2."""
    counts = _counting_calls(monkeypatch)
    signalled = contextlib.contextmanager(lambda: (yield lambda: len(counts) >= 2))
    monkeypatch.setattr(loop, "_preemption", signalled)
    first = _overrides(dirs, steps_per_call=3, checkpoint_every_steps=6)
    train_and_evaluate(launch.load_config(str(CONFIG), first), tmp_path / "run")
    assert counts == [3, 3]
    monkeypatch.undo()
    counts = _counting_calls(monkeypatch)
    train_and_evaluate(
        launch.load_config(str(CONFIG), _overrides(dirs, steps_per_call=2)), tmp_path / "run"
    )
    assert counts == [2] * 6
    _assert_same_run(tmp_path / "run", reference)


def test_a_signal_during_the_end_of_run_report_waits_for_it(
    dirs, reference, tmp_path, caplog, monkeypatch
):
    workdir = tmp_path / "run"
    shutil.copytree(dirs / "reference", workdir)
    (workdir / "learning_curves.png").unlink()
    plot = loop.plot_learning_curves

    def plot_after_a_sigterm(records, path):
        signal.raise_signal(signal.SIGTERM)
        plot(records, path)

    def fail(signum, frame):
        raise AssertionError("SIGTERM reached the handler outside the run")

    monkeypatch.setattr(loop, "plot_learning_curves", plot_after_a_sigterm)
    previous = signal.signal(signal.SIGTERM, fail)
    try:
        with caplog.at_level(logging.WARNING):
            records = train_and_evaluate(launch.load_config(str(CONFIG), _overrides(dirs)), workdir)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [r["step"] for r in records] == [6, 12, 18]
    assert (workdir / "learning_curves.png").is_file()
    assert "after training had finished" in caplog.text


def test_a_signal_during_the_last_epochs_end_lets_the_run_finish(
    dirs, reference, tmp_path, caplog, monkeypatch
):
    """A signal taken after the last step (during the last evaluation) comes when nothing is
    left to resume: the run ends as an uninterrupted one, its figures written."""
    counts = _counting_calls(monkeypatch)
    signalled = contextlib.contextmanager(lambda: (yield lambda: len(counts) == STEPS))
    monkeypatch.setattr(loop, "_preemption", signalled)
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(launch.load_config(str(CONFIG), _overrides(dirs)), tmp_path / "run")
    assert "after training had finished" in caplog.text and "rerun to resume" not in caplog.text
    _assert_same_run(tmp_path / "run", reference)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"model.cell": "tcn"}, "tcn"), ({"model.pool": "first"}, "first")],
)
def test_a_bad_model_setting_fails_before_anything_is_written(
    dirs, reference, tmp_path, changes, named
):
    """Model settings are checked where the task builds its model, before any file is written."""
    config = launch.load_config(str(CONFIG), _overrides(dirs, **changes))
    with pytest.raises(ValueError, match=named):
        train_and_evaluate(config, tmp_path / "new")
    assert not (tmp_path / "new").exists()
