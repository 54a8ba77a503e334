"""Decoded splits as ``.npz`` files, ragged columns included, without pickle."""

import os
import uuid
from pathlib import Path

import numpy as np


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` atomically (readers never see a partial file).

    Object columns (one array or ``bytes`` per example) are stored flat: ``key@values`` holds the
    concatenated contents and ``key@shapes`` (``key@bytes`` for bytes) each example's shape.
    """
    entries = {}
    for key, column in arrays.items():
        if column.dtype != object:
            entries[key] = column
        elif all(isinstance(x, bytes) for x in column):
            entries[f"{key}@bytes"] = np.array([len(x) for x in column], np.int64)
            entries[f"{key}@values"] = np.frombuffer(b"".join(column), np.uint8)
        else:
            entries[f"{key}@shapes"] = np.array([x.shape for x in column], np.int64)
            entries[f"{key}@values"] = np.concatenate([x.ravel() for x in column])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(partial, "wb") as f:  # a file object, so savez adds no ".npz" to the name
            np.savez(f, **entries)
        os.replace(partial, path)
    finally:  # a failed write (e.g. a full disk) leaves no partial copy of the split behind
        partial.unlink(missing_ok=True)


def load(path: Path) -> dict[str, np.ndarray]:
    """Reads a file written by ``save``, rebuilding object columns."""
    with np.load(path) as npz:
        entries = {key: npz[key] for key in npz.files}
    arrays = {}
    for key, entry in entries.items():
        name, _, kind = key.partition("@")
        if not kind:
            arrays[name] = entry
        elif kind != "values":
            arrays[name] = _unflatten(entries[f"{name}@values"], entry, kind == "bytes")
    return arrays


def _unflatten(values: np.ndarray, shapes: np.ndarray, as_bytes: bool) -> np.ndarray:
    sizes = shapes if as_bytes else np.prod(shapes, axis=1, dtype=np.int64)
    pieces = np.split(values, np.cumsum(sizes)[:-1])
    column = np.empty(len(pieces), object)
    for i, (piece, shape) in enumerate(zip(pieces, shapes, strict=True)):
        column[i] = piece.tobytes() if as_bytes else piece.reshape(shape)
    return column
