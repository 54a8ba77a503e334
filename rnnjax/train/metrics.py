"""Where evaluation metrics go: ``metrics.jsonl``, TensorBoard event files, a learning-curve PNG."""

import json
import os
import sys
import time
from pathlib import Path

import matplotlib
from absl import logging

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends one JSON object per evaluation to ``DIR/metrics.jsonl`` and mirrors the scalars
    to TensorBoard event files in ``DIR/tensorboard``.

    On a resume, records after the resumed step are dropped from ``metrics.jsonl`` first,
    so a run killed after writing an evaluation but before its checkpoint does not repeat it;
    TensorBoard is told to drop the same steps of the earlier event files.
    """

    def __init__(self, workdir: str | Path, *, resume_step: int = 0):
        self.path = Path(workdir) / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tensorboard = _EventFile(Path(workdir) / "tensorboard", resume_step)

    def write(self, record: dict) -> None:
        """Appends ``record``; it is in both files when this returns (a kill loses nothing)."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {
            name: value
            for name, value in record.items()
            if name not in ("step", "epoch") and isinstance(value, int | float)
        }
        self.tensorboard.write_scalars(scalars, record["step"])

    def close(self) -> None:
        self.tensorboard.close()


class _EventFile:
    """A TensorBoard event file in ``logdir`` whose scalars are on disk once written.

    tensorboardX's ``SummaryWriter`` queues events for a thread that writes them to the file
    only every ``flush_secs`` (its ``flush()`` does not empty the queue), so a kill lost up to two
    minutes of them. This writes each event in the calling thread, then flushes and fsyncs.

    tensorboardX names the file by the second and opens it with "wb", so a second writer in
    the same second (a quick rerun) emptied the first's file: a nanosecond suffix keeps each.

    The file starts with a "session start" at ``resume_step + 1``: TensorBoard then drops the
    earlier files' events from that step on (its purge of orphaned data, as tensorboardX's
    ``purge_step``), so steps a killed run logged past its last checkpoint are not shown twice.
    """

    def __init__(self, logdir: Path, resume_step: int):
        events_writer, self._event, self._scalar, session_log = _tensorboardx()
        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = events_writer(str(logdir / "events"), f".{time.time_ns()}")
        start = session_log(status=session_log.START)
        event = self._event(wall_time=time.time(), step=resume_step + 1, session_log=start)
        self._writer.write_event(event)
        self._writer.flush()

    def write_scalars(self, scalars: dict, step: int) -> None:
        wall_time = time.time()
        for name, value in scalars.items():
            summary = self._scalar(name, value)
            self._writer.write_event(self._event(wall_time=wall_time, step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _tensorboardx():
    """tensorboardX's synchronous ``EventsWriter``, its ``Event`` proto, ``summary.scalar`` and
    the ``SessionLog`` proto, imported without torch.

    tensorboardX imports torch, when it is installed, only to accept torch tensors: seconds of
    start-up for every run and resume. We log Python floats, so while tensorboardX is imported
    (at first use, not with this module) ``import torch`` is answered with ImportError.
    """
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import scalar
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return EventsWriter, Event, scalar, SessionLog


def write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically: a kill mid-write never loses what it held, and
    a reader (another process) sees the old text or the new."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (an empty list when it does not exist).

    An unparseable last line is what a kill in the middle of an append leaves: it is dropped
    with a warning (``MetricsWriter`` then rewrites the file without it). An unparseable line
    before the last is damage, and raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n != lines[-1][0]:
                raise ValueError(
                    f"{path}, line {n}: expected a JSON record, got {line[:80]!r} ({e.msg}); "
                    "only a torn last line is dropped, so fix or delete this line"
                ) from e
            logging.warning("Dropped the torn last line %d of %s: %r", n, path, line[:80])
    return records


def plot_learning_curves(records: list[dict], out_path: str | Path) -> None:
    """Plots train/test loss and accuracy against epoch into a PNG."""
    epochs = [r["epoch"] for r in records]
    panels = [("loss", "loss"), ("accuracy", "accuracy")]
    panels = [p for p in panels if any(f"train_{p[0]}" in r for r in records)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        for split in ("train", "test"):
            values = [r.get(f"{split}_{metric}") for r in records]
            ax.plot(epochs, values, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(matrix, out_path: str | Path) -> None:
    """Draws a confusion matrix (rows: true class, columns: predicted) with counts."""
    classes = len(matrix)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * classes, 1 + 0.6 * classes))
    ax.imshow(matrix, cmap="Blues")
    for i in range(classes):
        for j in range(classes):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
