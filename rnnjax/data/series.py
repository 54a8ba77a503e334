"""The textbook's time series, ``t·sin(t)/3 + 2·sin(5t)``, cut into next-value windows.

A window of ``n_steps`` samples ``resolution`` apart starts at a random time ``t0`` in
``[t_min, t_max - (n_steps + 1)·resolution]``; its inputs are the series at
``t0, …, t0 + (n-1)·res`` and its targets the next values, ``t0 + res, …, t0 + n·res``
(Géron, Hands-On Machine Learning, the chapter on RNNs). The sampling is seeded, so a test split
is the same call with another seed.
"""

import numpy as np


def series(t: np.ndarray | float) -> np.ndarray:
    """The series at times ``t`` (any shape), float64: ``t·sin(t)/3 + 2·sin(5t)``."""
    t = np.asarray(t, dtype=np.float64)
    return t * np.sin(t) / 3 + 2 * np.sin(5 * t)


def window_starts(
    num_windows: int,
    n_steps: int = 20,
    *,
    seed: int,
    t_min: float = 0.0,
    t_max: float = 30.0,
    resolution: float = 0.1,
) -> np.ndarray:
    """``num_windows`` start times ``t0`` [N], uniform over the range whose windows (inputs and
    the target one step further) fit in ``[t_min, t_max]``; the same for the same ``seed``."""
    if num_windows < 1:
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    _check_steps(n_steps, resolution)
    span = (n_steps + 1) * resolution  # a window's inputs and its last target
    if t_max - t_min < span:
        raise ValueError(
            f"t_max - t_min must be >= (n_steps + 1) * resolution = {span:g} to fit a window, "
            f"got t_min={t_min}, t_max={t_max}"
        )
    rng = np.random.default_rng(seed)
    return t_min + rng.uniform(0.0, t_max - t_min - span, size=num_windows)


def windows_at(
    starts: np.ndarray, n_steps: int = 20, *, resolution: float = 0.1
) -> dict[str, np.ndarray]:
    """The windows that begin at ``starts`` [N]: float32 ``"inputs"`` and ``"targets"``
    [N, n_steps, 1], the targets being the inputs one step later."""
    _check_steps(n_steps, resolution)
    starts = np.asarray(starts, dtype=np.float64)
    if starts.ndim != 1:
        raise ValueError(f"starts must be [N], got shape {starts.shape}")
    values = series(window_times(starts, n_steps + 1, resolution=resolution))
    values = values[..., None].astype(np.float32)
    return {"inputs": values[:, :-1], "targets": values[:, 1:]}


def window_times(starts: np.ndarray, n_steps: int, *, resolution: float = 0.1) -> np.ndarray:
    """The times ``t0 + k·resolution`` for ``k < n_steps`` of windows starting at ``starts``:
    ``[N, n_steps]``."""
    return np.asarray(starts, dtype=np.float64)[:, None] + np.arange(n_steps) * resolution


def windows(
    num_windows: int,
    n_steps: int = 20,
    *,
    seed: int,
    t_min: float = 0.0,
    t_max: float = 30.0,
    resolution: float = 0.1,
) -> dict[str, np.ndarray]:
    """``num_windows`` random windows (``window_starts`` then ``windows_at``).

    Example:
      >>> train = windows(5000, 20, seed=0)   # {"inputs", "targets"}: [5000, 20, 1]
      >>> test = windows(1000, 20, seed=1)
    """
    starts = window_starts(
        num_windows, n_steps, seed=seed, t_min=t_min, t_max=t_max, resolution=resolution
    )
    return windows_at(starts, n_steps, resolution=resolution)


def _check_steps(n_steps: int, resolution: float) -> None:
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not resolution > 0:
        raise ValueError(f"resolution must be > 0, got {resolution}")
