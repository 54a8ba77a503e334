"""Checks that drawn tokens follow a distribution worked out independently."""

import numpy as np


def assert_drawn_from(tokens, want) -> None:
    """The tokens' frequencies lie within five standard errors of ``want`` (probabilities over
    ``0..len(want)-1``), and tokens of probability 0 never occur."""
    tokens = np.asarray(tokens).ravel()
    want = np.asarray(want, np.float64)
    got = np.bincount(tokens, minlength=len(want)) / tokens.size
    assert got.shape == want.shape, (got, want)
    assert np.all(got[want == 0] == 0), (got, want)
    tolerance = 5 * np.sqrt(want * (1 - want) / tokens.size)
    assert np.all(np.abs(got - want) <= tolerance), (got, want, tolerance)
