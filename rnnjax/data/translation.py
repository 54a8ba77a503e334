"""Toy translation data: dates in words to ISO dates, and addition, as padded token arrays.

"dates": "April 22, 2019" -> "2019-04-22", days drawn uniformly from 1000-01-01 to 9999-12-31
(the date-format exercise of Géron's chapter 16). "addition": "123+45" -> "168", operands drawn
uniformly from [0, 10**max_digits) (Flax's seq2seq example).

Each split is drawn from its own seed, and the test split leaves out sources that are in the
training split, so test accuracy measures generalisation, not recall.

Example:
  >>> problem = translation.problem("dates")
  >>> train, test = translation.splits(problem, 10000, 2000, seed=0)
  >>> problem.target_vocab.decode(train["targets"][:2])   # e.g. ['2019-04-22', '1463-11-02']
"""

import datetime
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

PAD, START, END = 0, 1, 2
SPECIALS = 3  # tokens before the first character


class Vocabulary(NamedTuple):
    """Characters to tokens: 0 pads, 1 starts and 2 ends a sequence, then one per character."""

    chars: str

    @property
    def size(self) -> int:
        return SPECIALS + len(self.chars)

    def encode(self, strings: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int32 tokens ``[N, width]`` and int32 ``lengths [N]`` of ``strings``."""
        index = {c: SPECIALS + i for i, c in enumerate(self.chars)}
        tokens = np.full((len(strings), width), PAD, np.int32)
        for row, text in enumerate(strings):
            if len(text) > width:
                raise ValueError(f"{text!r} has {len(text)} characters, more than width {width}")
            unknown = sorted(set(text) - set(index))
            if unknown:
                raise ValueError(f"{text!r} has characters {unknown} not in {self.chars!r}")
            tokens[row, : len(text)] = [index[c] for c in text]
        return tokens, np.array([len(s) for s in strings], np.int32)

    def decode(self, tokens: np.ndarray) -> list[str]:
        """Strings of ``tokens [N, L]``, each read up to its first END or PAD (START skipped)."""
        out = []
        for row in np.asarray(tokens):
            chars = []
            for token in row:
                if token in (END, PAD):
                    break
                if token >= SPECIALS:
                    chars.append(self.chars[token - SPECIALS])
            out.append("".join(chars))
        return out


class Problem(NamedTuple):
    """A translation problem: vocabularies, padded widths, and ``pairs(n, rng)`` that draws
    ``n`` (source, target) string pairs. ``target_width`` includes the END token."""

    name: str
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    source_width: int
    target_width: int
    pairs: Callable[[int, np.random.Generator], tuple[list[str], list[str]]]


MONTHS = [  # spelt out: strftime's %B follows the locale
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
FIRST_DAY, LAST_DAY = datetime.date(1000, 1, 1).toordinal(), datetime.date(9999, 12, 31).toordinal()


def date_pairs(n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """``n`` dates as ("April 22, 2019", "2019-04-22"), uniform over years 1000–9999."""
    days = rng.integers(FIRST_DAY, LAST_DAY + 1, n)
    dates = [datetime.date.fromordinal(int(d)) for d in days]
    words = [f"{MONTHS[d.month - 1]} {d.day}, {d.year}" for d in dates]
    return words, [d.isoformat() for d in dates]


def addition_pairs(
    n: int, rng: np.random.Generator, max_digits: int = 3
) -> tuple[list[str], list[str]]:
    """``n`` sums as ("123+45", "168"), operands uniform in ``[0, 10**max_digits)``."""
    a, b = rng.integers(0, 10**max_digits, (2, n))
    return [f"{x}+{y}" for x, y in zip(a, b, strict=True)], [str(x) for x in a + b]


PROBLEMS = ("dates", "addition")
DIGITS = "0123456789"


def problem(name: str, *, max_digits: int = 3) -> Problem:
    """The "dates" or "addition" problem (``max_digits`` per operand for addition)."""
    if name == "dates":
        letters = "".join(sorted(set("".join(MONTHS))))
        longest = max(len(m) for m in MONTHS) + len(" 22, 2019")
        return Problem(
            name,
            source_vocab=Vocabulary(" ," + DIGITS + letters),
            target_vocab=Vocabulary("-" + DIGITS),
            source_width=longest,
            target_width=len("2019-04-22") + 1,
            pairs=date_pairs,
        )
    if name == "addition":
        if not 1 <= max_digits <= 18:  # operands below 10**18 fit numpy's int64 draws
            raise ValueError(f"max_digits must be in [1, 18], got {max_digits}")
        return Problem(
            name,
            source_vocab=Vocabulary("+" + DIGITS),
            target_vocab=Vocabulary(DIGITS),
            source_width=2 * max_digits + 1,
            target_width=max_digits + 2,  # the sum has at most one digit more, then END
            pairs=lambda n, rng: addition_pairs(n, rng, max_digits),
        )
    raise ValueError(f"problem name must be one of {PROBLEMS}, got {name!r}")


def arrays(problem: Problem, sources: list[str], targets: list[str]) -> dict[str, np.ndarray]:
    """Token arrays for teacher forcing, all int32 and ``[N, ...]``.

    ``inputs [N, source_width]`` and ``source_lengths``; ``decoder_inputs`` (START + target) and
    ``targets`` (target + END), both ``[N, target_width]``; ``target_lengths`` counts the END.
    """
    if len(sources) != len(targets):
        raise ValueError(f"need one target per source, got {len(sources)} and {len(targets)}")
    inputs, source_lengths = problem.source_vocab.encode(sources, problem.source_width)
    body, lengths = problem.target_vocab.encode(targets, problem.target_width - 1)
    rows = np.arange(len(targets))
    out = np.concatenate([body, np.full((len(targets), 1), PAD, np.int32)], axis=1)
    out[rows, lengths] = END
    decoder_inputs = np.concatenate([np.full((len(targets), 1), START, np.int32), body], axis=1)
    return {
        "inputs": inputs,
        "source_lengths": source_lengths,
        "decoder_inputs": decoder_inputs,
        "targets": out,
        "target_lengths": lengths + 1,
    }


def splits(problem: Problem, train_size: int, test_size: int, *, seed: int) -> tuple[dict, dict]:
    """Train and test arrays from the streams ``[seed, 0]`` and ``[seed, 1]``; test sources
    that also occur in training are redrawn."""
    train_sources, train_targets = problem.pairs(train_size, np.random.default_rng([seed, 0]))
    seen, rng = set(train_sources), np.random.default_rng([seed, 1])
    sources, targets = [], []
    for _ in range(10):
        drawn = problem.pairs(test_size, rng)
        fresh = [(s, t) for s, t in zip(*drawn, strict=True) if s not in seen]
        sources += [s for s, _ in fresh]
        targets += [t for _, t in fresh]
        if len(sources) >= test_size:
            test = arrays(problem, sources[:test_size], targets[:test_size])
            return arrays(problem, train_sources, train_targets), test
    raise ValueError(
        f"could not draw {test_size} test examples unseen in {train_size} training ones for "
        f"{problem.name!r}; ask for fewer examples (or more digits for addition)"
    )
