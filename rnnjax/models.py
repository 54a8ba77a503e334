"""The sequence shapes as models: seq-to-vector and seq-to-seq (more in ``encoder_decoder``).

A ``Model`` is ``init(key) -> params`` and ``apply(params, inputs, *, lengths=None, key=None)``.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.layers import Layer


class Model(NamedTuple):
    """A whole network: ``init(key) -> params`` and ``apply(params, inputs, **kwargs)``."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., Any]


POOLS = ("last", "mean", "max")


def seq2vec(body: Layer, head: Layer, *, in_size: int, pool: str = "last") -> Model:
    """Sequence in, one vector out: ``head(pool(body(xs)))`` (the textbook's MNIST classifier).

    Args:
      body: a layer ``[B, T, in_size] -> [B, T, H]`` (e.g. ``rnn(simple(150))``).
      head: a layer on the pooled ``[B, H]`` (e.g. ``dense(10)``).
      in_size: input feature size D.
      pool: "last" (the output at each sequence's last valid step, i.e. the final hidden state of
        a forward RNN), "mean" or "max" over valid steps.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, out]``.

    Example:
      >>> model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(150)), rnnjax.dense(10), in_size=28)
      >>> logits = model.apply(model.init(jax.random.key(0)), images)   # images [B, 28, 28]
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")

    def init(key):
        kb, kh = jax.random.split(key)
        body_params, size = body.init(kb, in_size)
        head_params, _ = head.init(kh, size)
        return {"body": body_params, "head": head_params}

    def apply(params, xs, *, lengths=None, key=None):
        kb, kh = (None, None) if key is None else jax.random.split(key)
        _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
        _, out = head.apply(params["head"], pool_steps(ys, lengths, pool), key=kh)
        return out

    return Model(init, apply)


def seq2seq(body: Layer, head: Layer, *, in_size: int) -> Model:
    """An output at every step: ``head(body(xs))``, zero past each sequence's length.

    ``apply(params, xs[B, T, D], *, lengths=None, key=None) -> [B, T, out]``.

    Example (next-value prediction of a time series):
      >>> model = rnnjax.seq2seq(rnnjax.rnn(rnnjax.cells.simple(100)), rnnjax.dense(1), in_size=1)
    """

    def init(key):
        kb, kh = jax.random.split(key)
        body_params, size = body.init(kb, in_size)
        head_params, _ = head.init(kh, size)
        return {"body": body_params, "head": head_params}

    def apply(params, xs, *, lengths=None, key=None):
        kb, kh = (None, None) if key is None else jax.random.split(key)
        _, ys = body.apply(params["body"], xs, lengths=lengths, key=kb)
        _, out = head.apply(params["head"], ys, lengths=lengths, key=kh)
        if lengths is None:
            return out
        return jnp.where(valid_mask(lengths, out.shape[1])[..., None], out, 0.0)

    return Model(init, apply)


def valid_mask(lengths: jax.Array, time: int) -> jax.Array:
    """Bool ``[B, T]``: true on each sequence's valid steps."""
    return jnp.arange(time)[None, :] < lengths[:, None]


def pool_steps(ys: jax.Array, lengths: jax.Array | None, pool: str) -> jax.Array:
    """Pools ``ys [B, T, H]`` over valid steps to ``[B, H]``; empty sequences give zeros."""
    batch, time = ys.shape[:2]
    if lengths is None:
        lengths = jnp.full((batch,), time)
    if pool == "last":
        last = jnp.take_along_axis(ys, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        return jnp.where((lengths > 0)[:, None], last, 0.0)
    mask = valid_mask(lengths, time)[..., None]
    if pool == "mean":
        return jnp.sum(jnp.where(mask, ys, 0.0), axis=1) / jnp.maximum(lengths, 1)[:, None]
    best = jnp.max(jnp.where(mask, ys, -jnp.inf), axis=1)
    return jnp.where((lengths > 0)[:, None], best, 0.0)
