"""Creative generation: a next-value model fed its own predictions, compiled with jit.

The model is one ``Layer`` from ``[B, T, D]`` to ``[B, T, D]`` whose outputs live where its
inputs do. A Layer, not a ``Cell`` or a ``Model``, because it is the one unit that both takes
and returns a carry *and* composes: ``serial(body, head)`` is a whole ``seq2seq`` model
(dropout between layers included, off without a key), and ``rnn(output_projection(cell, D))``
is a single cell with the chapter's output projection. A ``Model`` hides its carry, and a
``Cell`` cannot hold dropout between stacked layers.
"""

import functools

import jax
import jax.numpy as jnp

from rnnjax._checks import check_kind, check_size
from rnnjax.layers import Layer


@functools.partial(jax.jit, static_argnames=("layer", "steps"))
def generate(layer: Layer, params, seed: jax.Array, *, steps: int) -> jax.Array:
    """Warms the carry up on ``seed``, then feeds every prediction back as the next input.

    The warm-up is one ``layer.apply`` over the whole seed (one ``unroll`` per recurrent layer);
    the generated steps are one ``lax.scan`` whose step applies the layer to a length-1 sequence
    from the carried state, so shapes are static and nothing loops in Python. The carry runs on
    through all ``steps`` (the book instead reran the model on the last ``n_steps`` values from
    a zero carry every step).

    Args:
      layer: a layer ``[B, T, D] -> [B, T, D]`` that continues from a carry (``rnn``,
        ``serial`` of ``rnn``/``dropout``/``dense``, ...; not ``bidirectional``, which would
        need the future). Static: closed over by jit.
      params: its params.
      seed: float ``[B, T0, D]``, T0 >= 1, the values the generation continues.
      steps: number of values S >= 1 to generate.

    Returns:
      ``[B, S, D]``: the prediction after the seed's last value, then after each prediction.

    Example (the params of ``model = rnnjax.seq2seq(body, head, in_size=1)``):
      >>> layer = rnnjax.serial(body, head)
      >>> out = rnnjax.generate(layer, {"0": params["body"], "1": params["head"]}, seed, steps=300)
    """
    check_size("steps", steps)
    hint = "[B, T, D] -> [B, T, D] that continues from a carry, such as serial(body, head)"
    check_kind("generate's layer", layer, Layer, hint)  # a Model hides its carry
    if not layer.causal:
        raise ValueError(
            "generate needs a causal layer (each output reads earlier inputs only), got one "
            "with a reverse rnn or a bidirectional layer, whose outputs read the future"
        )
    if jnp.ndim(seed) != 3 or seed.shape[1] < 1:
        raise ValueError(f"seed must be [B, T0, D] with T0 >= 1, got shape {jnp.shape(seed)}")
    carry, ys = layer.apply(params, seed)
    if ys.shape[-1] != seed.shape[-1]:
        raise ValueError(
            f"layer must output its input size {seed.shape[-1]} to feed predictions back, "
            f"got output size {ys.shape[-1]}"
        )

    def feed_back(loop, _):
        carry, x = loop
        carry, y = layer.apply(params, x[:, None], carry)
        return (carry, y[:, 0]), y[:, 0]

    first = ys[:, -1]
    _, rest = jax.lax.scan(feed_back, (carry, first), None, length=steps - 1)
    return jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
