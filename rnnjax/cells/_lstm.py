"""Long short-term memory cell with forget bias, peepholes, projection, clipping and layer norm."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_bound, check_size
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
    layer_normalize,
    matmul,
    orthogonal,
    sigmoid_slope,
    tanh_slope,
    zeros,
)


class LSTMCarry(NamedTuple):
    """LSTM recurrent state: cell ``c [..., H]`` and hidden output ``h [..., P]`` (P = H unless
    projected)."""

    c: jax.Array
    h: jax.Array


def lstm(
    units: int,
    *,
    forget_bias: float = 1.0,
    peepholes: bool = False,
    proj_size: int | None = None,
    cell_clip: float | None = None,
    layer_norm: bool = False,
    kernel_init=glorot_uniform,
    recurrent_init=orthogonal,
    bias_init=zeros,
    learn_initial_carry: bool = False,
    compute_dtype=None,
) -> Cell:
    """LSTM (Hochreiter & Schmidhuber 1997; Gers et al. 2000), gates fused in the order i, f, g, o.

    ``i, f, g, o = x_t·Wx + h_{t-1}·Wh + b`` (split in four, each ``[..., H]``), then::

        i = σ(i + p_i ⊙ c_{t-1})     f = σ(f + p_f ⊙ c_{t-1})     g = tanh(g)
        c_t = clip(f ⊙ c_{t-1} + i ⊙ g)
        o = σ(o + p_o ⊙ c_t)
        h_t = (o ⊙ tanh(c_t))·W_proj

    Peephole terms ``p_*`` appear with ``peepholes``, ``W_proj [H, P]`` with ``proj_size=P`` (as
    PyTorch ``proj_size`` and TF ``num_proj``), the clip with ``cell_clip``. With ``layer_norm``
    the input and recurrent parts of the gates and ``c_t`` inside the tanh are each normalised
    (Ba et al. 2016). The output is ``h_t``.

    Args:
      units: cell size H.
      forget_bias: initial value of the forget-gate bias (Jozefowicz et al. 2015). It is an
        initial value of ``params["b"]``, not a constant added at each step, so weights convert
        exactly to and from PyTorch and Flax.
      peepholes, proj_size, cell_clip, layer_norm: the options above.
      kernel_init, recurrent_init, bias_init: initialisers for Wx ``[D, 4H]`` and W_proj,
        Wh ``[P, 4H]``, b ``[4H]``; each gate's block is initialised on its own.
      learn_initial_carry: learn ``LSTMCarry(c_0, h_0)`` instead of zeros.
      compute_dtype: dtype of the matmuls (e.g. ``"bfloat16"``) with float32 accumulation;
        params and carry stay float32. None: float32 throughout.

    Example:
      >>> cell = rnnjax.cells.lstm(128, peepholes=True, proj_size=64)
    """
    check_bound("cell_clip", cell_clip)
    if proj_size not in (None, 0):  # 0: none, as PyTorch's default
        check_size("proj_size", proj_size)
    out = proj_size or units
    compute_dtype = check_compute_dtype(compute_dtype)
    carry_params, initial_carry = carry_maker(
        LSTMCarry(carry_vector(units), carry_vector(out)), learn_initial_carry
    )

    def init(key, input_size):
        kx, kh, kb, kp, kproj = jax.random.split(key, 5)
        bias = fused_init(bias_init, kb, 1, units, 4)[0]
        params = {
            "wx": fused_init(kernel_init, kx, input_size, units, 4),
            "wh": fused_init(recurrent_init, kh, out, units, 4),
            "b": bias.at[units : 2 * units].add(forget_bias),
        }
        if peepholes:
            params["peep"] = jax.random.uniform(kp, (3, units), jnp.float32, -0.1, 0.1)
        if proj_size:
            params["w_proj"] = kernel_init(kproj, (units, proj_size), jnp.float32)
        if layer_norm:
            for name, size in (("ln_x", 4 * units), ("ln_h", 4 * units), ("ln_c", units)):
                params[name] = {
                    "scale": jnp.ones((size,), jnp.float32),
                    "bias": jnp.zeros((size,), jnp.float32),
                }
        return params | carry_params()

    def norm(params, name, x):
        return layer_normalize(x, **params[name]) if layer_norm else x

    def project(params, x):
        return norm(params, "ln_x", matmul(x, params["wx"], compute_dtype)) + params["b"]

    def clipped(c):
        return c if cell_clip is None else jnp.clip(c, -cell_clip, cell_clip)

    def emit(params, c, output_gate):
        h = output_gate * jnp.tanh(norm(params, "ln_c", c))
        if proj_size:
            h = matmul(h, params["w_proj"], compute_dtype)
        return LSTMCarry(c, h), h

    def gates(params, carry, pre, rec):
        i, f, g, o = jnp.split(pre + norm(params, "ln_h", rec), 4, axis=-1)
        if peepholes:
            p_i, p_f, p_o = params["peep"]
            i, f = i + p_i * carry.c, f + p_f * carry.c
        c = clipped(jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g))
        if peepholes:
            o = o + p_o * c
        return emit(params, c, jax.nn.sigmoid(o))

    def activate(params, pre, rec):
        i, f, g, o = jnp.split(pre + rec, 4, axis=-1)
        return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)

    def combine(params, carry, a):
        s_i, s_f, t_g, s_o = a
        return emit(params, clipped(s_f * carry.c + s_i * t_g), s_o)

    def pullback(params, a, d_a):
        s_i, s_f, t_g, s_o = a
        slopes = sigmoid_slope(s_i), sigmoid_slope(s_f), tanh_slope(t_g), sigmoid_slope(s_o)
        d_z = jnp.concatenate([d * s for d, s in zip(d_a, slopes, strict=True)], axis=-1)
        return {}, d_z, d_z

    plain = not (peepholes or layer_norm)  # gates read the carry only after the activations
    activations = GateActivations(activate, combine, pullback) if plain else None
    fused = FusedStep(lambda carry: carry.h, gates, not layer_norm, compute_dtype, activations)
    return hoistable(init, initial_carry, project, fused_recur(fused), out, fused=fused)
