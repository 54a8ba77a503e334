"""Cells linear in their carry (minGRU, minLSTM, LRU): stepped for generation, scanned in parallel.

Each step is ``s_t = a_t ⊙ s_{t-1} + b_t`` with ``a_t, b_t`` functions of the input alone, so
``rnnjax.unroll`` can run a whole sequence with ``jax.lax.associative_scan`` (``rnnjax.scan``)
instead of stepping it; ``Cell.apply``/``recur`` step the same maths one input at a time.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_size
from rnnjax.cells._base import (
    Cell,
    carry_maker,
    carry_vector,
    check_compute_dtype,
    fused_init,
    glorot_uniform,
    hoistable,
    matmul,
    zeros,
)


def _identity(s):
    return s


class LinearRecurrence(NamedTuple):
    """A step linear in its state, ``s_t = a_t ⊙ s_{t-1} + b_t``, as ``Cell.linear``.

    ``pre`` is ``Cell.project(params, x)``; every function works on any leading axes.

    Attributes:
      coefficients: ``(params, pre[..., G]) -> (a, b)``, ``b [..., S]`` and ``a`` broadcastable to
        it, real or complex: the step's own maths, used by the sequential form.
      readout: ``(params, s[..., S], pre[..., G]) -> y[..., O]``.
      log_coefficients: optional ``(params, pre) -> (log a, log b)`` for ``a, b > 0``; with it
        the parallel form scans in log space (``rnnjax.scan.log_linear_scan``).
      to_state, from_state: carry ``->`` state ``s`` and back (identity for an array carry).
    """

    coefficients: Callable
    readout: Callable
    log_coefficients: Callable | None = None
    to_state: Callable = _identity
    from_state: Callable = _identity


def linear_cell(
    init, initial_carry, project, linear: LinearRecurrence, output_size, input_size
) -> Cell:
    """A hoistable Cell whose step is ``linear``'s, with ``linear`` attached for ``unroll``.

    ``init``, ``initial_carry``, ``project`` and ``input_size`` are as for ``Cell``; the step is
    ``s = a ⊙ s + b``, ``y = readout(s)`` with ``(a, b) = linear.coefficients(project(x))``.
    """

    def recur(params, carry, pre):
        a, b = linear.coefficients(params, pre)
        s = a * linear.to_state(carry) + b
        return linear.from_state(s), linear.readout(params, s, pre)

    cell = hoistable(init, initial_carry, project, recur, output_size, input_size)
    return cell._replace(linear=linear)


def g(x):
    """minGRU's positive activation: ``x + 0.5`` for ``x ≥ 0``, else ``σ(x)`` (continuous)."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x):
    """``log g(x)``, computed stably."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _readout_state(params, s, pre):
    return s


def _rows(params):
    return params["wx"].shape[0]


def _gated(units, gates, kernel_init, bias_init, learn_initial_carry, compute_dtype):
    """init, initial_carry and project of a minGRU/minLSTM with ``gates`` fused blocks."""
    carry_params, initial_carry = carry_maker(carry_vector(units), learn_initial_carry)
    compute_dtype = check_compute_dtype(compute_dtype)

    def init(key, input_size):
        kx, kb = jax.random.split(key)
        return {
            "wx": fused_init(kernel_init, kx, input_size, units, gates),
            "b": fused_init(bias_init, kb, 1, units, gates)[0],
            **carry_params(),
        }

    def project(params, x):
        return matmul(x, params["wx"], compute_dtype) + params["b"]

    return init, initial_carry, project


def min_gru(
    units: int,
    *,
    kernel_init=glorot_uniform,
    bias_init=zeros,
    learn_initial_carry=False,
    compute_dtype=None,
) -> Cell:
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): gates see only the input::

        z_t = σ(x_t·Wx_z + b_z)        h̃_t = g(x_t·Wx_h + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    with ``g`` positive so the parallel form can scan in log space, as in the paper:
    ``log h_t = logaddexp(log(1 - z_t) + log h_{t-1}, log z_t + log h̃_t)``. The initial carry
    may have any sign: its share ``∏ (1 - z) ⊙ h_0`` is scanned in linear space.

    Params: ``wx [D, 2H]``, ``b [2H]`` (blocks z, h̃). The carry and the output are ``h [..., H]``.
    ``compute_dtype`` (e.g. ``"bfloat16"``) runs the input matmul in it with float32
    accumulation; the gates and the scan stay float32.

    Example:
      >>> cell = rnnjax.cells.min_gru(128)
      >>> params = cell.init(jax.random.key(0), 8)
      >>> carry, ys = rnnjax.unroll(cell, params, jnp.ones((4, 784, 8)))  # parallel over time
    """
    init, initial_carry, project = _gated(
        units, 2, kernel_init, bias_init, learn_initial_carry, compute_dtype
    )

    def coefficients(params, pre):
        k, h = jnp.split(pre, 2, axis=-1)
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(h)

    def log_coefficients(params, pre):
        k, h = jnp.split(pre, 2, axis=-1)
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(h)

    linear = LinearRecurrence(coefficients, _readout_state, log_coefficients)
    return linear_cell(init, initial_carry, project, linear, units, _rows)


