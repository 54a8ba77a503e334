"""Checkpoints that survive kills and corruption: orbax-checkpoint plus a checksum per step.

On disk (orbax 0.12, local files), ``directory/<step>/`` holds ``state/`` (the train state as
an OCDBT/zarr tree: the arrays' bytes live in ``state/**/d/<hash>`` files) and ``metadata/``
(one JSON record: the caller's metadata, the layout, a sha256 of the state and one of the
record itself).

Kills. orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it to ``<step>``
only once every file is written, so a kill mid-save leaves a tmp dir that listings ignore and
``cleanup_tmp_directories`` deletes when the next manager starts (awaited by the next save).
A kill while an old step is being deleted (a plain rmtree) leaves a partial old step: the
checksum rejects it should it ever be needed, and the next :meth:`Checkpoints.wait` deletes it.

Deletion order. orbax's own ``max_to_keep`` deletes old steps in its finalize thread after the
new step's commit and rename succeeded, but we do not rely on that internal: we delete old
steps ourselves in :meth:`Checkpoints.wait`, after ``wait_until_finished``, so only steps older
than ``keep`` complete ones go. Between saves ``keep + 1`` steps may be on disk.

Corruption. orbax does not check data: OCDBT b-tree nodes carry a CRC, but bytes overwritten
inside a data file restore silently as wrong values. So every record stores a sha256 over each
leaf's path, dtype, shape and bytes in tree order, and the metadata; and a sha256 of the record
itself, so that a changed layout reads as damage, not as a different model.
:meth:`Checkpoints.restore` recomputes both and falls back to the next older step when a step
is unreadable or a sum differs. ``keep >= 2`` so a damaged newest step always has a complete
predecessor.

Devices and processes. A state sharded over a mesh saves as whole arrays, so it restores onto
a template with any other shardings (a run saved on N devices resumes on M). With several
processes every one calls the same methods in the same order: orbax writes each array's shards
from the processes that hold them and the metadata record from process 0, the checksum
gathers what no single process holds, and only process 0 moves a damaged step aside.

Readers. ``Checkpoints(directory, read_only=True)`` (evaluation, while a trainer may still be
running) only reads: it deletes no old step, cleans no tmp directory (it may be a trainer's save
in flight), moves no damaged step aside and refuses to save.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from rnnjax._checks import check_directory
from rnnjax.train import distributed


class _Damaged(Exception):
    """A step that cannot be read back or does not match its checksum."""


class Checkpoints:
    """Saves train states every N steps (and when forced), keeps the newest ``keep``.

    Args:
      directory: where the step directories go (created when missing); a relative path is
        taken from the current directory.
      keep: how many complete checkpoints to keep, at least 2 (see the module docstring).
      save_every_steps: ``save`` writes when ``step % save_every_steps == 0``; ``None`` saves
        only when forced.
      async_save: write in a background thread; ``save`` returns once the arrays are copied.
      read_only: only restore and list steps, writing and deleting nothing (see the module
        docstring), so a reader cannot disturb a trainer using the same directory.

    Example:
      >>> with Checkpoints(workdir / "checkpoints", save_every_steps=200) as ckpts:
      ...     state, meta = ckpts.restore(state) or (state, {"epoch": 0})
      ...     ckpts.save(state, {"epoch": epoch}, force=True)
    """

    def __init__(
        self, directory, *, keep=3, save_every_steps=None, async_save=True, read_only=False
    ):
        if keep < 2:
            raise ValueError(
                f"keep must be >= 2 so a damaged newest step has a fallback, got {keep}"
            )
        if save_every_steps is not None and save_every_steps < 1:
            raise ValueError(f"save_every_steps must be None or >= 1, got {save_every_steps}")
        self.directory = _absolute(directory)
        if _is_local(directory) and not read_only:  # orbax would fail in a thread
            check_directory(Path(directory), "Checkpoints' directory")
        self.keep, self.save_every_steps = keep, save_every_steps
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
            save_interval_steps=0 if read_only else 1,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "metadata")
        )

    def save(self, state, metadata: dict | None = None, *, force: bool = False) -> bool:
        """Saves ``state`` at step ``int(state.step)`` when due or forced; False when skipped.

        ``state`` is any pytree of arrays with a ``step`` (a ``TrainState``); ``metadata``, if
        given, must be JSON-serialisable (e.g. the data position and the config); its
        ``"step"`` is set to the state's step. A step already saved is skipped.
        """
        if not hasattr(state, "step"):
            raise TypeError(
                f"state must have a .step that numbers its checkpoint (a TrainState), got a "
                f"{type(state).__name__}"
            )
        step = int(state.step)
        metadata = {} if metadata is None else metadata
        if self.read_only:
            raise RuntimeError(
                f"Checkpoints({self.directory}) was opened read_only: cannot save step {step}"
            )
        due = force or (self.save_every_steps is not None and step % self.save_every_steps == 0)
        if not due or step in self._manager.all_steps():
            return False
        if metadata.get("step", step) != step:
            raise ValueError(f"metadata['step'] is {metadata['step']}, but state.step is {step}")
        try:
            metadata = json.loads(json.dumps({**metadata, "step": step}))  # as restore sees it
        except TypeError as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from None
        record = {
            "metadata": metadata,
            "layout": _layout(state),
            "sha256": _digest(state, metadata),
        }
        record["record_sha256"] = _record_digest(record)
        self.wait()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(record)
        )
        self._manager.save(step, args=args, force=True)
        return True

    def restore(self, template_state) -> tuple[Any, dict] | None:
        """The newest intact ``(state, metadata)``, or None when there is no checkpoint.

        ``template_state`` (a state or its ``jax.eval_shape``) gives the structure, NamedTuples
        included, dtypes, shapes and shardings; the values come back bitwise. Damaged newer
        steps are logged and moved aside to ``<step>.damaged`` for inspection (left in place
        when ``read_only``).

        Raises:
          ValueError: the template's leaves differ from the checkpoint's (a different model).
          RuntimeError: there are checkpoints, but none is intact (nothing is moved then).
        """
        target = _abstract(template_state)
        damaged = []
        for step in reversed(self.steps()):
            try:
                restored = self._verified(step, target)
            except _Damaged as e:
                logging.warning("Checkpoint step %d in %s is damaged: %s", step, self.directory, e)
                damaged.append((step, e))
                continue
            if not self.read_only:
                for bad, _ in damaged:
                    self._move_aside(bad)
            return restored
        if damaged:
            found = "; ".join(f"step {s}: {e}" for s, e in damaged)
            raise RuntimeError(f"No intact checkpoint in {self.directory}: {found}")
        return None

    def steps(self) -> list[int]:
        """The steps of complete checkpoints, oldest first (waits for a save in flight)."""
        self.wait()
        return list(self._manager.all_steps())

    def wait(self):
        """Waits for a save in flight, then deletes all but the newest ``keep`` steps (none
        when ``read_only``)."""
        self._manager.wait_until_finished()
        if self.read_only:
            return
        for step in self._manager.all_steps()[: -self.keep]:
            self._manager.delete(step)

    def close(self):
        """Finishes pending work (see :meth:`wait`) and releases orbax's threads."""
        self.wait()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _verified(self, step: int, target):
        """Restores ``step`` onto ``target``; raises ``_Damaged`` when it is not intact."""
        try:
            args = ocp.args.Composite(metadata=ocp.args.JsonRestore())
            record = self._manager.restore(step, args=args)["metadata"]
            layout, digest, metadata = record["layout"], record["sha256"], record["metadata"]
        except Exception as e:  # any failure to read the record means damage
            raise _Damaged(f"unreadable metadata ({type(e).__name__}: {e})") from e
        # A changed layout must read as damage, not as a different model (records written
        # before the record had its own sum have none to check)
        record_sum = record.get("record_sha256")
        if record_sum is not None and record_sum != _record_digest(record):
            raise _Damaged("checksum mismatch in its record: its layout or metadata changed")
        if layout != _layout(target):
            raise ValueError(_mismatch(step, layout, _layout(target)))
        try:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
            state = self._manager.restore(step, args=args)["state"]
        except Exception as e:  # the layout matches, so a failure here means damage
            raise _Damaged(f"unreadable arrays ({type(e).__name__}: {e})") from e
        if _digest(state, metadata) != digest:
            raise _Damaged("checksum mismatch: its bytes changed after it was written")
        return state, metadata

    def _move_aside(self, step: int):
        """Renames a damaged step out of orbax's view, so a new save may reuse the step."""
        destination = self.directory / f"{step}.damaged"
        n = 1
        while destination.exists():
            n += 1
            destination = self.directory / f"{step}.damaged{n}"
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(destination)
            logging.warning("Moved damaged checkpoint step %d to %s", step, destination)
        distributed.sync(f"moved aside damaged step {step}")
        self._manager.reload()


