"""The README's quickstart runs as written: its Python blocks, in order, in a fresh process."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import _write_idx

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

# what the README leaves to the reader: a batch of images, and where the IDX files and runs live
PRELUDE = """
import numpy as np
images = np.random.default_rng(0).random((16, 28, 28), np.float32)
labels = np.arange(16) % 10
"""
EPILOGUE = """
print("records", len(records), "test_accuracy" in records[-1], future.shape)
"""


def quickstart_blocks() -> list[str]:
    """The ```python blocks between the README's quickstart heading and the next section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_quickstart_runs_as_written(tmp_path):
    blocks = quickstart_blocks()
    assert len(blocks) == 4, "the quickstart's blocks changed: update this test's prelude"
    idx = tmp_path / "idx"
    idx.mkdir()
    _write_idx(idx, n_train=300, n_test=50)  # two batches of the config's 150
    script = PRELUDE + "\n".join(blocks) + EPILOGUE
    script = script.replace("/path/to/mnist-idx-files", str(idx))
    script = script.replace('"runs/mnist"', repr(str(tmp_path / "run")))
    env = os.environ | {"TFDS_DATA_DIR": str(tmp_path / "tfds")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "records 1 True (1, 300, 1)"
