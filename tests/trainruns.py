"""Reading back the tiny textbook runs of the training tests."""

from pathlib import Path

import jax

from rnnjax.train import Checkpoints, builders, init_state, launch

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
