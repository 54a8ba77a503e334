"""Tiny training runs shared by the training tests: overrides, and reading back final states."""

from pathlib import Path

import jax

from rnnjax.train import Checkpoints, builders, init_state, launch

# Overrides that make a generated-data config (adding, copy, Reber) train in seconds.
TINY_GENERATED = {
    "num_epochs": 2,
    "batch_size": 20,
    "learning_rate": 1e-2,
    "progress": False,
    "data.train_size": 200,
    "data.test_size": 30,
    "model.units": 8,
}
TEXTBOOK_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "mnist_rnn.py"


def restore_final_state(workdir: Path, steps: int):
    """The newest checkpoint's train state of a tiny textbook run (8 units), on one device,
    after checking that it is the run's last step."""
    config = launch.load_config(str(TEXTBOOK_CONFIG), {"model.units": 8})
    model = builders.classifier(config.model, in_size=28, num_classes=10)
    template = jax.eval_shape(
        lambda: init_state(model, builders.optimizer(config), jax.random.key(0))
    )
    with Checkpoints(workdir / "checkpoints") as ckpts:
        state, metadata = ckpts.restore(template)
    assert metadata["step"] == int(state.step) == steps
    return state
