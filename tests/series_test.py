"""Tests for rnnjax/data/series.py: the formula at known times, windows shifted by one, seeds."""

import numpy as np
import pytest

from rnnjax.data import series


def test_series_at_known_times():
    t = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
    # t·sin(t)/3 + 2·sin(5t): sin(5t) is 0, 1, 0, -1 at these times
    want = [0.0, np.pi / 6 + 2.0, 0.0, -np.pi / 2 - 2.0]
    np.testing.assert_allclose(series.series(t), want, atol=1e-12)


def test_windows_shapes_dtype_and_values_on_the_grid():
    data = series.windows(7, 20, seed=0)
    assert set(data) == {"inputs", "targets"}
    for array in data.values():
        assert array.shape == (7, 20, 1) and array.dtype == np.float32
    starts = series.window_starts(7, 20, seed=0)
    times = starts[:, None] + 0.1 * np.arange(20)
    np.testing.assert_allclose(data["inputs"][..., 0], series.series(times), rtol=1e-6, atol=1e-5)


def test_targets_are_the_inputs_one_step_later():
    data = series.windows(5, 12, seed=3, resolution=0.05)
    np.testing.assert_array_equal(data["targets"][:, :-1], data["inputs"][:, 1:])
    last = series.window_starts(5, 12, seed=3, resolution=0.05) + 12 * 0.05
    np.testing.assert_allclose(data["targets"][:, -1, 0], series.series(last), atol=1e-5)


def test_starts_keep_whole_windows_inside_the_range():
    starts = series.window_starts(10_000, 20, seed=0, t_min=5.0, t_max=10.0)
    assert starts.min() >= 5.0 and starts.max() + 21 * 0.1 <= 10.0
    assert starts.max() - starts.min() > 2.8  # spread over the whole range (2.9 wide)


def test_the_same_seed_gives_the_same_windows_another_seed_others():
    a, b = series.windows(4, seed=0), series.windows(4, seed=0)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.allclose(a["inputs"], series.windows(4, seed=1)["inputs"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_windows": 0}, "num_windows must be >= 1, got 0"),
        ({"n_steps": 0}, "n_steps must be >= 1, got 0"),
        ({"resolution": 0.0}, "resolution must be > 0, got 0.0"),
        ({"t_max": 2.0}, r"t_max - t_min must be >= \(n_steps \+ 1\) \* resolution = 2.1"),
    ],
)
def test_bad_arguments_name_what_was_expected(kwargs, message):
    args = {"num_windows": 3, "n_steps": 20, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        series.windows(**args)


def test_windows_at_checks_starts_shape():
    with pytest.raises(ValueError, match=r"starts must be \[N\], got shape \(2, 2\)"):
        series.windows_at(np.zeros((2, 2)))
