"""The Cell value and the helpers every cell factory shares."""

import functools
from collections.abc import Callable
from numbers import Integral
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_size, check_step_input
from rnnjax._vma import varying_like

Array = jax.Array
Params = dict[str, Any]
Carry = Any
Initializer = Callable[..., Array]

glorot_uniform = jax.nn.initializers.glorot_uniform()
orthogonal = jax.nn.initializers.orthogonal()
zeros = jax.nn.initializers.zeros


class GateActivations(NamedTuple):
    """An optional split of ``FusedStep.gates``: ``gates(params, carry, pre, rec) ==
    combine(params, carry, activate(params, pre, rec))``, where the VJP of ``activate`` is a
    function of its outputs alone (σ' = σ(1 - σ), tanh' = 1 - tanh²). The fused backward pass
    then keeps the activations and never recomputes them.

    Attributes:
      activate: ``(params, pre, rec) -> a``, a tuple of arrays; it may include values that only
        ``pullback`` reads (a GRU's r and its n gate's recurrent term).
      combine: ``(params, carry, a) -> (carry, y)``.
      pullback: ``(params, a, d_a) -> (d_params, d_pre, d_rec)``, the VJP of ``activate`` from
        ``a`` alone; ``d_params`` holds the cotangents of the params ``activate`` reads (a
        dict, maybe empty). ``d_pre`` and ``d_rec`` must agree on ``FusedStep.additive``'s
        summed columns.
    """

    activate: Callable[..., tuple]
    combine: Callable[..., tuple[Any, Array]]
    pullback: Callable[..., tuple[Params, Array, Array]]


def sigmoid_slope(s: Array) -> Array:
    """σ'(z) from s = σ(z)."""
    return s * (1 - s)


def tanh_slope(t: Array) -> Array:
    """tanh'(z) from t = tanh(z)."""
    return 1 - t * t


class FusedStep(NamedTuple):
    """A step written as ``gates(params, carry, pre, recurrent_input(carry) @ params["wh"])``,
    which lets ``unroll`` run the fused backward pass (``rnnjax.fused_backward``). The cell
    also needs ``Cell.project`` (``pre`` below) and its params a ``"wh"`` entry.

    Attributes:
      recurrent_input: ``carry -> h``, the part of the carry that multiplies ``params["wh"]``.
      gates: ``(params, carry, pre, rec) -> (carry, y)``; ``pre`` is ``Cell.project``'s output
        and ``rec`` the recurrent matmul's. Must not read ``params["wx"]`` or ``params["wh"]``.
      additive: ``gates`` depends on ``pre`` and ``rec`` only through ``pre + rec``, so the
        backward pass keeps one ``[T, B, G]`` residual instead of two; an int ``k``: only the
        first ``k`` of the ``G`` gate columns are read that way, and it keeps their sums and the
        rest of ``pre`` and ``rec``, ``2G - k`` columns (a GRU's r and z: ``k = 2H``).
      compute_dtype: the dtype of the recurrent matmul (None: float32), as in ``matmul``.
      activations: optional ``GateActivations`` of ``gates``.
      recurrent_mask: optional array that multiplies ``recurrent_input(carry)`` where the
        matmul reads it (carry dropout). An array, not a closure, so the fused backward pass
        (a ``custom_vjp``) can take it as an argument: a traced value closed over by its
        functions escapes the trace under ``shard_map``. It gets no gradient.
    """

    recurrent_input: Callable[[Any], Array]
    gates: Callable[..., tuple[Any, Array]]
    additive: bool | int = False
    compute_dtype: Any = None
    activations: GateActivations | None = None
    recurrent_mask: Array | None = None

    def read(self, carry) -> Array:
        """What the recurrent matmul multiplies: ``recurrent_input(carry)``, masked if asked."""
        h = self.recurrent_input(carry)
        return h if self.recurrent_mask is None else h * self.recurrent_mask


