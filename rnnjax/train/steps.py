"""Jitted train and eval steps for any model and loss.

A batch is a dict with ``"inputs"``, the loss's targets (``"labels"`` or ``"targets"``), and
optionally ``"lengths"`` (variable-length sequences) and ``"mask"`` (padding examples in eval).
"""

import jax
import jax.numpy as jnp
import optax

from rnnjax._checks import batch_entry, check_size
from rnnjax.train import distributed
from rnnjax.train.state import TrainState, step_key


def model_forward(model):
    """``forward(params, batch, key=None)`` of a ``Model``: ``model.apply`` on
    ``batch["inputs"]``, with the batch's ``"lengths"`` when it has them."""

    def forward(params, batch, key=None):
        inputs = batch_entry(batch, "inputs", "the model's forward")
        return model.apply(params, inputs, lengths=batch.get("lengths"), key=key)

    return forward


def make_train_step(
    model,
    tx: optax.GradientTransformation,
    loss_fn,
    *,
    forward=None,
    donate: bool = True,
    layout=None,
    steps_per_call: int = 1,
):
    """Returns ``step(state, batch) -> (state, metrics)``, jitted, with the state donated.

    The loss is ``loss_fn(forward(params, batch, key), batch)``; ``forward`` defaults to
    ``model_forward(model)`` (other tasks, e.g. an encoder–decoder fed two sequences, pass theirs).

    Dropout gets ``fold_in(root, step)``. A non-finite loss, gradient or updated state (an update
    can overflow even when the gradient is finite) leaves the state as it was, so the last good
    params are never overwritten, and reports ``metrics["finite"] == 0``; the caller stops and
    names the step.

    Metrics: ``loss``, ``grad_norm``, ``finite`` and the loss's per-example metrics averaged.

    With a ``distributed.Layout`` the step takes and returns the state in ``layout.state``'s
    shardings and the batch split along the mesh's data axis; metrics come back replicated.
    ``forward`` then runs on each device's rows (``distributed.data_parallel``), so the devices'
    gradients are summed once per step, not once per time step; on several CPU devices of one
    process at most two steps are in flight (``distributed.bounded_dispatch``: more deadlocked
    XLA's CPU collectives).

    With ``steps_per_call=K`` one call runs K steps with ``lax.scan``: every leaf of ``batch``
    carries a leading axis of K batches (``[K, B, ...]``; under a layout in ``layout.steps``'
    shardings) and every metric comes back with a leading axis of K, one per step. The result
    is bitwise that of K calls (tests), with one dispatch and launch instead of K: on a 2-core
    CPU the host's dispatch competes with the devices for the cores (BUILD_NOTES.md).
    """
    steps_per_call = check_size("steps_per_call", steps_per_call)
    forward = forward or model_forward(model)
    if layout is not None:
        forward = distributed.data_parallel(forward, layout.mesh)

    def step(state: TrainState, batch):
        def loss(params):
            return loss_fn(forward(params, batch, step_key(state)), batch)

        (loss_value, per_example), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        stepped = TrainState(
            state.step + 1, optax.apply_updates(state.params, updates), opt_state, state.rng
        )
        finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm) & _all_finite(stepped)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
        metrics = {name: jnp.mean(value) for name, value in per_example.items()}
        metrics |= {"loss": loss_value, "grad_norm": grad_norm, "finite": finite}
        return new_state, metrics

    if steps_per_call > 1:
        step = _scanned(step, steps_per_call)
    donate_argnums = (0,) if donate else ()
    if layout is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    batch = layout.steps if steps_per_call > 1 else layout.batch
    ins, outs = (layout.state, batch), (layout.state, layout.replicated)
    jitted = jax.jit(step, in_shardings=ins, out_shardings=outs, donate_argnums=donate_argnums)
    return distributed.bounded_dispatch(jitted, layout.mesh)


def _scanned(step, steps: int):
    """``step`` over ``steps`` stacked batches in one ``lax.scan``; metrics stacked likewise."""

    def scanned(state, batches):
        for path, leaf in jax.tree.leaves_with_path(batches):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != steps:
                raise ValueError(
                    f"steps_per_call={steps} takes batches stacked [{steps}, batch, ...]; "
                    f"batch{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}"
                )
        return jax.lax.scan(step, state, batches)

    return scanned


def _all_finite(tree) -> jax.Array:
    """True when no leaf of ``tree`` holds an inf or NaN (integer leaves always pass)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_eval_step(model, loss_fn, *, forward=None, metrics=None, layout=None):
    """Returns ``eval_step(params, batch) -> {name: sum over real examples, "count": n}``.

    The per-example values summed are ``metrics(params, batch)`` when given (e.g. exact match of
    a decoded sequence), else those of ``loss_fn(forward(params, batch), batch)``.

    Sums (not means) so that batches of any size, including a padded last batch with
    ``batch["mask"]``, add up to exact full-dataset metrics. With a ``distributed.Layout``,
    params are in ``layout.state.params``'s shardings and the batch is split as in training.
    The step is then two jitted programs: each example's values, left split over the devices,
    then their sums. Summing in the first program (with or without a cross-device collective)
    made XLA:CPU split its loop's small bfloat16 matmuls across threads, 2x slower
    (BUILD_NOTES.md).
    """

    forward = forward or model_forward(model)

    def weighted(params, batch):
        """``{name: [B]}``: each example's values times its weight (0 for padding)."""
        if metrics is None:
            _, per_example = loss_fn(forward(params, batch), batch)
        else:
            per_example = metrics(params, batch)
        mask = batch.get("mask")
        if mask is None:
            mask = jnp.ones(jax.tree.leaves(batch)[0].shape[0], bool)
        weights = mask.astype(jnp.float32)
        return {name: v * weights for name, v in per_example.items()} | {"count": weights}

    def totals(values):
        return jax.tree.map(jnp.sum, values)

    if layout is None:
        return jax.jit(lambda params, batch: totals(weighted(params, batch)))
    per_example = jax.jit(
        weighted, in_shardings=(layout.state.params, layout.batch), out_shardings=layout.batch
    )
    total = jax.jit(totals, out_shardings=layout.replicated)
    return distributed.bounded_dispatch(
        lambda params, batch: total(per_example(params, batch)), layout.mesh
    )
