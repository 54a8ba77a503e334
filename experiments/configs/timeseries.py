"""The chapter's time series: a simple ReLU RNN of 100 units predicts the next value at every step.

Run:
  python -m experiments.main --config=experiments/configs/timeseries.py --workdir=runs/timeseries

The series t·sin(t)/3 + 2·sin(5t) on [0, 30] at resolution 0.1, cut into windows of 20 steps
whose targets are the inputs shifted by one (5,000 training windows from seed 0, 1,000 test
windows from seed 1). As the book: an OutputProjectionWrapper to one value per step, MSE, Adam at
a constant 0.001, batch 50, 1,500 iterations (15 epochs of 100 steps). The report draws a test
window's predictions (prediction.png) and 300 values generated from a seed (generation.png).

Expected: MSE ≈ 0.04 on the training batch after 1,500 iterations (Géron, Hands-On Machine
Learning, chapter 14, "Training to Predict Time Series").
Measured: test MSE 0.0426 after 1,500 iterations (train MSE 0.0438, the mean over the last
epoch's batches); 0.05 from epoch 6. About 0.4 s an epoch and 30 s in all, compile included, on
2 shared CPU cores. generation.png: seeded with a test window, 300 generated values keep the
series' two frequencies and roughly its growing amplitude, drifting in phase.
"""

import ml_collections

from experiments.configs.common import base_config


def get_config():
    config = base_config("timeseries")
    config.num_epochs = 15
    config.batch_size = 50
    config.lr_schedule = "constant"
    config.checkpoint_every_steps = 500
    config.generate_steps = 300  # values generated after the seed in the report

    config.data = ml_collections.ConfigDict()
    config.data.n_steps = 20  # window length
    config.data.train_windows = 5000  # 100 steps per epoch at batch 50
    config.data.test_windows = 1000
    config.data.seed = 0  # training windows' start times
    config.data.test_seed = 1  # test windows' start times: another draw
    config.data.t_min = 0.0
    config.data.t_max = 30.0
    config.data.resolution = 0.1

    config.model = ml_collections.ConfigDict()
    config.model.cell = "simple"  # any name of rnnjax.train.builders.CELLS
    config.model.units = 100
    config.model.num_layers = 1
    config.model.dropout = 0.0  # between stacked layers, in training only
    config.model.cell_options = {"activation": "relu"}  # the book's BasicRNNCell(relu)
    config.model.compute_dtype = "float32"  # bfloat16: mixed-precision matmuls
    return config
