"""Embedded Reber grammar strings, valid or corrupted (the exercise of Géron's RNN chapter).

A Reber string walks the grammar's graph from B to E; an embedded one wraps it as
``B T <reber> T E`` or ``B P <reber> P E``, so a model must remember the second symbol across the
whole inner string to tell the two apart. Invalid strings are valid ones with one symbol replaced
(the book's approach). No single replacement turns a valid string into another valid one:
from every state the two branches read different symbols and lead to states whose languages are
disjoint, and the wrapping symbols must match.
"""

import numpy as np

SYMBOLS = "BEPSTVX"

# state: ((symbol, next state), ...); a walk starts at 0 and ends after E (next state None).
REBER = {
    0: (("B", 1),),
    1: (("T", 2), ("P", 3)),
    2: (("S", 2), ("X", 4)),
    3: (("T", 3), ("V", 5)),
    4: (("X", 3), ("S", 6)),
    5: (("P", 4), ("V", 6)),
    6: (("E", None),),
}


def reber_string(rng: np.random.Generator) -> str:
    """A random Reber string: every branch of the graph taken with equal probability."""
    state, symbols = 0, []
    while state is not None:
        edges = REBER[state]
        symbol, state = edges[int(rng.random() * len(edges))]
        symbols.append(symbol)
    return "".join(symbols)


def embedded_reber_string(rng: np.random.Generator) -> str:
    """A random embedded Reber string, ``B T <reber> T E`` or ``B P <reber> P E``."""
    wrap = "TP"[int(rng.random() * 2)]
    return f"B{wrap}{reber_string(rng)}{wrap}E"


def is_embedded_reber(string: str) -> bool:
    """Whether ``string`` is an embedded Reber string."""
    if len(string) < 4 or string[0] != "B" or string[-1] != "E" or string[1] != string[-2]:
        return False
    return string[1] in "TP" and _is_reber(string[2:-2])


def _is_reber(string: str) -> bool:
    state = 0
    for symbol in string:
        if state is None:
            return False
        state = dict(REBER[state]).get(symbol, -1)
        if state == -1:
            return False
    return state is None


def corrupted_string(rng: np.random.Generator) -> str:
    """An embedded Reber string with one symbol, chosen uniformly, replaced by another."""
    string = embedded_reber_string(rng)
    position = int(rng.integers(len(string)))
    others = SYMBOLS.replace(string[position], "")
    return string[:position] + others[int(rng.integers(len(others)))] + string[position + 1 :]


def embedded_reber_strings(num_examples: int, *, seed) -> tuple[list[str], np.ndarray]:
    """``num_examples`` strings, half valid (label 1) and half corrupted (label 0), shuffled.

    Args:
      num_examples: N >= 2.
      seed: anything ``np.random.default_rng`` takes; use different seeds for train and test.

    Returns:
      ``(strings, labels int32 [N])``.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 2:
        raise ValueError(f"num_examples must be an integer >= 2, got {num_examples!r}")
    rng = np.random.default_rng(seed)
    valid = num_examples // 2
    strings = [embedded_reber_string(rng) for _ in range(valid)]
    strings += [corrupted_string(rng) for _ in range(num_examples - valid)]
    labels = np.array([1] * valid + [0] * (num_examples - valid), np.int32)
    order = rng.permutation(num_examples)
    return [strings[i] for i in order], labels[order]


def one_hot(strings: list[str]) -> dict[str, np.ndarray]:
    """Strings over ``SYMBOLS`` as right-padded one-hot rows.

    Returns:
      ``{"inputs": float32 [N, T, 7] (zeros past each end), "lengths": int32 [N]}``, T the
      longest string's length.
    """
    if not strings:
        raise ValueError(f"strings must be a non-empty list, got {strings!r}")
    unknown = set("".join(strings)) - set(SYMBOLS)
    if unknown:
        raise ValueError(f"strings must use only {SYMBOLS!r}, got also {sorted(unknown)}")
    lengths = np.array([len(s) for s in strings], np.int32)
    inputs = np.zeros((len(strings), lengths.max(), len(SYMBOLS)), np.float32)
    for row, string in zip(inputs, strings, strict=True):
        row[np.arange(len(string)), [SYMBOLS.index(c) for c in string]] = 1.0
    return {"inputs": inputs, "lengths": lengths}


def embedded_reber_dataset(num_examples: int, *, seed) -> dict[str, np.ndarray]:
    """``embedded_reber_strings`` one-hot encoded: ``{"inputs", "lengths", "labels"}``."""
    strings, labels = embedded_reber_strings(num_examples, seed=seed)
    return one_hot(strings) | {"labels": labels}


def reber_language_dataset(num_examples: int, *, seed) -> dict[str, np.ndarray]:
    """Valid embedded Reber strings for next-symbol prediction (a language model).

    Returns:
      ``inputs`` int32 ``[N, T]``: each string's symbol ids (``SYMBOLS.index``) but its last
      (E); ``targets`` ``[N, T]``: all but its first (B); both right-padded with 0;
      ``lengths`` and ``target_lengths`` int32 ``[N]``: its length - 1; ``optimal_loss``
      float32 ``[N]``: the grammar's own mean cross-entropy over the string's predictions,
      ``ln 2`` for each of its branch points (the loss of a model that knows the grammar).
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be an integer >= 1, got {num_examples!r}")
    rng = np.random.default_rng(seed)
    strings = [embedded_reber_string(rng) for _ in range(num_examples)]
    lengths = np.array([len(s) - 1 for s in strings], np.int32)
    inputs = np.zeros((num_examples, lengths.max()), np.int32)
    targets = np.zeros_like(inputs)
    for row, string in enumerate(strings):
        ids = [SYMBOLS.index(c) for c in string]
        inputs[row, : len(ids) - 1], targets[row, : len(ids) - 1] = ids[:-1], ids[1:]
    branches = np.array([sum(n == 2 for n in next_symbol_choices(s)) for s in strings])
    return {
        "inputs": inputs,
        "targets": targets,
        "lengths": lengths,
        "target_lengths": lengths,
        "optimal_loss": (np.log(2.0) * branches / lengths).astype(np.float32),
    }


def next_symbol_choices(string: str) -> list[int]:
    """How many symbols the grammar allows after each prefix ``string[:t + 1]`` of an embedded
    Reber string, for t = 0 .. len - 2: 2 after B (T or P) and at the inner string's branching
    states, 1 everywhere else."""
    choices = [2, 1]  # after B: T or P; after the wrap symbol: the inner B
    state = 0
    for symbol in string[2:-2]:
        state = dict(REBER[state])[symbol]
        choices.append(1 if state is None else len(REBER[state]))
    return choices + [1]  # after the closing wrap symbol: E
