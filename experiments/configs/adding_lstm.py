"""The adding problem (Hochreiter & Schmidhuber 1997) with an LSTM of 128 units.

Inputs are T steps of (value uniform in [0, 1), marker); the two marked values, one in each
half, must be added. Always answering 1 scores MSE 1/6 ≈ 0.167 (``test_baseline_mse``).

Run:
  python -m experiments.main --config=experiments/configs/adding_lstm.py \
      --workdir=runs/adding_lstm [--config.data.length=200]

Expected: test MSE far below the baseline; Le et al. (2015, Fig. 2) and Arjovsky et al. (2016)
show LSTM solving T = 100–400 after a plateau at 0.167.
Measured (2-core CPU): see BUILD_NOTES.md.
"""

from experiments.configs.common import adding_config


def get_config():
    config = adding_config(cell="lstm", units=128)
    config.num_epochs = 5
    return config
