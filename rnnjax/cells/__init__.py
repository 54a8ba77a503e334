"""Recurrent cells: each a value of pure functions (init, initial_carry, apply)."""

from rnnjax.cells._base import Cell, FusedStep, GateActivations, sigmoid_slope, tanh_slope
from rnnjax.cells._gru import gru
from rnnjax.cells._linear import LinearRecurrence, linear_cell, lru, min_gru, min_lstm
from rnnjax.cells._lstm import LSTMCarry, lstm
from rnnjax.cells._simple import indrnn, simple
from rnnjax.cells._wrappers import output_projection, stack

__all__ = [
    "Cell",
    "FusedStep",
    "GateActivations",
    "LSTMCarry",
    "LinearRecurrence",
    "gru",
    "indrnn",
    "linear_cell",
    "lru",
    "lstm",
    "min_gru",
    "min_lstm",
    "output_projection",
    "sigmoid_slope",
    "simple",
    "stack",
    "tanh_slope",
]
