"""Cell combinators: stacking into a deep cell, and a per-step output projection."""

import jax
import jax.numpy as jnp

from rnnjax._checks import check_kind, check_size
from rnnjax.cells._base import Cell, glorot_uniform, recur_with_mask, resolve_activation, zeros


def stack(*cells: Cell) -> Cell:
    """A deep cell (TF ``MultiRNNCell``, Haiku ``DeepRNN``): each cell feeds the next, per step.

    The carry is a tuple with one carry per cell and params are ``{"0": ..., "1": ...}``. The
    first cell's input projection is hoisted by ``unroll``; for a deep RNN over whole sequences,
    ``rnnjax.serial(rnnjax.rnn(c1), rnnjax.rnn(c2))`` hoists every layer's projection instead.

    Example:
      >>> deep = rnnjax.cells.stack(rnnjax.cells.lstm(64), rnnjax.cells.lstm(64))
    """
    if not cells:
        raise ValueError("stack needs at least one cell, got none")
    for i, cell in enumerate(cells):
        check_kind(f"stack's cell {i}", cell, Cell)
    first, rest = cells[0], cells[1:]

    def init(key, input_size):
        params, size = {}, input_size
        for i, (cell, k) in enumerate(zip(cells, jax.random.split(key, len(cells)), strict=True)):
            params[str(i)] = cell.init(k, size)
            size = cell.output_size
        return params

    def initial_carry(params, batch_shape):
        return tuple(c.initial_carry(params[str(i)], batch_shape) for i, c in enumerate(cells))

    def run_rest(params, carries, y):
        new = []
        for i, (cell, carry) in enumerate(zip(rest, carries, strict=True), start=1):
            carry, y = cell.apply(params[str(i)], carry, y)
            new.append(carry)
        return tuple(new), y

    def apply(params, carry, x):
        first_carry, y = first.apply(params["0"], carry[0], x)
        rest_carry, y = run_rest(params, carry[1:], y)
        return (first_carry, *rest_carry), y

    project = recur = None
    if first.project is not None:

        def project(params, x):
            return first.project(params["0"], x)

        def recur(params, carry, pre):
            first_carry, y = first.recur(params["0"], carry[0], pre)
            rest_carry, y = run_rest(params, carry[1:], y)
            return (first_carry, *rest_carry), y

    def input_size(params):
        return first.input_size(params["0"])

    unroll = True if all(c.unroll is True for c in cells) else 1
    size = cells[-1].output_size
    return Cell(init, initial_carry, apply, size, input_size, project, recur, unroll=unroll)


def output_projection(
    cell: Cell, size: int, *, activation=None, kernel_init=glorot_uniform, bias_init=zeros
) -> Cell:
    """Applies a dense layer to the cell's output at every step (TF ``OutputProjectionWrapper``).

    Useful where the projected output is fed back as the next input (generation). Over whole
    sequences, ``rnnjax.dense`` after ``rnnjax.rnn`` computes the same thing as one matmul.
    Params are ``{"cell": ..., "w": [O, size], "b": [size]}``.
    """
    check_kind("output_projection's cell", cell, Cell)
    size = check_size("output_projection's size", size)
    phi = None if activation is None else resolve_activation(activation)

    def init(key, input_size):
        kc, kw, kb = jax.random.split(key, 3)
        return {
            "cell": cell.init(kc, input_size),
            "w": kernel_init(kw, (cell.output_size, size), jnp.float32),
            "b": bias_init(kb, (size,), jnp.float32),
        }

    def initial_carry(params, batch_shape):
        return cell.initial_carry(params["cell"], batch_shape)

    def head(params, y):
        y = y @ params["w"] + params["b"]
        return phi(y) if phi else y

    def apply(params, carry, x):
        carry, y = cell.apply(params["cell"], carry, x)
        return carry, head(params, y)

    project = recur = masked_recur = None
    if cell.project is not None:

        def project(params, x):
            return cell.project(params["cell"], x)

        def recur(params, carry, pre):
            carry, y = cell.recur(params["cell"], carry, pre)
            return carry, head(params, y)

    if (inner_masked := recur_with_mask(cell)) is not None:

        def masked_recur(params, carry, pre, mask):
            carry, y = inner_masked(params["cell"], carry, pre, mask)
            return carry, head(params, y)

    def input_size(params):
        return cell.input_size(params["cell"])

    return Cell(
        init,
        initial_carry,
        apply,
        size,
        input_size,
        project,
        recur,
        unroll=cell.unroll,
        masked_recur=masked_recur,
    )