def _absolute(directory) -> epath.Path:
    """``directory`` made absolute when it is local: orbax's tensorstore refuses relative paths
    (a relative workdir failed at the first save); a URL (``gs://...``) stays as it is."""
    path = epath.Path(directory)
    return path.absolute() if _is_local(directory) else path


def _is_local(directory) -> bool:
    """A path on this machine, not a URL such as ``gs://...``."""
    return "://" not in str(directory)


def _abstract(template):
    """ShapeDtypeStructs with shardings (this process's first device where the template has
    none)."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        sharding = getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(leaf, template)


def _layout(tree) -> list:
    """``[path, shape, dtype]`` per leaf, in tree order, as JSON will give it back."""
    return [
        [jax.tree_util.keystr(path), list(np.shape(x)), str(x.dtype)]
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _digest(tree, metadata: dict) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes in tree order, then the metadata."""
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        x = np.ascontiguousarray(distributed.host_array(x))
        h.update(f"{jax.tree_util.keystr(path)}:{x.dtype}:{x.shape};".encode())
        h.update(x.tobytes())
    h.update(json.dumps(metadata, sort_keys=True).encode())
    return h.hexdigest()


def _record_digest(record: dict) -> str:
    """sha256 of a step's record (metadata, layout, the state's sum) but its own sum."""
    fields = {key: value for key, value in record.items() if key != "record_sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _mismatch(step: int, saved: list, wanted: list) -> str:
    """Names the leaves where the template and checkpoint ``step`` differ."""
    saved = {p: f"{d}{s}" for p, s, d in saved}
    wanted = {p: f"{d}{s}" for p, s, d in wanted}
    diffs = [
        f"{p}: checkpoint {saved.get(p, 'missing')}, template {wanted.get(p, 'missing')}"
        for p in sorted(saved.keys() | wanted.keys())
        if saved.get(p) != wanted.get(p)
    ]
    return f"template does not match checkpoint step {step}: " + "; ".join(diffs[:5])
