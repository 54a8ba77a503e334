"""Tests for rnnjax/train/checkpoints.py: round trips, retention, damage, kills."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.state import TrainState

# orbax leaves coroutines unawaited when a truncated file fails a read; harmless here.
_ORBAX_READ_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
_BIG = 4096  # rows that put the arrays in an OCDBT data file, outside its CRC'd b-tree nodes


def _state(step, rows=3):
    """A TrainState whose every value depends on ``step``; params w [rows, 4], b [4]; adam."""
    key = jax.random.key(step)
    params = {"w": jax.random.normal(key, (rows, 4)), "b": jnp.arange(4.0) + step}
    tx = optax.adam(1e-2)
    grads = jax.tree.map(jnp.sin, params)
    updates, opt_state = tx.update(grads, tx.init(params), params)
    params = optax.apply_updates(params, updates)
    params["b"] = params["b"].at[:2].set(jnp.array([-0.0, jnp.nan]))  # bits, not just values
    return TrainState(jnp.asarray(step, jnp.int32), params, opt_state, jax.random.key_data(key))


def _assert_bitwise(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert (a.dtype, a.shape, a.tobytes()) == (e.dtype, e.shape, e.tobytes())


def _save_steps(directory, steps, rows=3, **kwargs):
    with Checkpoints(directory, **kwargs) as ckpts:
        for step in steps:
            assert ckpts.save(_state(step, rows), {"epoch": 1}, force=True)


def _data_file(step_dir):
    """The largest OCDBT data file (``d/<hash>``) of the step's train state."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    path = _data_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _overwrite(step_dir):
    """Flips 8 bytes of the data file in place where orbax restores them without complaint.

    Some offsets hit a zstd frame header and fail loudly; we want the silent case, so offsets
    are tried until plain orbax restores wrong bytes without an error.
    """
    path = _data_file(step_dir)
    original = path.read_bytes()
    for fraction in (0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6):
        data, at = bytearray(original), int(len(original) * fraction)
        data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
        path.write_bytes(bytes(data))
        if _orbax_restores_other_bytes(step_dir):
            return
    pytest.fail("no offset gave a silent overwrite")


def _orbax_restores_other_bytes(step_dir):
    """True when plain orbax restores the step without error but with bytes unlike the saved."""
    manager = ocp.CheckpointManager(step_dir.parent, item_names=("state", "metadata"))
    target = ocp.args.StandardRestore(jax.eval_shape(lambda: _state(0, _BIG)))
    try:
        raw = manager.restore(int(step_dir.name), args=ocp.args.Composite(state=target))["state"]
    except Exception:  # detected by tensorstore: not the silent case
        return False
    finally:
        manager.close()
    try:
        _assert_bitwise(raw, _state(int(step_dir.name), _BIG))
    except AssertionError:
        return True
    return False


def _edit_metadata(step_dir):
    path = step_dir / "metadata" / "metadata"
    text = path.read_text()
    assert '"epoch": 1' in text
    path.write_text(text.replace('"epoch": 1', '"epoch": 7'))


def _edit_layout(step_dir):
    """A changed dtype in the record's layout, which must not pass for another model."""
    path = step_dir / "metadata" / "metadata"
    text = path.read_text()
    assert '"float32"' in text
    path.write_text(text.replace('"float32"', '"floaT32"', 1))


def test_round_trip_is_bitwise_with_namedtuples(tmp_path):
    state = _state(5)
    _save_steps(tmp_path, [5])
    with Checkpoints(tmp_path) as ckpts:
        restored, metadata = ckpts.restore(_state(0))
        _assert_bitwise(restored, state)
        assert isinstance(restored, TrainState)
        assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
        abstract_restored, _ = ckpts.restore(jax.eval_shape(lambda: _state(0)))
        _assert_bitwise(abstract_restored, state)
    assert metadata == {"epoch": 1, "step": 5}


def test_a_relative_directory_saves_and_restores_from_anywhere(tmp_path, monkeypatch):
    """The README's commands pass relative workdirs; orbax's tensorstore needs absolute paths."""
    monkeypatch.chdir(tmp_path)
    with Checkpoints("runs/checkpoints") as ckpts:
        assert ckpts.save(_state(3), {"epoch": 1}, force=True)
        assert ckpts.steps() == [3]
    monkeypatch.chdir(tmp_path / "runs")
    with Checkpoints("checkpoints", read_only=True) as ckpts:
        restored, metadata = ckpts.restore(_state(0))
    _assert_bitwise(restored, _state(3))
    assert metadata == {"epoch": 1, "step": 3}


