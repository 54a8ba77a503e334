"""rnnjax: recurrent neural networks as pure JAX functions."""

from rnnjax import cells
from rnnjax.cells import Cell
from rnnjax.unroll import unroll

__all__ = ["Cell", "cells", "unroll"]
