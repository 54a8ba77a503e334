"""The textbook's MNIST classifier: 28 rows of 28 pixels into a simple tanh RNN of 150 units.

Run (offline, from the MNIST IDX files):
  python -m experiments.main --config=experiments/configs/mnist_rnn.py --workdir=runs/mnist_rnn \
      --config.data.manual_dir=../shared/data/mnist

Expected: test accuracy >= 0.98 (see BUILD_NOTES.md for the measured curve and epoch).
"""

from experiments.configs.common import classifier_config


def get_config():
    return classifier_config(cell="simple", units=150)
