"""Generated long-memory benchmarks: the adding problem and the copy task.

Both come from Hochreiter & Schmidhuber (1997) in the form later papers use (Le et al. 2015,
Arjovsky et al. 2016, Li et al. 2018). Examples are drawn with ``np.random.default_rng(seed)``,
so a seed fixes a split; draw train and test from different seeds.
"""

import numpy as np


def adding_problem(num_examples: int, length: int, *, seed) -> dict[str, np.ndarray]:
    """The adding problem: add the two marked values of a long sequence.

    Each step has a value channel, uniform in [0, 1), and a marker channel that is 1 at exactly
    two steps, one in each half (``[0, T//2)`` and ``[T//2, T)``); the target is the sum of the
    two marked values. Always answering 1 scores an MSE of 1/6, the variance of that sum.

    Args:
      num_examples: N.
      length: sequence length T >= 2.
      seed: anything ``np.random.default_rng`` takes.

    Returns:
      ``{"inputs": float32 [N, T, 2] (value, marker), "targets": float32 [N, 1]}``.

    Example::

      train = adding_problem(10_000, 100, seed=(0, 0))
    """
    _check_count("num_examples", num_examples, minimum=1)
    _check_count("length", length, minimum=2)
    rng = np.random.default_rng(seed)
    values = rng.random((num_examples, length), dtype=np.float32)
    half = length // 2
    rows = np.arange(num_examples)
    first = rng.integers(0, half, num_examples)
    second = rng.integers(half, length, num_examples)
    markers = np.zeros((num_examples, length), np.float32)
    markers[rows, first] = markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return {"inputs": np.stack([values, markers], axis=-1), "targets": targets[:, None]}


BLANK = 0  # copy-task token codes: 0 blank, 1..num_symbols the symbols, then the delimiter


def copy_task(
    num_examples: int, *, delay: int, num_to_copy: int = 10, num_symbols: int = 8, seed
) -> dict[str, np.ndarray]:
    """The copy task (Arjovsky et al. 2016): recall K symbols after a delay of T steps.

    Inputs are K symbols drawn uniformly from ``1..num_symbols``, then T-1 blanks, the
    delimiter (token ``num_symbols + 1``) and K blanks; the labels are blank for the first T+K
    steps and then the K symbols, so every sequence has T+2K steps. A model that outputs blanks
    and then uniform guesses has a cross-entropy of ``K·log(num_symbols) / (T + 2K)``
    (``copy_baseline_loss``).

    Args:
      num_examples: N.
      delay: T >= 1, the paper's T (steps from the end of the symbols to the delimiter's end).
      num_to_copy: K >= 1.
      num_symbols: alphabet size >= 2 (8 in the paper).
      seed: anything ``np.random.default_rng`` takes.

    Returns:
      ``{"inputs": float32 one-hot [N, T+2K, num_symbols+2], "labels": int32 [N, T+2K]}``.
    """
    _check_count("num_examples", num_examples, minimum=1)
    _check_count("delay", delay, minimum=1)
    _check_count("num_to_copy", num_to_copy, minimum=1)
    _check_count("num_symbols", num_symbols, minimum=2)
    rng = np.random.default_rng(seed)
    symbols = rng.integers(1, num_symbols + 1, (num_examples, num_to_copy), dtype=np.int32)
    length = delay + 2 * num_to_copy
    tokens = np.full((num_examples, length), BLANK, np.int32)
    tokens[:, :num_to_copy] = symbols
    tokens[:, delay + num_to_copy - 1] = num_symbols + 1
    labels = np.full((num_examples, length), BLANK, np.int32)
    labels[:, -num_to_copy:] = symbols
    inputs = np.eye(num_symbols + 2, dtype=np.float32)[tokens]
    return {"inputs": inputs, "labels": labels}


def copy_baseline_loss(*, delay: int, num_to_copy: int = 10, num_symbols: int = 8) -> float:
    """The memoryless cross-entropy per step of the copy task, ``K·log(A) / (T + 2K)``."""
    return num_to_copy * float(np.log(num_symbols)) / (delay + 2 * num_to_copy)


def _check_count(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
