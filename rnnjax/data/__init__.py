"""Data: tfds datasets as numpy arrays (offline, no TensorFlow) and deterministic batching."""

from rnnjax.data._batching import batches, eval_batches, steps_per_epoch
from rnnjax.data._builders import FashionMnistIdx, MnistIdx
from rnnjax.data._load import class_count, load
from rnnjax.data._sequences import bucket_batches, pad_batch

__all__ = [
    "FashionMnistIdx",
    "MnistIdx",
    "batches",
    "bucket_batches",
    "class_count",
    "eval_batches",
    "load",
    "pad_batch",
    "steps_per_epoch",
]
