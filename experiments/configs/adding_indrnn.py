"""The adding problem with a 2-layer IndRNN of 128 ReLU units (Li et al. 2018).

As in the paper, each recurrent weight is clipped to ``|u| <= 2**(1/T)`` (``recurrent_max``,
tied to ``data.length``, so ``--config.data.length`` moves it too).

Run:
  python -m experiments.main --config=experiments/configs/adding_indrnn.py \
      --workdir=runs/adding_indrnn [--config.data.length=500]

Expected: test MSE far below the baseline (``test_baseline_mse``, 0.156 at T = 100); Li et al.
(2018) solve T = 100, 500 and 1000.
Measured (2-core CPU, shared), 10 epochs (2,000 steps): T = 100: test MSE 0.0028, below 0.02
from epoch 4, 53 s in all; T = 200: 0.0095 (baseline 0.165), 6 minutes; T = 500: 0.0291
(baseline 0.162; at the baseline for 2 epochs, still falling at the end), about 20 s an epoch
alone (~500 examples/s).
"""

import ml_collections

from experiments.configs.common import adding_config


def get_config():
    config = adding_config(cell="indrnn", units=128, num_layers=2)
    two = ml_collections.FieldReference(2.0)  # a reference, so the power follows data.length
    config.model.cell_options = {"recurrent_max": two ** (1 / config.data.get_ref("length"))}
    config.num_epochs = 10
    return config
