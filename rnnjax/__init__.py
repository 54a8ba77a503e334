"""rnnjax: recurrent neural networks as pure JAX functions."""

from rnnjax import cells, convert, nnx
from rnnjax.cells import Cell
from rnnjax.layers import (
    Layer,
    bidirectional,
    dense,
    dropout,
    embed,
    residual,
    rnn,
    serial,
)
from rnnjax.models import Model, seq2seq, seq2vec
from rnnjax.unroll import unroll

__all__ = [
    "Cell",
    "Layer",
    "Model",
    "bidirectional",
    "cells",
    "convert",
    "dense",
    "dropout",
    "embed",
    "nnx",
    "residual",
    "rnn",
    "seq2seq",
    "seq2vec",
    "serial",
    "unroll",
]