def min_lstm(
    units: int,
    *,
    kernel_init=glorot_uniform,
    bias_init=zeros,
    learn_initial_carry=False,
    compute_dtype=None,
) -> Cell:
    """minLSTM (Feng et al. 2024) with the paper's normalised, time-independent gates::

        f_t = σ(x_t·Wx_f + b_f)    i_t = σ(x_t·Wx_i + b_i)    h̃_t = g(x_t·Wx_h + b_h)
        f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    computed as ``f' = σ(-d)``, ``i' = σ(d)`` with ``d = log i - log f`` (log-space form:
    ``log f' = -softplus(d)``, ``log i' = -softplus(-d)``); ``g`` as in ``min_gru``.

    Params: ``wx [D, 3H]``, ``b [3H]`` (blocks f, i, h̃). The carry and the output are ``h``.
    ``compute_dtype`` as in ``min_gru``.
    """
    init, initial_carry, project = _gated(
        units, 3, kernel_init, bias_init, learn_initial_carry, compute_dtype
    )

    def split(pre):
        k_f, k_i, h = jnp.split(pre, 3, axis=-1)
        return jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i), h

    def coefficients(params, pre):
        d, h = split(pre)
        return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * g(h)

    def log_coefficients(params, pre):
        d, h = split(pre)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(h)

    linear = LinearRecurrence(coefficients, _readout_state, log_coefficients)
    return linear_cell(init, initial_carry, project, linear, units, _rows)


