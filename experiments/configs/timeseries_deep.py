"""The chapter's deep RNN with dropout on the time series: three simple RNN layers of 100.

Run:
  python -m experiments.main --config=experiments/configs/timeseries_deep.py \
      --workdir=runs/timeseries_deep

As experiments/configs/timeseries.py, with 3 stacked layers and dropout 0.1 between them (in
training only; evaluation and generation run without it).

Expected: no better than the single layer: in the book's notebook dropout does not help here
(Géron, Hands-On Machine Learning, chapter 14, "Applying Dropout").
Measured: test MSE 0.0913 after 1,500 iterations (best 0.054 at epoch 14; the constant rate
makes it jump between epochs; --config.lr_schedule=cosine ends at 0.0655). About 1.5 s an
epoch, 48 s in all on 2 shared CPU cores. Dropout hurts, as in the book: without it
(--config.model.dropout=0) the same 3 layers reach 0.044 (tanh) and 0.039 (ReLU); ReLU layers
with dropout 0.1 end at 0.25, their test MSE rising from epoch 9 while the train MSE falls.
Generated values fall into a fixed oscillation around -9.5 whatever the seed.
"""

from experiments.configs import timeseries


def get_config():
    config = timeseries.get_config()
    config.model.num_layers = 3
    config.model.dropout = 0.1
    config.model.cell_options = {}  # tanh, as the book's deep model (ReLU: see the header)
    return config
