"""Gated recurrent unit in both common formulations."""

import jax
import jax.numpy as jnp

from rnnjax.cells._base import (
    Cell,
    FusedStep,
    GateActivations,
    carry_maker,
    carry_vector,
    check_compute_dtype,
    fused_init,
    fused_recur,
    glorot_uniform,
    hoistable,
    matmul,
    orthogonal,
    sigmoid_slope,
    tanh_slope,
    zeros,
)


def gru(
    units: int,
    *,
    reset_after: bool = True,
    kernel_init=glorot_uniform,
    recurrent_init=orthogonal,
    bias_init=zeros,
    learn_initial_carry: bool = False,
    compute_dtype=None,
) -> Cell:
    """GRU (Cho et al. 2014), gates fused in the order r, z, n.

    ``reset_after=True`` (PyTorch, Flax, cuDNN, Keras default) applies the reset gate after the
    recurrent matmul; ``reset_after=False`` (the original paper, Keras ``reset_after=False``)
    applies it to the carry before::

        r = σ(x·Wx_r + h·Wh_r + b_r)        z = σ(x·Wx_z + h·Wh_z + b_z)
        n = tanh(x·Wx_n + b_n + r ⊙ (h·Wh_n + bh_n))     # reset_after=True
        n = tanh(x·Wx_n + b_n + (r ⊙ h)·Wh_n)            # reset_after=False
        h_t = (1 - z) ⊙ n + z ⊙ h

    Params: ``wx [D, 3H]``, ``wh [H, 3H]``, ``b [3H]`` and, with ``reset_after``, ``bh_n [H]``.
    The carry and the output are ``h_t [..., H]``. ``compute_dtype`` (e.g. ``"bfloat16"``) runs
    the matmuls at that precision with float32 accumulation; params and carry stay float32.

    Example:
      >>> cell = rnnjax.cells.gru(128, reset_after=False)
    """
    compute_dtype = check_compute_dtype(compute_dtype)
    carry_params, initial_carry = carry_maker(carry_vector(units), learn_initial_carry)

    def init(key, input_size):
        kx, kh, kb, kbh = jax.random.split(key, 4)
        params = {
            "wx": fused_init(kernel_init, kx, input_size, units, 3),
            "wh": fused_init(recurrent_init, kh, units, units, 3),
            "b": fused_init(bias_init, kb, 1, units, 3)[0],
        }
        if reset_after:
            params["bh_n"] = bias_init(kbh, (units,), jnp.float32)
        return params | carry_params()

    def project(params, x):
        return matmul(x, params["wx"], compute_dtype) + params["b"]

    def recur_reset_before(params, h, pre, mask=None):
        x_r, x_z, x_n = jnp.split(pre, 3, axis=-1)
        w_rz, w_n = params["wh"][:, : 2 * units], params["wh"][:, 2 * units :]
        read = h if mask is None else h * mask  # what the recurrent products see
        h_r, h_z = jnp.split(matmul(read, w_rz, compute_dtype), 2, axis=-1)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + matmul(r * read, w_n, compute_dtype))
        h = (1.0 - z) * n + z * h
        return h, h

    def activate(params, pre, rec):  # r and z kept as one array: cheaper to store (measured)
        rz = jax.nn.sigmoid(pre[..., : 2 * units] + rec[..., : 2 * units])
        h_n = rec[..., 2 * units :] + params["bh_n"]
        return rz, jnp.tanh(pre[..., 2 * units :] + rz[..., :units] * h_n), h_n

    def combine(params, h, a):
        rz, n, _ = a
        z = rz[..., units:]
        h = (1.0 - z) * n + z * h
        return h, h

    def pullback(params, a, d_a):
        rz, n, h_n = a
        d_rz, d_n, d_h_n = d_a
        d_n = d_n * tanh_slope(n)  # the n gate's input, x_n + r ⊙ h_n
        d_r = d_rz[..., :units] + d_n * h_n
        d_rz = jnp.concatenate([d_r, d_rz[..., units:]], -1) * sigmoid_slope(rz)
        d_h_n = d_h_n + d_n * rz[..., :units]
        d_bias = {"bh_n": jnp.sum(d_h_n, axis=tuple(range(d_h_n.ndim - 1)))}
        return d_bias, jnp.concatenate([d_rz, d_n], -1), jnp.concatenate([d_rz, d_h_n], -1)

    # reset before the matmul puts r ⊙ h inside it, so only reset_after has the fused split
    if not reset_after:
        return hoistable(
            init, initial_carry, project, recur_reset_before, units, masked_recur=recur_reset_before
        )

    def gates_after_reset(params, h, pre, rec):
        return combine(params, h, activate(params, pre, rec))

    activations = GateActivations(activate, combine, pullback)
    fused = FusedStep(lambda h: h, gates_after_reset, 2 * units, compute_dtype, activations)
    return hoistable(init, initial_carry, project, fused_recur(fused), units, fused=fused)
