"""Fixtures shared by the training tests."""

import gzip
from pathlib import Path

import numpy as np
import pytest


def _write_idx(folder: Path, n_train: int = 60, n_test: int = 25) -> None:
    """The four MNIST IDX files, tiny: class c has a bright row 2c + 4 over faint noise."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        images[np.arange(n), 2 * labels + 4] = 250
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(bytes([0, 0, 8, array.ndim]) + dims + array.tobytes())


@pytest.fixture(scope="session")
def tiny_idx(tmp_path_factory) -> Path:
    """A folder with tiny MNIST-named IDX files (60 train, 25 test images of 28x28)."""
    folder = tmp_path_factory.mktemp("tiny_idx")
    _write_idx(folder)
    return folder
