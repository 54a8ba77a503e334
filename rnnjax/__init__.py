"""rnnjax: recurrent neural networks as pure JAX functions."""

import importlib

from rnnjax import cells, convert, decoding, nnx, sampling
from rnnjax.cells import Cell
from rnnjax.generation import generate
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
from rnnjax.models import EncoderDecoder, Model, encoder_decoder, seq2seq, seq2vec, vec2seq
from rnnjax.unroll import unroll

__all__ = [
    "Cell",
    "EncoderDecoder",
    "Layer",
    "Model",
    "bidirectional",
    "cells",
    "convert",
    "decoding",
    "dense",
    "dropout",
    "embed",
    "encoder_decoder",
    "generate",
    "nnx",
    "residual",
    "rnn",
    "sampling",
    "seq2seq",
    "seq2vec",
    "serial",
    "unroll",
    "vec2seq",
]


_LAZY = ("data", "train")  # they import tensorflow_datasets and orbax: loaded on first use


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"rnnjax.{name}")
    raise AttributeError(f"module 'rnnjax' has no attribute {name!r}")
