"""The chapter's 3-layer LSTM of 150 units (98.7% after 10 epochs in the book).

Run (offline, from the MNIST IDX files):
  python -m experiments.main --config=experiments/configs/mnist_lstm.py --workdir=runs/mnist_lstm \
      --config.data.manual_dir=../shared/data/mnist

Expected: see BUILD_NOTES.md (results table) for the measured test accuracy and epochs.
"""

from experiments.configs.common import classifier_config


def get_config():
    config = classifier_config(cell="lstm", units=150, num_layers=3)
    config.num_epochs = 10
    return config
