"""Embedded Reber grammar: is a string valid? A GRU of 30 units (exercise 8 of the RNN chapter
of Géron's Hands-On Machine Learning).

Strings ``B T <Reber string> T E`` or ``B P <Reber string> P E`` (valid), or such strings with one
symbol replaced (invalid), one-hot over BEPSTVX, 9 to about 50 steps, right-padded with
``lengths``; the GRU's output at each string's last valid step feeds 2 logits.

Run:
  python -m experiments.main --config=experiments/configs/reber_gru.py --workdir=runs/reber_gru

Expected: validation (test) accuracy 1.0, as in the book's solution (10,000 training and 2,000
validation strings, GRU 30, 20 epochs; it uses an embedding of size 5 and SGD with Nesterov
momentum, here one-hot inputs and Adam).
Measured (2-core CPU, shared): test accuracy 1.0 from epoch 7 to 20 (0.985 after 5); about 3 s
an epoch, 61 s in all. As in the book, test strings are drawn independently of the training
ones, so 77% of them (94% of the valid ones, 60% of the corrupted) also occur among the training
strings; on 4,658 fresh strings absent from training the trained model scored 0.998.
"""

from experiments.configs.common import reber_config


def get_config():
    return reber_config("reber", train_size=10_000, test_size=2_000, pool="last")
