"""Where evaluation metrics go: ``metrics.jsonl``, TensorBoard event files, a learning-curve PNG."""

import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends one JSON object per evaluation to ``DIR/metrics.jsonl`` and mirrors the scalars
    to TensorBoard event files in ``DIR/tensorboard``.

    On a resume, records at or after the resumed step are dropped from ``metrics.jsonl`` first,
    so a run killed after writing an evaluation but before its checkpoint does not repeat it.
    """

    def __init__(self, workdir: str | Path, *, resume_step: int = 0):
        self.path = Path(workdir) / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        _replace(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tensorboard = _summary_writer(Path(workdir) / "tensorboard")

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("step", "epoch") and isinstance(value, int | float):
                self.tensorboard.add_scalar(name, value, record["step"])
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def _summary_writer(logdir: Path):
    """tensorboardX's ``SummaryWriter``, imported without torch.

    tensorboardX imports torch, when it is installed, only to accept torch tensors: seconds of
    start-up for every run and resume. We log Python floats, so while tensorboardX is imported
    (at first use, not with this module) ``import torch`` is answered with ImportError.
    """
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter(str(logdir))


def _replace(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically: a kill mid-write never loses the kept records."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (an empty list when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
