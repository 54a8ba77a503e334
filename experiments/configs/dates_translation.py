"""Dates in words to ISO dates ("April 22, 2019" -> "2019-04-22"), an LSTM encoder–decoder.

The exercise of Géron's chapter 16 (Hands-On Machine Learning, 2nd ed.): random dates
from the years 1000–9999, to be converted by a seq2seq model.

Run:
  python -m experiments.main --config=experiments/configs/dates_translation.py --workdir=runs/dates
With Luong attention (or see dates_attention.py):
  python -m experiments.main --config=experiments/configs/dates_translation.py \
      --workdir=runs/dates_luong --config.model.attention=luong

Expected: test exact match (greedy) near 1.0 (Géron's solution notebook gets nearly every
validation date right; not rechecked offline).
Measured (2 shared CPU cores, 20,000 training dates): test exact match 1.0 on 2,000 unseen dates
from epoch 8 (0.29 after epoch 1, 0.98 after 3), ~15 s an epoch, 3.3 min in all; beam search of
4 also 1.0 on 1,000 of them.
"""

from experiments.configs.common import translation_config


def get_config():
    config = translation_config("dates")
    config.num_epochs = 10
    return config
