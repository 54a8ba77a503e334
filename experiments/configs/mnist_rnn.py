"""The textbook's MNIST classifier: 28 rows of 28 pixels into a simple tanh RNN of 150 units.

Run (offline, from the MNIST IDX files):
  python -m experiments.main --config=experiments/configs/mnist_rnn.py --workdir=runs/mnist_rnn \
      --config.data.manual_dir=../shared/data/mnist

Adam with peak learning rate 0.001, cosine-decayed to 0 over 20 epochs; batch 150.
Expected: test accuracy 0.984 after 20 epochs (0.980 from epoch 12); about 2.5-5 s an epoch on
2 CPU cores with the launcher's defaults. With a constant learning rate the same model plateaus
at 0.977 (BUILD_NOTES.md).
"""

from experiments.configs.common import classifier_config


def get_config():
    return classifier_config(cell="simple", units=150)
