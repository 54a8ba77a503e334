"""Sequential MNIST with one GRU layer of 128 units: 784 steps of one pixel.

Run (offline, from the MNIST IDX files; permuted: add --config.data.permute=True):
  python -m experiments.main --config=experiments/configs/seq_mnist_gru.py \
      --workdir=runs/seq_mnist_gru --config.data.manual_dir=../shared/data/mnist

Full reproduction: the defaults (PLACEHOLDER_EPOCHS epochs). Reference: LSTM 98.2% sequential / 88%
permuted (Arjovsky et al. 2016, "Unitary Evolution Recurrent Neural Networks").
Measured here: PLACEHOLDER_RESULT
"""

from experiments.configs.common import sequential_mnist_config


def get_config():
    config = sequential_mnist_config(cell="gru", units=128, permute=False)
    config.num_epochs = 50
    return config
