"""Dates in words to ISO dates with Luong attention and input feeding.

The same task and sizes as ``dates_translation.py``; the decoder attends over the encoder's
outputs at every step (``rnnjax.encoder_decoder(..., attention="luong", input_feeding=True)``).

Run:
  python -m experiments.main --config=experiments/configs/dates_attention.py \
      --workdir=runs/dates_attention

Expected: test exact match near 1.0, in fewer epochs than without attention.
Measured (2 shared CPU cores): test exact match 1.0 on 2,000 unseen dates after the first epoch
(0.29 without attention) and 0.998–1.0 from then on, ~20 s an epoch, 4.5 min for 10 epochs;
beam search of 4 also 1.0 on 1,000 of them.
"""

from experiments.configs.common import translation_config


def get_config():
    config = translation_config("dates", attention="luong", input_feeding=True)
    config.num_epochs = 10
    return config
