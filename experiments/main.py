"""Trains a recurrent model from a config file; rerun the same command to resume.

  python -m experiments.main --config=experiments/configs/mnist_rnn.py --workdir=runs/mnist \
      [--config.num_epochs=1 --config.data.manual_dir=../shared/data/mnist ...]
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rnnjax.train import launch, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    launch.quiet_library_logs()
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    if message := launch.unknown_overrides(sys.argv[1:]):
        sys.exit(message)
    app.run(main)
