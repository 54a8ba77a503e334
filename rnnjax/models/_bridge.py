"""Carries handed from one recurrence to another: an encoder's final carry, or a vector, made
into a decoder's initial carry (unchanged when the shapes match, else through a dense layer)."""

import math

import jax
import jax.numpy as jnp

from rnnjax.cells import Cell
from rnnjax.layers import dense
from rnnjax.unroll import unroll


def bridge_init(key, in_size: int, carry) -> dict:
    """Params of a dense bridge from ``[B, in_size]`` to every leaf of ``carry`` (``[B, ...]``)."""
    leaves = jax.tree.leaves(carry)
    keys = jax.random.split(key, len(leaves))
    return {
        str(i): dense(math.prod(leaf.shape[1:])).init(k, in_size)[0]
        for i, (leaf, k) in enumerate(zip(leaves, keys, strict=True))
    }


def bridge_apply(params, vec: jax.Array, carry):
    """``tanh(vec·W + b)`` reshaped to every leaf of ``carry`` (shapes ``[B, ...]``)."""
    leaves, treedef = jax.tree.flatten(carry)
    out = []
    for i, leaf in enumerate(leaves):
        y = jnp.tanh(vec @ params[str(i)]["w"] + params[str(i)]["b"])
        out.append(y.reshape(leaf.shape).astype(leaf.dtype))
    return jax.tree.unflatten(treedef, out)


def is_identity(bridge: str, enc, dec) -> bool:
    """Whether the encoder's carry passes on unchanged; raises where no bridge can be made."""
    if not jax.tree.leaves(enc):
        raise ValueError(
            "the encoder's final carry is empty (only stateless layers?), so the decoder's "
            "initial carry cannot be derived from it; use an encoder with a recurrent layer"
        )
    if bridge == "dense":
        return False
    same = _signature(enc) == _signature(dec)
    if bridge == "identity" and not same:
        raise ValueError(
            "bridge='identity' needs the encoder's final carry to match the decoder's initial "
            f"carry, got per-example shapes {_shapes(enc)} and {_shapes(dec)}; use bridge='dense'"
        )
    return same


def pass_on(enc, dec):
    """The encoder's final carry ``enc`` in the structure and dtypes of the decoder's ``dec``."""
    leaves = zip(jax.tree.leaves(enc), jax.tree.leaves(dec), strict=True)
    return jax.tree.unflatten(jax.tree.structure(dec), [a.astype(d.dtype) for a, d in leaves])


def _squeeze(carry):
    """Drops stateless layers' ``None`` carries from plain tuples and unwraps 1-tuples."""
    if type(carry) is tuple:
        items = tuple(_squeeze(c) for c in carry if c is not None)
        return items[0] if len(items) == 1 else items
    return carry


def _signature(carry):
    """Structure and per-example shapes: dtypes differ only by a cast (float64 under x64)."""
    leaves = jax.tree.leaves(carry)
    return jax.tree.structure(_squeeze(carry)), [a.shape[1:] for a in leaves]


def _shapes(carry):
    return jax.tree.map(lambda a: tuple(a.shape[1:]), _squeeze(carry))


def flat_size(carry) -> int:
    return sum(math.prod(a.shape[1:]) for a in jax.tree.leaves(carry))


def flatten(carry) -> jax.Array:
    """Every leaf of ``carry`` (``[B, ...]``) flattened and concatenated: ``[B, flat_size]``
    (sizes spelt out, since ``reshape(B, -1)`` cannot infer them when B = 0)."""
    leaves = jax.tree.leaves(carry)
    return jnp.concatenate([a.reshape(a.shape[0], math.prod(a.shape[1:])) for a in leaves], -1)


def carry_shape(cell: Cell, params, batch: int, inputs_dtype=jnp.float32):
    """Shapes and dtypes of the carry ``unroll`` starts ``cell`` from on inputs of
    ``inputs_dtype``: float64 inputs (x64) make a float64 carry, which a bridge must match."""
    xs = jax.ShapeDtypeStruct((batch, 1, cell.input_size(params)), inputs_dtype)
    return jax.eval_shape(lambda p, xs: unroll(cell, p, xs)[0], params, xs)
