"""Sequential MNIST with two LRU layers of 128 units (Orvieto et al. 2023, "Resurrecting
Recurrent Neural Networks for Long Sequences").

A recurrence linear in its carry: on accelerators `unroll` trains it with an associative scan
over all 784 steps at once; on a CPU it steps, which measured faster there (BUILD_NOTES.md).

Run (offline, from the MNIST IDX files; permuted: add --config.data.permute=True):
  python -m experiments.main --config=experiments/configs/seq_mnist_lru.py \
      --workdir=runs/seq_mnist_lru --config.data.manual_dir=../shared/data/mnist

Full reproduction: the defaults (50 epochs, batch 128, Adam 1e-3 cosine-decayed, gradients
clipped to norm 1). Reference points for this task: LSTM 98.2% sequential / 88% permuted
(Arjovsky et al. 2016). Measured here, one epoch (`--config.num_epochs=1`, the cosine schedule
then decays over that epoch), sequential: 0.3309 test accuracy, off the initial plateau where
the gated cells are still on it (15 minutes on 2 idle CPU cores, 70 examples/s, stepping).
"""

from experiments.configs.common import sequential_mnist_config


def get_config():
    config = sequential_mnist_config(cell="lru", units=128, num_layers=2, permute=False)
    config.num_epochs = 50
    return config
