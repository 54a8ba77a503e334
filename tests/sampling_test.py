"""Tests for rnnjax/sampling.py: drawn tokens against the distribution worked out in numpy.

Truth: ``softmax(logits / T)`` restricted, as the options say, to the k largest logits and to
the fewest most likely tokens whose probabilities reach p, computed with numpy; many draws
must land within five standard errors of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from distributions import assert_drawn_from

from rnnjax import sampling

LOGITS = np.array([1.5, -0.5, 0.7, 2.0, -2.0, 0.0], np.float32)
DRAWS = 16_384


def expected(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution tokens are drawn from, in numpy."""
    p = np.exp(logits / temperature - np.max(logits / temperature))
    p /= p.sum()
    keep = np.ones(len(p), bool)
    if top_k is not None:
        keep &= logits >= np.sort(logits)[-top_k]
    if top_p is not None:
        order = np.argsort(-p)
        mass_before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
        keep[order[mass_before >= top_p]] = False
    p = np.where(keep, p, 0.0)
    return p / p.sum()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.5},
        {"temperature": 2.0},
        {"top_k": 3},
        {"top_p": 0.8},
        {"temperature": 1.5, "top_k": 4, "top_p": 0.9},
    ],
    ids=["plain", "cold", "hot", "top_k", "top_p", "all_three"],
)
def test_draws_follow_the_tempered_truncated_distribution(options):
    logits = np.tile(LOGITS, (DRAWS, 1))
    tokens = jax.jit(lambda k, x: sampling.draw(k, x, **options))(jax.random.key(0), logits)
    assert tokens.shape == (DRAWS,) and tokens.dtype == jnp.int32
    assert_drawn_from(tokens, expected(LOGITS, **options))


def test_top_k_of_one_and_a_tiny_top_p_are_the_argmax():
    logits = jax.random.normal(jax.random.key(1), (64, 9))
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        tokens = sampling.draw(jax.random.key(2), logits, **options)
        np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))


def test_ties_with_the_kth_logit_stay_candidates():
    logits = np.tile(np.array([1.0, 1.0, 1.0, -5.0], np.float32), (DRAWS, 1))
    tokens = sampling.draw(jax.random.key(3), logits, top_k=2)
    assert set(np.unique(tokens)) == {0, 1, 2}


def test_a_traced_temperature_draws_as_a_concrete_one():
    draw = jax.jit(
        lambda t, p: sampling.draw(jax.random.key(4), LOGITS[None], temperature=t, top_p=p)
    )
    want = sampling.draw(jax.random.key(4), LOGITS[None], temperature=0.7, top_p=0.9)
    np.testing.assert_array_equal(draw(0.7, 0.9), want)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
        ({"temperature": "hot"}, "temperature must be a finite number > 0, got 'hot'"),
        ({"top_k": 0}, "top_k must be None or an int >= 1, got 0"),
        ({"top_k": 2.0}, "top_k must be None or an int >= 1, got 2.0"),
        ({"top_k": 7}, "top_k must be at most the vocabulary size V=6, got 7"),
        ({"top_p": 0.0}, r"top_p must be None or a number in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be None or a number in \(0, 1\], got 1.5"),
    ],
)
def test_bad_options_name_what_was_expected(options, message):
    with pytest.raises(ValueError, match=message):
        sampling.draw(jax.random.key(0), LOGITS, **options)


def test_scalar_logits_are_named():
    with pytest.raises(ValueError, match=r"logits must be \[\.\.\., V\], .* got a scalar"):
        sampling.draw(jax.random.key(0), jnp.float32(1.0))