def test_metadata_round_trip(tmp_path):
    config = {"lr": 1e-3, "layers": [128, 64], "cell": "lstm", "clip": None}
    metadata = {"epoch": 3, "config": config, "sums": {"loss": 1.5, "accuracy": 0.25}}
    with Checkpoints(tmp_path) as ckpts:
        ckpts.save(_state(7), metadata, force=True)
        with pytest.raises(ValueError, match="state.step is 8"):
            ckpts.save(_state(8), {"step": 9}, force=True)
    with Checkpoints(tmp_path) as ckpts:
        assert ckpts.restore(_state(0))[1] == {**metadata, "step": 7}
        assert ckpts.save(_state(9), force=True)  # metadata is optional
        with pytest.raises(TypeError, match="metadata must be JSON-serialisable: .* ndarray"):
            ckpts.save(_state(10), {"mean": np.zeros(2)}, force=True)
        with pytest.raises(TypeError, match=r"state must have a .step .* got a dict"):
            ckpts.save(_state(10).params, force=True)
    with Checkpoints(tmp_path) as ckpts:
        assert ckpts.restore(_state(0))[1] == {"step": 9}


@pytest.mark.parametrize("below", ["", "checkpoints"])
def test_a_file_where_the_directory_goes_is_named_at_once(tmp_path, below):
    """orbax failed in a background thread and left the manager to fail at the first save."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("kept")
    want = f"Checkpoints' directory must be a directory, but {blocker} is a file"
    with pytest.raises(NotADirectoryError, match=re.escape(want)):
        Checkpoints(blocker / below)
    assert blocker.read_text() == "kept"


def test_saves_every_n_steps_or_when_forced_and_keeps_the_last_k(tmp_path):
    with Checkpoints(tmp_path, keep=2, save_every_steps=2) as ckpts:
        saved = [ckpts.save(_state(s), {}) for s in range(1, 8)]
        assert saved == [False, True, False, True, False, True, False]
        assert ckpts.save(_state(7), {}, force=True)
        assert not ckpts.save(_state(7), {}, force=True)  # already saved
        assert ckpts.steps() == [6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["6", "7"]
    with pytest.raises(ValueError, match="keep must be >= 2"):
        Checkpoints(tmp_path, keep=1)


def test_old_steps_outlive_the_save_in_flight(tmp_path):
    with Checkpoints(tmp_path, keep=2) as ckpts:
        for step in (1, 2, 3):
            ckpts.save(_state(step, rows=50_000), {}, force=True)
            # Nothing older is deleted until the new step is complete.
            assert all((tmp_path / str(s)).is_dir() for s in range(max(1, step - 2), step))
        assert ckpts.steps() == [2, 3]


@_ORBAX_READ_NOISE
@pytest.mark.parametrize("damage", [_truncate, _overwrite, _edit_metadata, _edit_layout])
def test_damaged_latest_falls_back_to_the_previous_step(tmp_path, caplog, damage):
    rows = _BIG
    _save_steps(tmp_path, [1, 2], rows=rows)
    damage(tmp_path / "2")
    with caplog.at_level(logging.WARNING), Checkpoints(tmp_path) as ckpts:
        restored, metadata = ckpts.restore(_state(0, rows))
        _assert_bitwise(restored, _state(1, rows))
        assert metadata["step"] == 1
        assert ckpts.steps() == [1]
        assert ckpts.save(_state(2, rows), {"epoch": 1}, force=True)  # the step can be redone
    assert "Checkpoint step 2" in caplog.text and "damaged" in caplog.text
    if damage is not _truncate:
        assert "checksum mismatch" in caplog.text
    assert (tmp_path / "2.damaged").is_dir()


def test_a_record_without_its_own_sum_restores(tmp_path):
    """Records written before they had their own sum are checked by the state's sum alone."""
    _save_steps(tmp_path, [1])
    path = tmp_path / "1" / "metadata" / "metadata"
    record = json.loads(path.read_text())
    del record["record_sha256"]
    path.write_text(json.dumps(record))
    with Checkpoints(tmp_path) as ckpts:
        _assert_bitwise(ckpts.restore(_state(0))[0], _state(1))


