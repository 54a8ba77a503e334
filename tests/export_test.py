"""Models exported with ``jax.export`` over a symbolic batch and sequence length, as for
serving: the exported function's outputs and gradients equal the jitted model's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import rnnjax
from rnnjax import cells, decoding

B, T, D = 3, 10, 4
BODIES = {
    "simple": lambda: rnnjax.rnn(cells.simple(8)),  # fully unrolls short static sequences
    "lstm_bfloat16": lambda: rnnjax.rnn(cells.lstm(8, compute_dtype="bfloat16")),
    "bidirectional_gru_remat": lambda: rnnjax.bidirectional(cells.gru(8), remat=3),
    "min_gru": lambda: rnnjax.rnn(cells.min_gru(8)),
}


def symbolic(spec: str):
    return jax.ShapeDtypeStruct(export.symbolic_shape(spec), jnp.float32)


@pytest.mark.parametrize("name", list(BODIES))
def test_exported_model_and_gradient_equal_the_jitted_ones(name):
    model = rnnjax.seq2vec(BODIES[name](), rnnjax.dense(3), in_size=D)
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    lengths = jnp.array([T, 3, 0])

    def apply(params, xs, lengths):
        return model.apply(params, xs, lengths=lengths)

    def grad(params, xs, lengths):
        return jax.grad(lambda p: jnp.sum(jnp.sin(apply(p, xs, lengths))))(params)

    b, t = export.symbolic_shape("b, t")
    shapes = (jax.ShapeDtypeStruct((b, t, D), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32))
    for fn in (apply, grad):
        exported = export.export(jax.jit(fn))(params, *shapes)
        jax.tree.map(
            lambda got, want: np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5),
            exported.call(params, xs, lengths),
            jax.jit(fn)(params, xs, lengths),
        )


def test_parallel_form_needs_a_static_length(monkeypatch):
    """The associative scan cannot run over a symbolic length: asked for, it is an error; by
    default (an accelerator's choice) the linear cell steps instead."""
    cell = cells.min_gru(8)
    params = cell.init(jax.random.key(0), D)

    def unroll(**options):
        return lambda xs: rnnjax.unroll(cell, params, xs, **options)[1]

    with pytest.raises(ValueError, match="parallel=True needs a static sequence length"):
        export.export(jax.jit(unroll(parallel=True)))(symbolic(f"b, t, {D}"))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    exported = export.export(jax.jit(unroll()))(symbolic(f"b, t, {D}"))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    np.testing.assert_allclose(exported.call(xs), unroll(parallel=False)(xs), atol=1e-5, rtol=1e-5)


def test_exported_beam_search_over_any_batch_and_source_length():
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(cells.gru(6)),
        cells.lstm(6),
        src_embed=rnnjax.embed(11, 4),
        tgt_embed=rnnjax.embed(12, 4),
        head=rnnjax.dense(12),
        attention="luong",
    )
    params = model.init(jax.random.key(0))

    def decode(params, src, lengths):
        options = dict(start_token=1, end_token=2, max_length=6, beam_size=3)
        return decoding.beam_search(model, params, src, src_lengths=lengths, **options)

    b, t = export.symbolic_shape("b, t")
    exported = export.export(jax.jit(decode))(
        params, jax.ShapeDtypeStruct((b, t), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.int32)
    )
    src = jax.random.randint(jax.random.key(2), (B, 7), 3, 11)
    lengths = jnp.array([7, 2, 3])
    jax.tree.map(
        np.testing.assert_array_equal,
        exported.call(params, src, lengths),
        jax.jit(decode)(params, src, lengths),
    )


def test_exported_generation_over_any_batch_and_seed_length():
    """A language model's token generation, including its vocabulary check at trace time."""
    lm = rnnjax.serial(rnnjax.embed(9, 4), rnnjax.rnn(cells.gru(6)), rnnjax.dense(9))
    params, _ = lm.init(jax.random.key(0), None)

    def generate(params, seed):
        return rnnjax.generate(lm, params, seed, steps=5)

    seed_shape = jax.ShapeDtypeStruct(export.symbolic_shape("b, t"), jnp.int32)
    exported = export.export(jax.jit(generate))(params, seed_shape)
    seed = jax.random.randint(jax.random.key(1), (B, 4), 0, 9)
    np.testing.assert_array_equal(exported.call(params, seed), jax.jit(generate)(params, seed))
