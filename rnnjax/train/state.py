"""The train state: one clock (``step``) for params, optimizer state, randomness and data."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """Everything a resume needs, as one pytree that orbax saves as it is.

    Attributes:
      step: int32 scalar, the number of optimizer updates done.
      params: the model's params.
      opt_state: the optax state.
      rng: the root PRNG key as raw ``uint32`` data (``jax.random.key_data``), so it saves as a
        plain array; step ``s`` uses ``fold_in(root, s)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def init_state(model, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Initialises params from ``fold_in(key, 0)`` and keeps ``key`` as the root of step keys.

    Example:
      >>> state = rnnjax.train.init_state(model, optax.adam(1e-3), jax.random.key(0))
    """
    params = jax.jit(model.init)(jax.random.fold_in(key, 0))  # one compile, not one per op
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jnp.copy(jax.random.key_data(key)),  # a raw key's data is the key: not donated
    )


def step_key(state: TrainState) -> jax.Array:
    """The PRNG key of the update at ``state.step`` (dropout and other noise)."""
    root = jax.random.wrap_key_data(state.rng)
    return jax.random.fold_in(jax.random.fold_in(root, 1), state.step)
