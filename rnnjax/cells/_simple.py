"""Elman (simple) RNN and IndRNN cells."""

import jax
import jax.numpy as jnp

from rnnjax._checks import check_bound
from rnnjax.cells._base import (
    Cell,
    carry_maker,
    carry_vector,
    check_compute_dtype,
    glorot_uniform,
    hoistable,
    matmul,
    orthogonal,
    resolve_activation,
    zeros,
)


def simple(
    units: int,
    *,
    activation="tanh",
    kernel_init=glorot_uniform,
    recurrent_init=orthogonal,
    bias_init=zeros,
    learn_initial_carry: bool = False,
    compute_dtype=None,
) -> Cell:
    """Elman RNN with TF ``BasicRNNCell`` semantics.

    ``h_t = φ(x_t·Wx + h_{t-1}·Wh + b)``; the carry and the output are both ``h_t [..., H]``.

    Args:
      units: hidden size H.
      activation: φ, a name from ``jax.nn``/``jnp`` ("tanh", "relu", ...) or a callable.
      kernel_init, recurrent_init, bias_init: ``jax.nn.initializers`` for Wx ``[D, H]``,
        Wh ``[H, H]`` and b ``[H]``.
      learn_initial_carry: learn h_0 (``params["carry0"]``) instead of using zeros.
      compute_dtype: dtype of the matmuls (e.g. ``"bfloat16"``) with float32 accumulation;
        params and carry stay float32. None: float32 throughout.

    Example:
      >>> cell = rnnjax.cells.simple(150)
      >>> params = cell.init(jax.random.key(0), 28)
    """
    phi = resolve_activation(activation)
    compute_dtype = check_compute_dtype(compute_dtype)
    carry_params, initial_carry = carry_maker(carry_vector(units), learn_initial_carry)

    def init(key, input_size):
        kx, kh, kb = jax.random.split(key, 3)
        return {
            "wx": kernel_init(kx, (input_size, units), jnp.float32),
            "wh": recurrent_init(kh, (units, units), jnp.float32),
            "b": bias_init(kb, (units,), jnp.float32),
            **carry_params(),
        }

    def project(params, x):
        return matmul(x, params["wx"], compute_dtype) + params["b"]

    def recur(params, h, pre):
        h = phi(pre + matmul(h, params["wh"], compute_dtype))
        return h, h

    # fully unrolled short sequences train 1.2-1.8x faster on XLA:CPU (BUILD_NOTES.md)
    return hoistable(
        init, initial_carry, project, recur, units, unroll=True, masked_recur=read_masked(recur)
    )


unit_uniform = jax.nn.initializers.uniform(1.0)


def indrnn(
    units: int,
    *,
    activation="relu",
    recurrent_max: float | None = None,
    kernel_init=glorot_uniform,
    recurrent_init=unit_uniform,
    bias_init=zeros,
    learn_initial_carry: bool = False,
    compute_dtype=None,
) -> Cell:
    """Independently recurrent network (Li et al. 2018).

    ``h_t = φ(x_t·Wx + u ⊙ h_{t-1} + b)`` with an elementwise recurrent weight ``u [H]``: each unit
    sees only its own past, which keeps gradients tame on long sequences and makes a step cheap.

    Args:
      units: hidden size H.
      activation: φ, ReLU by default as in the paper.
      recurrent_max: if set, ``u`` is clipped to ``[-recurrent_max, recurrent_max]`` in the step
        (the paper's constraint, e.g. ``2 ** (1 / T)``) so the recurrence cannot explode.
      kernel_init, recurrent_init, bias_init: initialisers for Wx ``[D, H]``, u ``[H]``, b ``[H]``;
        u is uniform in [0, 1) by default.
      learn_initial_carry: learn h_0 instead of using zeros.
      compute_dtype: dtype of the matmuls (e.g. ``"bfloat16"``) with float32 accumulation;
        params and carry stay float32. None: float32 throughout.
    """
    phi = resolve_activation(activation)
    compute_dtype = check_compute_dtype(compute_dtype)
    check_bound("recurrent_max", recurrent_max)
    carry_params, initial_carry = carry_maker(carry_vector(units), learn_initial_carry)

    def init(key, input_size):
        kx, ku, kb = jax.random.split(key, 3)
        return {
            "wx": kernel_init(kx, (input_size, units), jnp.float32),
            "u": recurrent_init(ku, (units,), jnp.float32),
            "b": bias_init(kb, (units,), jnp.float32),
            **carry_params(),
        }

    def project(params, x):
        return matmul(x, params["wx"], compute_dtype) + params["b"]

    def recur(params, h, pre):
        u = params["u"]
        if recurrent_max is not None:
            u = jnp.clip(u, -recurrent_max, recurrent_max)
        h = phi(pre + u * h)
        return h, h

    return hoistable(init, initial_carry, project, recur, units, masked_recur=read_masked(recur))


def read_masked(recur):
    """``masked_recur`` of a step that reads its carry only through its recurrent weights."""
    return lambda params, h, pre, mask: recur(params, h * mask, pre)
