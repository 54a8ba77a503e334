"""Attention over an encoder's outputs for an encoder–decoder's decoder (Luong et al. 2015;
Bahdanau et al. 2015): its carry, its scores and its masked weights."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells._base import glorot_uniform
from rnnjax.layers import dense


class AttentionCarry(NamedTuple):
    """An attention decoder's carry: the cell's carry and what every step attends over.

    Every leaf has the batch axis first, so beam search tiles and reorders it like any carry.
    """

    cell: Any  # the decoder cell's carry
    feed: jax.Array  # [B, H] the last attentional state h̃ (zeros before the first step)
    memory: jax.Array  # [B, S, M] the encoder's outputs
    keys: jax.Array  # [B, S, H] the memory projected once for the score (W_a m or U m)
    mask: jax.Array  # [B, S] bool, true on valid source steps
    weights: jax.Array  # [B, S] the last step's attention weights (zeros before the first)


def attention_weights(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax of ``scores [B, S]`` over the steps where ``mask`` is true; exactly 0 elsewhere
    (all 0 for an empty source)."""
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1) * mask


def attention_init(key, kind: str, memory_size: int, units: int) -> dict:
    """``memory``: W_a or U ``[M, H]``; additive also ``query`` W ``[H, H]`` and ``v [H]``;
    ``combine``: W_c ``[M + H, H]`` and b_c."""
    km, kq, kv, kc = jax.random.split(key, 4)
    params = {"memory": glorot_uniform(km, (memory_size, units), jnp.float32)}
    if kind == "bahdanau":
        params["query"] = glorot_uniform(kq, (units, units), jnp.float32)
        params["v"] = glorot_uniform(kv, (units, 1), jnp.float32)[:, 0]
    params["combine"], _ = dense(units).init(kc, memory_size + units)
    return params


def scores(params, kind: str, query: jax.Array, keys: jax.Array) -> jax.Array:
    """``[B, S]`` scores of ``query [B, H]`` against the projected memory ``keys [B, S, H]``."""
    if kind == "luong":
        return jnp.einsum("bh,bsh->bs", query, keys)
    return jnp.tanh(keys + (query @ params["query"])[:, None]) @ params["v"]
