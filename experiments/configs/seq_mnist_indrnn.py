"""Sequential MNIST with two IndRNN layers of 128 ReLU units (Li et al. 2018): 784 steps of one
pixel, each unit's recurrent weight clipped to [-2^(1/784), 2^(1/784)] as in the paper.

Run (offline, from the MNIST IDX files; permuted: add --config.data.permute=True):
  python -m experiments.main --config=experiments/configs/seq_mnist_indrnn.py \
      --workdir=runs/seq_mnist_indrnn --config.data.manual_dir=../shared/data/mnist

Full reproduction: the defaults (50 epochs, Adam 2e-4 as in the paper, about 3.5 minutes an
epoch on 2 idle CPU cores). Reference: IndRNN 99.0% sequential / 96.0% permuted with six layers
and batch normalisation (Li et al. 2018, "Independently Recurrent Neural Network"); IRNN 97% /
82% (Le et al. 2015). One epoch here (the runs below) is
  ... --config.num_epochs=1 [--config.data.permute=True]
Measured here, one epoch each (2 CPU cores shared with other work; 8 and 7 minutes):
sequential 0.3078, permuted 0.2732 test accuracy: far from the references, which train for
hundreds of epochs with six batch-normalised layers. With --config.learning_rate=1e-3 one
sequential epoch reaches 0.4139 (2.8 minutes alone, 355 examples/s).
"""

from experiments.configs.common import sequential_mnist_config

STEPS = 784


def get_config():
    config = sequential_mnist_config(
        cell="indrnn",
        units=128,
        num_layers=2,
        permute=False,
        cell_options={"recurrent_max": 2 ** (1 / STEPS)},
    )
    config.learning_rate = 2e-4  # the paper's rate; ReLU recurrences diverge at 1e-3 more often
    config.num_epochs = 50
    return config
