"""Flax NNX modules that wrap rnnjax's pure functions, to put rnnjax networks in ``nnx.Module``s.

Each module holds the functional params pytree with every leaf an ``nnx.Param`` (same keys, same
nesting), and its ``__call__`` hands the plain dict to the wrapped pure function: there is no maths
here. ``module.params`` returns the plain dict for ``rnnjax.unroll`` or ``layer.apply``;
``module.set_params(params)`` loads one back. ``nnx.Optimizer(module, tx, wrt=nnx.Param)`` trains
them like any Flax module.

Dropout follows ``nnx.Dropout``: a ``deterministic`` attribute that ``model.train()`` and
``model.eval()`` toggle (or ``nnx.view(model, deterministic=...)``), keys drawn from the
``"dropout"`` stream of the ``nnx.Rngs`` given at construction (falling back to ``"default"``),
and ``deterministic=`` / ``rngs=`` overrides at call time. A key is passed to the wrapped layer,
which turns its dropout on, exactly when the module is not deterministic.
"""

from typing import Any

import jax
from flax import nnx

from rnnjax._checks import check_params_like
from rnnjax.cells import Cell
from rnnjax.layers import Layer as _Layer
from rnnjax.models import EncoderDecoder
from rnnjax.models import Model as _Model
from rnnjax.unroll import unroll


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class _Params(nnx.Module):
    """Holds a functional params pytree as ``nnx.Param`` leaves in ``self.weights``."""

    def __init__(self, params):
        self.weights = nnx.data(jax.tree.map(nnx.Param, params))

    @property
    def params(self):
        """The plain params pytree (arrays), structured as the functional API's params."""
        return jax.tree.map(lambda v: v.get_value(), self.weights, is_leaf=_is_variable)

    def set_params(self, params) -> None:
        """Loads a functional params pytree of the same structure and shapes, in place."""
        check_params_like(params, self.params, "this module")
        jax.tree.map(
            lambda v, value: v.set_value(value), self.weights, params, is_leaf=_is_variable
        )


class _Stochastic(_Params):
    """Adds ``nnx.Dropout``'s train/eval convention: ``deterministic`` and a dropout stream."""

    def __init__(self, params, rngs: nnx.Rngs, deterministic: bool):
        super().__init__(params)
        self.deterministic = deterministic
        try:
            self.rngs = rngs["dropout"].fork()
        except KeyError:  # no "dropout" nor "default" stream: fine until used in train mode
            self.rngs = nnx.data(None)

    def _dropout_key(self, deterministic: bool | None, rngs) -> jax.Array | None:
        """The key for the wrapped apply: None when deterministic, else a fresh stream key."""
        if self.deterministic if deterministic is None else deterministic:
            return None
        source = self.rngs if rngs is None else rngs
        if isinstance(source, nnx.Rngs):
            return source["dropout"]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        if rngs is not None:
            raise TypeError(
                "rngs must be an nnx.Rngs, an nnx.RngStream or a key (jax.random.key), got "
                f"{type(rngs).__name__}"
            )
        raise ValueError(
            f"{type(self).__name__} is in train mode (deterministic=False) but has no dropout "
            "rngs: build it with nnx.Rngs(dropout=...), pass rngs= when calling, or call .eval()"
        )

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic


class RNN(_Params):
    """A cell unrolled over time by ``rnnjax.unroll``, as an NNX module.

    Args:
      cell: the recurrence, e.g. ``rnnjax.cells.lstm(64)``.
      in_features: input feature size D.
      rngs: ``nnx.Rngs``; its ``"params"`` stream (or ``"default"``) initialises the cell.
      reverse: run from each sequence's last valid step to the first.
      **unroll_options: ``unroll``, ``remat``, ``hoist``, ``time_major`` for ``rnnjax.unroll``.

    ``__call__(xs[B, T, D], carry=None, *, lengths=None, resets=None, return_carry=False)``
    returns ``ys [B, T, cell.output_size]``, or ``(final_carry, ys)`` with ``return_carry``.

    Example:
      >>> rnn = rnnjax.nnx.RNN(rnnjax.cells.gru(32), 8, rngs=nnx.Rngs(0))
      >>> ys = rnn(jnp.ones((4, 10, 8)), lengths=jnp.arange(4))
    """

    def __init__(
        self, cell: Cell, in_features: int, *, rngs: nnx.Rngs, reverse=False, **unroll_options
    ):
        super().__init__(cell.init(rngs.params(), in_features))
        self.cell = cell
        self.in_features = in_features
        self.out_features = cell.output_size
        self.reverse = reverse
        self.unroll_options = tuple(sorted(unroll_options.items()))  # hashable, for nnx.jit

    def __call__(self, xs, carry=None, *, lengths=None, resets=None, return_carry=False):
        final, ys = unroll(
            self.cell,
            self.params,
            xs,
            carry,
            lengths=lengths,
            resets=resets,
            reverse=self.reverse,
            **dict(self.unroll_options),
        )
        return (final, ys) if return_carry else ys


