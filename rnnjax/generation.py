"""Creative generation: a next-value model or a language model fed its own predictions,
compiled with jit.

The model is a ``seq2seq`` ``Model`` or one ``Layer``, from ``[B, T, D]`` to ``[B, T, D]``
whose outputs live where its inputs do, or from token ids ``[B, T]`` to logits ``[B, T, V]``
over the same ids. A Layer is the one unit that both takes and returns a carry *and*
composes: ``serial(embed(V, E), rnn(cell), dense(V))`` is a language model (dropout between
layers included, off without a key), ``rnn(output_projection(cell, D))`` a single cell with
the chapter's output projection; a ``seq2seq`` model is stepped through its ``Model.layer``,
on its own params. A ``Cell`` cannot hold dropout between stacked layers.
"""

import functools
from numbers import Real

import jax
import jax.numpy as jnp

from rnnjax import sampling
from rnnjax._checks import check_fed_back_ids, check_kind, check_model_params, check_size
from rnnjax.layers import Layer
from rnnjax.models import Model


def generate(
    layer: Layer,
    params,
    seed: jax.Array,
    *,
    steps: int,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """Warms the carry up on ``seed``, then feeds every prediction back as the next input.

    The warm-up is one ``layer.apply`` over the whole seed (one ``unroll`` per recurrent layer);
    the generated steps are one ``lax.scan`` whose step applies the layer to a length-1 sequence
    from the carried state, so shapes are static and nothing loops in Python. The carry runs on
    through all ``steps`` (the book instead reran the model on the last ``n_steps`` values from
    a zero carry every step).

    Values or tokens, by the seed's dtype:
    - a float seed ``[B, T0, D]``: the layer outputs its next input ``[B, T, D]``, fed back as
      it is (a next-value model);
    - an int seed ``[B, T0]`` of token ids: the layer outputs logits ``[B, T, V]`` over its own
      vocabulary (``serial(embed(V, E), rnn(...), dense(V))``, a language model); each step
      feeds back the most likely token, or, with a ``key``, one drawn as by
      ``rnnjax.sampling.draw`` (step t with ``jax.random.fold_in(key, t)``).

    Args:
      layer: a ``seq2seq`` model, or a layer that continues from a carry (``rnn``, ``serial``
        of ``embed``/``rnn``/``dropout``/``dense``, ...; not ``bidirectional``, which would
        need the future). Static: closed over by jit.
      params: its params (a model's are checked against its ``init``).
      seed: float ``[B, T0, D]`` or int ``[B, T0]``, T0 >= 1: what the generation continues.
      steps: number of values or tokens S >= 1 to generate.
      key, temperature, top_k, top_p: token seeds only; without a key the argmax, so the
        other three need one. ``temperature`` and ``top_p`` may change without recompiling.

    Returns:
      ``[B, S, D]`` values or int32 ``[B, S]`` tokens: the prediction after the seed's last
      element, then after each prediction.

    Example:
      >>> model = rnnjax.seq2seq(rnnjax.rnn(rnnjax.cells.gru(64)), rnnjax.dense(1), in_size=1)
      >>> out = rnnjax.generate(model, model.init(jax.random.key(0)), seed, steps=300)
    """
    if isinstance(layer, Model):
        if layer.layer is None:
            raise TypeError(
                "generate takes a Layer or a Model with a carry-passing layer (seq2seq); this "
                "Model has none: pass the Layer that maps its inputs to its next inputs"
            )
        check_model_params(layer.init, params)
        layer = layer.layer
    sampling.check_options(temperature, top_k, top_p)
    shaping = top_k is not None or top_p is not None or not _is_one(temperature)
    if not jnp.issubdtype(jnp.result_type(seed), jnp.integer):
        if key is not None or shaping:
            raise ValueError(
                "key, temperature, top_k and top_p sample tokens: they need an int seed "
                f"[B, T0] of token ids, got a {jnp.result_type(seed)} seed"
            )
    elif key is not None:
        sampling.check_key(key)
    elif shaping:
        raise ValueError(
            "temperature, top_k and top_p shape the distribution tokens are drawn from: they "
            "need a key (without one, generation takes the most likely token)"
        )
    return _generate(layer, params, seed, key, temperature, top_p, steps=steps, top_k=top_k)


def _is_one(temperature) -> bool:
    """Whether ``temperature`` is the default 1 (a traced one is taken as set)."""
    return isinstance(temperature, Real) and not isinstance(temperature, bool) and temperature == 1


@functools.partial(jax.jit, static_argnames=("layer", "steps", "top_k"))
def _generate(layer, params, seed, key, temperature, top_p, *, steps, top_k):
    check_size("steps", steps)
    hint = (
        "[B, T, D] -> [B, T, D] that continues from a carry, or a seq2seq Model; of an "
        "rnnjax.nnx module, pass module.model and module.params"
    )
    check_kind("generate's layer", layer, Layer, hint)
    if not layer.causal:
        raise ValueError(
            "generate needs a causal layer (each output reads earlier inputs only), got one "
            "with a reverse rnn or a bidirectional layer, whose outputs read the future"
        )
    tokens = jnp.issubdtype(seed.dtype, jnp.integer)
    if seed.ndim != (2 if tokens else 3) or seed.shape[1] < 1:
        want = "[B, T0] of token ids" if tokens else "[B, T0, D]"
        raise ValueError(f"seed must be {want} with T0 >= 1, got shape {seed.shape}")
    carry, ys = layer.apply(params, seed)
    if tokens and ys.ndim != 3:
        raise ValueError(f"layer must output logits [B, T, V] for token seeds, got {ys.shape}")
    if tokens:
        # a probe of batch 1: the seed's batch may be symbolic (jax.export)
        check_fed_back_ids("generate", layer.apply, params, (1, 1), ys.shape[-1])
    if not tokens and ys.shape[-1] != seed.shape[-1]:
        raise ValueError(
            f"layer must output its input size {seed.shape[-1]} to feed predictions back, "
            f"got output size {ys.shape[-1]}"
        )

    def next_input(t, y):
        """The input after output ``y`` (``[B, D]`` values or ``[B, V]`` logits) of step t."""
        if not tokens:
            return y
        if key is None:
            return jnp.argmax(y, axis=-1).astype(jnp.int32)
        step_key = jax.random.fold_in(key, t)
        return sampling.draw(step_key, y, temperature=temperature, top_k=top_k, top_p=top_p)

    def feed_back(loop, t):
        carry, x = loop
        carry, y = layer.apply(params, x[:, None], carry)
        x = next_input(t, y[:, 0])
        return (carry, x), x

    first = next_input(0, ys[:, -1])
    _, rest = jax.lax.scan(feed_back, (carry, first), jnp.arange(1, steps))
    return jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
