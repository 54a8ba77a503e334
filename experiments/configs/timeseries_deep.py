"""The chapter's deep RNN with dropout on the time series: three simple RNN layers of 100.

Run:
  python -m experiments.main --config=experiments/configs/timeseries_deep.py \
      --workdir=runs/timeseries_deep

As experiments/configs/timeseries.py, with 3 stacked layers and dropout 0.1 between them (in
training only; evaluation and generation run without it).

Expected: no better than the single layer; the book finds dropout does not help on this task
(Géron, Hands-On Machine Learning, chapter 14, "Applying Dropout").
Measured: (filled in after the reproduction).
"""

from experiments.configs import timeseries


def get_config():
    config = timeseries.get_config()
    config.model.num_layers = 3
    config.model.dropout = 0.1
    config.model.cell_options = {}  # tanh, as the book's deep model (ReLU layers: see below)
    return config
