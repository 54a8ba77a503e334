"""The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) with an LSTM of 128.

Ten symbols from an alphabet of 8, then T-1 blanks, a delimiter and ten blanks during which the
model must output the ten symbols (T+20 steps, a softmax over the 10 tokens at every step). The
memoryless baseline (blanks, then uniform guesses) has cross-entropy ``10·log(8)/(T+20)``
(``test_baseline_loss``); ``test_recall_accuracy`` scores the ten recalled symbols.

Run (T = 20, trains in minutes on a CPU):
  python -m experiments.main --config=experiments/configs/copy_lstm.py --workdir=runs/copy_lstm

The paper's setting (T = 100 and longer, batch 20; expect far more steps than here):
  ... --config.data.delay=100 --config.batch_size=20 --config.num_epochs=50

Expected: loss well under the memoryless baseline, 10·log(8)/40 = 0.520 at T = 20. Arjovsky et
al. (2016, Fig. 1) find LSTM hard to train on this task: near the baseline for long delays, with
their uRNN solving it.
Measured (2-core CPU, shared): T = 20: test loss 0.046 (baseline 0.520), recall accuracy 0.924
(1/8 is chance), all ten symbols right in 46% of the test sequences, after 20 epochs (8,000
steps, ~18 s an epoch, 6 minutes in all); not fully solved, and still improving when the cosine
schedule ran out. With learning_rate=5e-3: loss 0.146, recall accuracy 0.754, exact 4%.
"""

import ml_collections

from experiments.configs.common import base_config, recurrent_model


def get_config():
    config = base_config("copy")
    config.num_epochs = 20
    config.batch_size = 50
    config.learning_rate = 1e-2
    config.grad_clip_norm = 1.0
    config.data = ml_collections.ConfigDict()
    config.data.delay = 20  # T; the paper: 100, 500, 1000, 2000
    config.data.num_to_copy = 10  # K
    config.data.num_symbols = 8  # alphabet size A
    config.data.train_size = 20_000
    config.data.test_size = 2_000
    config.data.seed = 0  # train from (seed, 0), test from (seed, 1)
    config.model = recurrent_model(cell="lstm", units=128)
    return config
