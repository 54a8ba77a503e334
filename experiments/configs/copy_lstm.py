"""The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) with an LSTM of 128.

Ten symbols from an alphabet of 8, then T-1 blanks, a delimiter and ten blanks during which the
model must output the ten symbols (T+20 steps, a softmax over the 10 tokens at every step). The
memoryless baseline (blanks, then uniform guesses) has cross-entropy ``10·log(8)/(T+20)``
(``test_baseline_loss``); ``test_recall_accuracy`` scores the ten recalled symbols.

Run (T = 20, trains in minutes on a CPU):
  python -m experiments.main --config=experiments/configs/copy_lstm.py --workdir=runs/copy_lstm

The paper's setting (T = 100, 500, 1000 and 2000; batch 20; RMSProp there):
  ... --config.data.delay=100 --config.batch_size=20 --config.num_epochs=...

Expected: at T = 20, loss well under the baseline 0.173 and recall accuracy near 1.
Arjovsky et al. (2016, Fig. 1) report that LSTM gets stuck at the baseline for T >= 500 and
goes below it slowly at T = 100; their uRNN solves all of them.
Measured (2-core CPU): see BUILD_NOTES.md.
"""

import ml_collections

from experiments.configs.common import base_config, recurrent_model


def get_config():
    config = base_config("copy")
    config.num_epochs = 10
    config.batch_size = 50
    config.data = ml_collections.ConfigDict()
    config.data.delay = 20  # T; the paper: 100, 500, 1000, 2000
    config.data.num_to_copy = 10  # K
    config.data.num_symbols = 8  # alphabet size A
    config.data.train_size = 20_000
    config.data.test_size = 2_000
    config.data.seed = 0  # train from (seed, 0), test from (seed, 1)
    config.model = recurrent_model(cell="lstm", units=128)
    return config
