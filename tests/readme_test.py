"""The README's Python blocks run as written, each in a fresh process."""

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
images10, labels10 = np.stack([images] * 10), np.stack([labels] * 10)
"""
EPILOGUE = """
print("records", len(records), "test_accuracy" in records[-1], future.shape, metrics["loss"].shape)
"""


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks between a README heading and the next one of its level or above."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) + len(heading) :]
    level = len(heading.split(" ")[0])
    end = re.search(rf"\n#{{1,{level}}} ", section)
    return re.findall(r"```python\n(.*?)```", section[: end.start() if end else None], re.S)


def run(script: str, tmp_path: Path) -> str:
    """Runs ``script`` in a fresh Python from the repository root; returns its last line."""
    env = os.environ | {"TFDS_DATA_DIR": str(tmp_path / "tfds")}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()[-1]


def test_the_readme_quickstart_runs_as_written(tmp_path):
    blocks = python_blocks("## Quickstart")
    assert len(blocks) == 5, "the quickstart's blocks changed: update this test's prelude"
    idx = tmp_path / "idx"
    idx.mkdir()
    _write_idx(idx, n_train=300, n_test=50)  # two batches of the config's 150
    script = PRELUDE + "\n".join(blocks) + EPILOGUE
    script = script.replace("/path/to/mnist-idx-files", str(idx))
    script = script.replace('"runs/mnist"', repr(str(tmp_path / "run")))
    assert run(script, tmp_path) == "records 1 True (1, 300, 1) (10,)"


# what the README's data-parallel block takes from the quickstart, built touching no device
PARALLEL_PRELUDE = """
import jax, numpy as np, optax, rnnjax
model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.gru(16)), rnnjax.dense(10), in_size=28)
tx = optax.adam(1e-3)
rng = np.random.default_rng(0)
batch = {"inputs": rng.random((150, 28, 28), np.float32), "labels": np.arange(150) % 10}
"""
PARALLEL_EPILOGUE = """
print(jax.device_count(), int(state.step), bool(np.isfinite(metrics["loss"])))
"""


def test_the_readme_data_parallel_block_runs_as_written(tmp_path):
    """In a fresh process it makes one CPU device per core (as many as divide 150) and steps."""
    blocks = [b for b in python_blocks("### Training on several devices") if "split_cpu" in b]
    assert len(blocks) == 1
    cores = len(os.sched_getaffinity(0))
    devices = max(n for n in range(1, cores + 1) if 150 % n == 0)
    line = run(PARALLEL_PRELUDE + blocks[0] + PARALLEL_EPILOGUE, tmp_path)
    assert line == f"{devices} 1 True"


def test_the_readme_language_model_block_runs_as_written(tmp_path):
    (block,) = python_blocks("## API tour")
    script = "import jax, jax.numpy as jnp, rnnjax\n" + block + "print(text.shape, text.dtype)\n"
    assert run(script, tmp_path) == "(1, 100) int32"