@_ORBAX_READ_NOISE
def test_no_intact_checkpoint_raises_and_moves_nothing(tmp_path):
    _save_steps(tmp_path, [1, 2], rows=_BIG)
    _truncate(tmp_path / "1")
    _edit_metadata(tmp_path / "2")
    with Checkpoints(tmp_path) as ckpts, pytest.raises(RuntimeError, match="step 2: .*step 1: "):
        ckpts.restore(_state(0, rows=_BIG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_template_mismatch_is_an_error_not_damage(tmp_path):
    _save_steps(tmp_path, [1])
    with Checkpoints(tmp_path) as ckpts, pytest.raises(ValueError, match=r"\['w'\].*float32"):
        ckpts.restore(_state(0, rows=5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_leftover_tmp_directory_is_ignored_and_cleaned(tmp_path):
    _save_steps(tmp_path, [1])
    tmp = tmp_path / "2.orbax-checkpoint-tmp"  # what a kill in the middle of a save leaves
    shutil.copytree(tmp_path / "1", tmp)
    _truncate(tmp)
    with Checkpoints(tmp_path) as ckpts:
        assert ckpts.steps() == [1]
        _assert_bitwise(ckpts.restore(_state(0))[0], _state(1))
        ckpts.save(_state(3), {}, force=True)  # awaits orbax's clean-up
        assert not tmp.exists()


def test_no_checkpoints_restores_none(tmp_path):
    with Checkpoints(tmp_path / "new") as ckpts:
        assert ckpts.restore(_state(0)) is None
        assert ckpts.steps() == []


def test_async_save_then_close_is_complete(tmp_path):
    state = _state(4, rows=200_000)
    with Checkpoints(tmp_path, async_save=True) as ckpts:
        ckpts.save(state, {}, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["4"]
    with Checkpoints(tmp_path) as ckpts:
        _assert_bitwise(ckpts.restore(_state(0, rows=200_000))[0], state)


_SAVER = """
import sys
sys.path.insert(0, sys.argv[2])
from checkpoints_test import _state
from rnnjax.train.checkpoints import Checkpoints
with Checkpoints(sys.argv[1], keep=2) as ckpts:
    for step in range(1, 10_000):
        ckpts.save(_state(step, rows=100_000), {"epoch": 0}, force=True)
        print(step, flush=True)
"""


def test_kill_during_saves_leaves_a_restorable_directory(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, "-c", _SAVER, str(tmp_path), os.path.dirname(__file__)]
    saver = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:  # the kill lands while step 4 is being written (seen: "4.orbax-checkpoint-tmp")
        while int(saver.stdout.readline() or "-1") < 4:
            assert saver.poll() is None, "the saver died on its own"
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()
    with Checkpoints(tmp_path, keep=2) as ckpts:
        restored, metadata = ckpts.restore(_state(0, rows=100_000))
        assert metadata["step"] >= 3
        _assert_bitwise(restored, _state(metadata["step"], rows=100_000))
        ckpts.save(_state(10_000, rows=100_000), {}, force=True)
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def _tree_listing(directory):
    """Every path under ``directory`` with its size and modification time."""
    return {
        (str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
    }


@_ORBAX_READ_NOISE
def test_read_only_restores_but_prunes_cleans_moves_and_saves_nothing(tmp_path):
    _save_steps(tmp_path, [1, 2, 3, 4, 5], keep=5, rows=_BIG)
    shutil.copytree(tmp_path / "5", tmp_path / "6.orbax-checkpoint-tmp")  # a save in flight
    _truncate(tmp_path / "5")
    before = _tree_listing(tmp_path)
    with Checkpoints(tmp_path, read_only=True) as ckpts:  # keep=3 would prune 1 and 2
        restored, metadata = ckpts.restore(_state(0, _BIG))
        _assert_bitwise(restored, _state(4, _BIG))  # the damaged step 5 is skipped
        assert ckpts.steps() == [1, 2, 3, 4, 5]
        with pytest.raises(RuntimeError, match="read_only: cannot save step 7"):
            ckpts.save(_state(7), {}, force=True)
    assert _tree_listing(tmp_path) == before
    with Checkpoints(tmp_path / "missing", read_only=True) as ckpts:
        assert ckpts.restore(_state(0)) is None
    assert not (tmp_path / "missing").exists()
