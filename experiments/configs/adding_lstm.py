"""The adding problem (Hochreiter & Schmidhuber 1997) with an LSTM of 128 units.

Inputs are T steps of (value uniform in [0, 1), marker); the two marked values, one in each
half, must be added. Always answering 1 scores MSE 1/6 ≈ 0.167 (``test_baseline_mse``).

Run:
  python -m experiments.main --config=experiments/configs/adding_lstm.py \
      --workdir=runs/adding_lstm [--config.data.length=200]

Expected: test MSE far below the baseline (``test_baseline_mse``, 0.156 on this test set) after
a plateau at it; LSTM solves the adding problem at T = 100 and beyond in Arjovsky et al. (2016)
and Le et al. (2015).
Measured (2-core CPU, shared): T = 100: test MSE 0.0034 after 12 epochs (2,400 steps); at the
baseline until step ~1,400, then 0.015 at epoch 8. 3.8 minutes in all. T = 200
(--config.data.length=200): still at the baseline after the default 12 epochs; with
--config.num_epochs=30 it leaves the baseline at step ~2,300 and ends at test MSE 0.00026
(baseline 0.165), about 25 s an epoch alone, 12.5 minutes in all. T = 500 with
--config.num_epochs=30: still at the baseline after 6,000 steps (test MSE 0.1618, baseline
0.1620; 26 minutes), where the 2-layer IndRNN (adding_indrnn.py) reaches 0.029 in 2,000 steps.
"""

from experiments.configs.common import adding_config


def get_config():
    config = adding_config(cell="lstm", units=128)
    config.num_epochs = 12
    config.learning_rate = 3e-3
    return config
