"""Sequential MNIST with one LSTM layer of 128 units: 784 steps of one pixel.

Run (offline, from the MNIST IDX files; permuted: add --config.data.permute=True):
  python -m experiments.main --config=experiments/configs/seq_mnist_lstm.py \
      --workdir=runs/seq_mnist_lstm --config.data.manual_dir=../shared/data/mnist

Full reproduction: the defaults (50 epochs of 468 steps, batch 128, Adam 1e-3 cosine-decayed,
gradients clipped to norm 1, forget bias 1; about 8 minutes an epoch on 2 idle CPU cores, so
about 7 hours). Reference: LSTM 98.2% sequential / 88% permuted (Arjovsky et al. 2016,
"Unitary Evolution Recurrent Neural Networks").
One epoch here (the runs below) is
  ... --config.num_epochs=1 [--config.data.permute=True]
(the cosine schedule then decays over that epoch).
Measured here, one epoch each: sequential 0.1135 test accuracy, still on the initial plateau
at chance (16 minutes, 2 CPU cores shared with other work); permuted 0.4531 (8 minutes, mostly
alone: 132 examples/s).
"""

from experiments.configs.common import sequential_mnist_config


def get_config():
    config = sequential_mnist_config(cell="lstm", units=128, permute=False)
    config.num_epochs = 50
    return config
