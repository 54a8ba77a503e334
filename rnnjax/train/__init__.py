"""Training: train state, jitted steps, losses, checkpoints, metrics and the resumable loop."""

from rnnjax.train import builders, distributed, launch, tasks
from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.loop import NonFiniteError, train_and_evaluate
from rnnjax.train.losses import mse, sequence_xent, softmax_xent
from rnnjax.train.metrics import MetricsWriter, plot_learning_curves, read_metrics
from rnnjax.train.state import TrainState, init_state, step_key
from rnnjax.train.steps import make_eval_step, make_train_step
from rnnjax.train.sums import evaluate

__all__ = [
    "Checkpoints",
    "MetricsWriter",
    "NonFiniteError",
    "TrainState",
    "builders",
    "distributed",
    "evaluate",
    "init_state",
    "launch",
    "make_eval_step",
    "make_train_step",
    "mse",
    "plot_learning_curves",
    "read_metrics",
    "sequence_xent",
    "softmax_xent",
    "step_key",
    "tasks",
    "train_and_evaluate",
]