class Cell(NamedTuple):
    """One step of one recurrence, as a value of pure functions.

    Hyperparameters live in the factory's closure; params are plain dicts of arrays.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_carry: ``(params, batch_shape) -> carry`` (zeros, or the learnt carry).
      apply: ``(params, carry, x[..., D]) -> (carry, y[..., output_size])``, the scan order.
      output_size: size of ``y``.
      input_size: ``params -> D``, used to check inputs before tracing.
      project: optional ``(params, xs[..., D]) -> pre[..., G]``, the part of a step that does not
        depend on the carry (input matmul and bias). ``unroll`` hoists it out of the scan so all
        time steps share one large matmul.
      recur: ``(params, carry, pre) -> (carry, y)``, the rest of the step; present with ``project``.
        Always ``apply(p, c, x) == recur(p, c, project(p, x))``.
      linear: optional ``rnnjax.cells.LinearRecurrence``, for cells whose step is linear in the
        carry (``h_t = a_t ⊙ h_{t-1} + b_t``): ``unroll`` then runs all steps at once with
        ``jax.lax.associative_scan``; ``recur`` is the same step, for generation.
      unroll: the ``lax.scan`` unroll ``rnnjax.unroll`` uses when given none, tuned per cell on
        XLA:CPU (BUILD_NOTES.md): ``True`` unrolls sequences of up to 32 steps fully and steps
        longer ones one at a time, bounding compile time.
      fused: optional ``FusedStep``, the same step split around its recurrent matmul, for the
        fused backward pass; ``recur(p, c, pre)`` equals
        ``fused.gates(p, c, pre, recurrent_input(c) @ p["wh"])``.
      masked_recur: optional ``(params, carry, pre, mask) -> (carry, y)``, ``recur`` with its
        recurrent products reading ``mask ⊙ h`` in place of ``h`` and everything else the
        carry itself (an ``rnn`` layer's ``carry_dropout``). A cell with ``fused`` needs none:
        there ``recurrent_input`` is what the mask multiplies.
    """

    init: Callable[[Array, int], Params]
    initial_carry: Callable[[Params, tuple[int, ...]], Carry]
    apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    output_size: int
    input_size: Callable[[Params], int]
    project: Callable[[Params, Array], Array] | None = None
    recur: Callable[[Params, Carry, Array], tuple[Carry, Array]] | None = None
    linear: Any = None
    unroll: int | bool = 1
    fused: FusedStep | None = None
    masked_recur: Callable[..., tuple[Carry, Array]] | None = None