class Layer(_Stochastic):
    """Any ``rnnjax.Layer`` (rnn, bidirectional, serial, residual, ...) as an NNX module.

    Args:
      layer: the functional layer.
      in_features: input feature size D.
      rngs: ``nnx.Rngs``; ``"params"`` initialises, ``"dropout"`` (or ``"default"``) feeds dropout.
      deterministic: start in eval mode (no dropout); ``.train()`` / ``.eval()`` toggle it.

    ``__call__(xs, carry=None, *, lengths=None, return_carry=False, deterministic=None,
    rngs=None)`` returns ``ys [B, T, out_features]`` or ``(carry, ys)``.

    Example:
      >>> body = rnnjax.serial(rnnjax.rnn(rnnjax.cells.lstm(64)), rnnjax.dropout(0.2))
      >>> layer = rnnjax.nnx.Layer(body, 28, rngs=nnx.Rngs(0))
    """

    def __init__(self, layer: _Layer, in_features: int, *, rngs: nnx.Rngs, deterministic=False):
        params, out_features = layer.init(rngs.params(), in_features)
        super().__init__(params, rngs, deterministic)
        self.layer = layer
        self.in_features = in_features
        self.out_features = out_features

    def __call__(
        self, xs, carry=None, *, lengths=None, return_carry=False, deterministic=None, rngs=None
    ):
        key = self._dropout_key(deterministic, rngs)
        final, ys = self.layer.apply(self.params, xs, carry, lengths=lengths, key=key)
        return (final, ys) if return_carry else ys


class Model(_Stochastic):
    """A whole ``rnnjax.Model`` (``seq2vec``, ``seq2seq``, ...) or ``EncoderDecoder`` as an
    NNX module.

    Args:
      model: the functional model.
      rngs: ``nnx.Rngs``; ``"params"`` initialises, ``"dropout"`` (or ``"default"``) feeds dropout.
      deterministic: start in eval mode (no dropout); ``.train()`` / ``.eval()`` toggle it.

    ``__call__(*inputs, deterministic=None, rngs=None, **kwargs)`` returns
    ``model.apply(params, *inputs, key=..., **kwargs)`` (``kwargs`` such as ``lengths``; an
    encoder–decoder takes ``(src, tgt_in)`` and ``src_lengths``, and decodes with
    ``rnnjax.decoding.greedy(module.model, module.params, ...)``; a ``seq2seq`` model generates
    with ``rnnjax.generate(module.model, module.params, seed, steps=...)``).

    Example:
      >>> fn = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.gru(64)), rnnjax.dense(10), in_size=28)
      >>> model = rnnjax.nnx.Model(fn, rngs=nnx.Rngs(0))
      >>> logits = model(images, lengths=lengths)     # images [B, 28, 28] -> [B, 10]
    """

    def __init__(self, model: _Model | EncoderDecoder, *, rngs: nnx.Rngs, deterministic=False):
        super().__init__(model.init(rngs.params()), rngs, deterministic)
        self.model = model

    def __call__(self, *inputs, deterministic=None, rngs=None, **kwargs) -> Any:
        key = self._dropout_key(deterministic, rngs)
        return self.model.apply(self.params, *inputs, key=key, **kwargs)


__all__ = ["RNN", "Layer", "Model"]
