"""Drawing tokens from logits: temperature, top-k and nucleus (top-p) sampling.

``decoding.sample`` (encoder–decoders) and ``generate`` (token layers) draw each step's token
with ``draw``; it is public for decoding loops of your own. The three options compose as in
most decoders: logits are divided by the temperature, then only the ``top_k`` largest and the
smallest set of most likely tokens whose probability reaches ``top_p`` stay candidates.
"""

from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import real_number


def check_options(temperature, top_k, top_p) -> None:
    """Checks the options where they are concrete (a traced temperature or top_p passes):
    ``temperature > 0``, ``top_k`` an int >= 1 or None, ``top_p`` in (0, 1] or None."""
    if not isinstance(temperature, jax.core.Tracer) and not (
        real_number(temperature) and 0 < float(temperature) < float("inf")
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1
    ):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    concrete_p = top_p is not None and not isinstance(top_p, jax.core.Tracer)
    if concrete_p and not (real_number(top_p) and 0 < float(top_p) <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def check_key(key) -> None:
    """Checks ``key`` is one PRNG key: ``jax.random.key(n)``, or the raw ``uint32 [2]`` of
    ``jax.random.PRNGKey(n)``."""
    if isinstance(key, jax.Array | np.ndarray):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        if typed or (key.dtype == np.uint32 and key.shape == (2,)):
            return
        got = f"an array of shape {key.shape} and dtype {key.dtype}"
    else:
        got = repr(key)
    raise TypeError(f"key must be one PRNG key such as jax.random.key(0), got {got}")


def draw(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """One token per row of ``logits [..., V]``, drawn from ``softmax(logits / temperature)``
    restricted to the ``top_k`` largest logits (ties with the k-th kept) and to the fewest most
    likely tokens whose probabilities sum to ``top_p`` or more (Holtzman et al. 2020).

    Returns int32 ``[...]``. A temperature below 1 sharpens the distribution, above 1 flattens
    it; ``top_k=1`` is the argmax when the largest logit is unique (tied ones are all kept, as
    Hugging Face's top-k does). ``top_k`` is static; ``temperature`` and ``top_p`` may be
    traced.

    Example:
      >>> token = rnnjax.sampling.draw(key, logits, temperature=0.8, top_k=40)
    """
    check_options(temperature, top_k, top_p)
    if jnp.ndim(logits) < 1:
        raise ValueError(
            f"logits must be [..., V], one row per token drawn, got a scalar {logits!r}"
        )
    logits = jnp.asarray(logits, jnp.float32) / temperature
    vocab = logits.shape[-1]
    if top_k is not None:
        if top_k > vocab:
            raise ValueError(f"top_k must be at most the vocabulary size V={vocab}, got {top_k}")
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        ordered = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
        # the least likely logit still needed to reach top_p (the first one always is)
        threshold = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