def matmul(x: Array, w: Array, compute_dtype=None) -> Array:
    """``x @ w``, or with ``compute_dtype`` (e.g. ``"bfloat16"``) mixed precision: both operands
    are cast to it and the product is accumulated and returned in float32, so params, carries and
    everything elementwise stay float32 and only the matmuls run at the lower precision.

    The gradient's two matmuls run at ``compute_dtype`` too, with float32 accumulation; the saved
    residual is the float32 ``x``. Plain autodiff of the cast product stores the cast ``x`` per
    step, which XLA:CPU does by copying the whole ``[T, ...]`` buffer at every step of a scan.
    """
    if compute_dtype is None:
        return x @ w
    x, w = varying_like((x, w), (x, w))  # one type for both, as in ``fused_unroll``
    return _mixed_matmul(x, w, jnp.dtype(compute_dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(x: Array, w: Array, compute_dtype) -> Array:
    return low_precision_dot(x, w, compute_dtype)


def low_precision_dot(a: Array, b: Array, compute_dtype, dims=None) -> Array:
    """``a @ b`` (or ``dot_general`` over ``dims``) of operands cast to ``compute_dtype``,
    accumulated in float32; in the operands' own dtype when ``compute_dtype`` is None."""
    accumulate = None
    if compute_dtype is not None:
        a, b = a.astype(compute_dtype), b.astype(compute_dtype)
        accumulate = jnp.float32
    if dims is None:
        return jnp.matmul(a, b, preferred_element_type=accumulate)
    return jax.lax.dot_general(a, b, dims, preferred_element_type=accumulate)


def _mixed_matmul_fwd(x, w, compute_dtype):
    return low_precision_dot(x, w, compute_dtype), (x, w)


def _mixed_matmul_bwd(compute_dtype, residuals, grad):
    x, w = residuals
    dx = low_precision_dot(grad, w.T, compute_dtype)
    batch_axes = tuple(range(x.ndim - 1))
    dw = low_precision_dot(x, grad, compute_dtype, ((batch_axes, batch_axes), ((), ())))
    return dx.astype(x.dtype), dw.astype(w.dtype)


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def check_compute_dtype(compute_dtype):
    """``compute_dtype`` as a ``jnp.dtype`` of floats (None stays None: plain float32)."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError as e:
        raise ValueError(f"compute_dtype must be a float dtype name, got {compute_dtype!r}") from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a float dtype such as bfloat16, got {dtype}")
    return dtype


def fused_recur(fused: FusedStep):
    """The ``recur`` of a ``FusedStep``: its gates on its recurrent matmul, so the two can never
    disagree."""

    def recur(params, carry, pre):
        h = fused.read(carry)
        return fused.gates(params, carry, pre, matmul(h, params["wh"], fused.compute_dtype))

    return recur


def recur_with_mask(cell: Cell):
    """``cell.masked_recur``, or for a cell with a ``FusedStep`` its split with the mask on
    ``recurrent_input``; None where the cell has no recurrent product to mask."""
    if cell.masked_recur is not None or cell.fused is None:
        return cell.masked_recur

    def masked(params, carry, pre, mask):
        return fused_recur(cell.fused._replace(recurrent_mask=mask))(params, carry, pre)

    return masked


def hoistable(
    init,
    initial_carry,
    project,
    recur,
    output_size,
    input_size=lambda p: p["wx"].shape[0],
    *,
    unroll: int | bool = 1,
    fused: FusedStep | None = None,
    masked_recur=None,
) -> Cell:
    """Builds a Cell whose step is ``recur(project(x))``, so ``unroll`` can hoist ``project``."""

    def checked_init(key, size):
        return init(key, check_size("a cell's input size", size))

    def apply(params, carry, x):
        check_step_input(x, input_size(params))  # at trace time: a cell stepped by hand
        return recur(params, carry, project(params, x))

    return Cell(
        checked_init,
        initial_carry,
        apply,
        output_size,
        input_size,
        project,
        recur,
        unroll=unroll,
        fused=fused,
        masked_recur=masked_recur,
    )


def fused_init(init: Initializer, key: Array, rows: int, units: int, gates: int) -> Array:
    """A fused ``[rows, gates * units]`` matrix whose per-gate blocks are initialised apart.

    Initialising each ``[rows, units]`` block on its own keeps, for example, every recurrent gate
    matrix orthogonal and gives Glorot the fan-out of one gate, as in the papers.
    """
    keys = jax.random.split(key, gates)
    return jnp.concatenate([init(k, (rows, units), jnp.float32) for k in keys], axis=-1)


def zeros_carry(template: Carry, batch_shape: tuple[int, ...]) -> Carry:
    """Zeros shaped ``batch_shape + leaf.shape`` for every leaf of a per-example template."""
    return jax.tree.map(lambda t: jnp.zeros(tuple(batch_shape) + t.shape, t.dtype), template)


def carry_vector(units: int, parts: int = 1) -> jax.ShapeDtypeStruct:
    """One example's float32 carry vector of ``parts`` values per unit (an LRU's real and
    imaginary parts: 2), as a shape: building a cell touches no device, so
    ``distributed.split_cpu`` may still run after a model is built."""
    units = check_size("a cell's units (its carry size)", units)
    return jax.ShapeDtypeStruct((parts * units,), jnp.float32)


def carry_maker(template: Carry, learnable: bool):
    """Returns ``(init_carry_params, initial_carry)`` for a zero or a learnable initial carry.

    ``template`` holds one example's carry as ``jax.ShapeDtypeStruct`` leaves (``carry_vector``).
    With ``learnable`` the carry is stored in ``params["carry0"]`` (zeros at init) and broadcast
    over the batch, so gradients reach it.
    """

    def init_params():
        return {"carry0": zeros_carry(template, ())} if learnable else {}

    def initial_carry(params, batch_shape):
        batch_shape = _batch_shape(batch_shape)
        if not learnable:
            return zeros_carry(template, batch_shape)
        return jax.tree.map(lambda c: jnp.broadcast_to(c, batch_shape + c.shape), params["carry0"])

    return init_params, initial_carry


def _batch_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` as a tuple: ``(B,)``, ``()`` for one example, or an int B, as
    ``jnp.zeros`` takes it."""
    if isinstance(batch_shape, Integral) and not isinstance(batch_shape, bool):
        return (batch_shape,)
    try:
        return tuple(batch_shape)  # its sizes may be symbolic (jax.export)
    except TypeError:
        raise TypeError(
            f"batch_shape must be a tuple of ints such as (B,), or an int, got {batch_shape!r}"
        ) from None


def layer_normalize(x: Array, scale: Array, bias: Array, eps: float = 1e-5) -> Array:
    """Layer normalisation over the last axis (Ba et al. 2016)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def resolve_activation(activation) -> Callable[[Array], Array]:
    """A callable activation from a callable or a name in ``jax.nn`` or ``jax.numpy``."""
    if callable(activation):
        return activation
    fn = getattr(jax.nn, activation, None) or getattr(jnp, activation, None)
    if not callable(fn):
        raise ValueError(f"activation must be a callable or a jax.nn name, got {activation!r}")
    return fn