def lru(
    units: int,
    *,
    output_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    learn_initial_carry: bool = False,
    compute_dtype=None,
) -> Cell:
    """Linear Recurrent Unit (Orvieto et al. 2023), a diagonal complex linear recurrence::

        λ = exp(-exp(ν) + i·exp(θ))                 # |λ| < 1 for every ν: always stable
        h_t = λ ⊙ h_{t-1} + exp(γ) ⊙ (x_t·B)         # h ∈ ℂ^N, B = B_re + i·B_im
        y_t = Re(h_t·C) + x_t·D                      # C = C_re + i·C_im

    ``ν, θ`` are initialised so ``|λ|`` is uniform on the ring ``[r_min, r_max]`` of the complex
    plane with phase in ``[0, max_phase]``, and ``γ = log √(1 - |λ|²)`` normalises the input.
    The paper's ``D`` is diagonal (its input and output sizes agree); here it is a dense skip
    matrix, so any sizes work.

    Args:
      units: state size N.
      output_size: O, ``units`` by default.
      r_min, r_max: ``0 ≤ r_min < r_max ≤ 1``, the initial range of ``|λ|``.
      max_phase: the initial range of ``arg λ``, ``2π`` by default.
      learn_initial_carry: learn h_0 instead of using zeros.
      compute_dtype: dtype of the matmuls (``x·[B_re, B_im, D]``, ``h·C``), e.g. ``"bfloat16"``,
        with float32 accumulation; ``λ``, the state and the scan stay float32 (complex64).

    Params: ``nu_log, theta_log, gamma_log [N]``, ``B_re, B_im [D, N]``, ``C_re, C_im [N, O]``,
    ``D [D, O]``. The carry is a real ``[..., 2N]`` array ``[Re h, Im h]`` (a plain float array,
    so checkpoints, masks and optimisers need nothing complex); the output is ``y [..., O]``.

    Example:
      >>> cell = rnnjax.cells.lru(256, output_size=128, r_min=0.9, r_max=0.999)
    """
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if max_phase <= 0:
        raise ValueError(f"max_phase must be positive, got {max_phase}")
    out = units if output_size is None else check_size("output_size", output_size)
    compute_dtype = check_compute_dtype(compute_dtype)
    carry_params, initial_carry = carry_maker(carry_vector(units, parts=2), learn_initial_carry)

    def init(key, input_size):
        return _lru_init(key, input_size, units, out, r_min, r_max, max_phase) | carry_params()

    def project(params, x):
        w = jnp.concatenate([params["B_re"], params["B_im"], params["D"]], axis=-1)
        return matmul(x, w, compute_dtype)

    def coefficients(params, pre):
        lam = jnp.exp(_complex(-jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])))
        bx = _complex(pre[..., :units], pre[..., units : 2 * units])
        return lam, jnp.exp(params["gamma_log"]) * bx

    def readout(params, s, pre):
        # Re(s·C) as one matmul, [Re s, Im s]·[C_re; -C_im]: the two products of Re s and Im s
        # let XLA:CPU fuse the scan's last combine into two transposed copies for their
        # gradients, 1.2x slower over a whole parallel training step (BUILD_NOTES.md)
        c = jnp.concatenate([params["C_re"], -params["C_im"]], axis=0)
        return matmul(from_state(s), c, compute_dtype) + pre[..., 2 * units :]

    def to_state(carry):
        return _complex(carry[..., :units], carry[..., units:])

    def from_state(s):
        return jnp.concatenate([s.real, s.imag], axis=-1)

    linear = LinearRecurrence(coefficients, readout, None, to_state, from_state)
    return linear_cell(init, initial_carry, project, linear, out, lambda p: p["B_re"].shape[0])


def _complex(re, im):
    """``re + i·im``; bfloat16 parts, which have no complex type, are widened to float32."""
    dtype = jnp.promote_types(jnp.result_type(re, im), jnp.float32)
    return jax.lax.complex(re.astype(dtype), im.astype(dtype))


def _lru_init(key, input_size, units, out, r_min, r_max, max_phase):
    """The paper's initialisation: ``|λ|`` uniform on the ring, ``arg λ`` on ``[0, max_phase]``."""
    k_nu, k_theta, kb_re, kb_im, kc_re, kc_im, kd = jax.random.split(key, 7)
    # u stays off 0 and 1 so that ν, θ and γ are finite at the ends of the ring
    u1, u2 = (jax.random.uniform(k, (units,), jnp.float32, 1e-6, 1 - 1e-6) for k in (k_nu, k_theta))
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    b_std, c_std = 1 / math.sqrt(2 * input_size), 1 / math.sqrt(units)
    return {
        "nu_log": nu_log,
        "theta_log": jnp.log(max_phase * u2),
        "gamma_log": 0.5 * jnp.log1p(-jnp.exp(-2 * jnp.exp(nu_log))),  # log √(1 - |λ|²)
        "B_re": b_std * jax.random.normal(kb_re, (input_size, units), jnp.float32),
        "B_im": b_std * jax.random.normal(kb_im, (input_size, units), jnp.float32),
        "C_re": c_std * jax.random.normal(kc_re, (units, out), jnp.float32),
        "C_im": c_std * jax.random.normal(kc_im, (units, out), jnp.float32),
        "D": jax.random.normal(kd, (input_size, out), jnp.float32) / math.sqrt(input_size),
    }
