"""The peers of ``experiments/benchmark.py``: the same classifier in Flax, Keras and PyTorch.

Each runner is ``(cell, units, xs [B, T, D], labels [B], train) -> run``, where ``run()`` does
one training step (Adam 1e-3 on softmax cross-entropy) or one forward pass and returns something
to ``jax.block_until_ready``. The model is the recurrent layer (``cell`` in simple, lstm, gru),
its last step's output and a dense layer to ``CLASSES`` logits. Frameworks are imported on use.
"""

import os

import jax
import jax.numpy as jnp
import optax

CLASSES = 10


def jax_runner(apply, params, xs, labels, train: bool):
    """A plain optax loop for a pure ``apply(params, xs) -> logits`` (the Flax linen way)."""
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    if not train:
        forward = jax.jit(apply)
        return lambda: forward(params, xs)
    tx = optax.adam(1e-3)

    @jax.jit(donate_argnums=0)
    def step(carried, xs, labels):
        params, opt_state = carried

        def loss(params):
            logits = apply(params, xs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    carried = (params, tx.init(params))

    def run():
        nonlocal carried
        carried = step(carried, xs, labels)
        return carried

    return run


def flax_linen_runner(cell: str, units: int, xs, labels, train: bool):
    import flax.linen as nn

    cell_type = {"simple": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}

    class Net(nn.Module):
        @nn.compact
        def __call__(self, xs):
            ys = nn.RNN(cell_type[cell](units))(xs)
            return nn.Dense(CLASSES)(ys[:, -1])

    net = Net()
    params = jax.jit(net.init)(jax.random.key(0), jnp.asarray(xs))
    return jax_runner(net.apply, params, xs, labels, train)


def flax_nnx_runner(cell: str, units: int, xs, labels, train: bool):
    from flax import nnx

    cell_type = {"simple": nnx.SimpleCell, "lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(cell_type[cell](xs.shape[-1], units, rngs=rngs))
            self.head = nnx.Linear(units, CLASSES, rngs=rngs)

        def __call__(self, xs):
            return self.head(self.rnn(xs)[:, -1])

    net, xs, labels = Net(nnx.Rngs(0)), jnp.asarray(xs), jnp.asarray(labels)
    if not train:
        forward = nnx.cached_partial(nnx.jit(lambda net, xs: net(xs)), net)
        return lambda: forward(xs)
    optimizer = nnx.Optimizer(net, optax.adam(1e-3), wrt=nnx.Param)

    def step(net, optimizer, xs, labels):
        def loss(net):
            return optax.softmax_cross_entropy_with_integer_labels(net(xs), labels).mean()

        optimizer.update(net, nnx.grad(loss)(net))
        return optimizer.step[...]

    # cached_partial skips the per-call graph traversal, as Flax's performance guide advises
    step = nnx.cached_partial(nnx.jit(step, donate_argnums=(0, 1)), net, optimizer)
    return lambda: step(xs, labels)


def keras_runner(cell: str, units: int, xs, labels, train: bool):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax")
    layer = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((xs.shape[1], xs.shape[-1])), layer[cell](units)]
        + [keras.layers.Dense(CLASSES)]
    )
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    if not train:
        return lambda: net.predict_on_batch(xs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return lambda: net.train_on_batch(xs, labels)


def torch_runner(cell: str, units: int, xs, labels, train: bool):
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use
    torch.manual_seed(0)
    layer = {"simple": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn, head = (
        layer(xs.shape[-1], units, batch_first=True),
        torch.nn.Linear(units, CLASSES),
    )
    xs, labels = torch.from_numpy(xs), torch.from_numpy(labels).long()

    def forward():
        return head(rnn(xs)[0][:, -1])

    if not train:
        return torch.inference_mode()(forward)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(forward(), labels)
        loss.backward()
        optimizer.step()
        return loss

    return run


PEERS = {
    "flax_linen": flax_linen_runner,
    "flax_nnx": flax_nnx_runner,
    "keras": keras_runner,
    "torch": torch_runner,
}
NEEDS = {"flax_linen": "flax", "flax_nnx": "flax", "keras": "keras", "torch": "torch"}
