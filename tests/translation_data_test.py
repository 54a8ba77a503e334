"""Tests for rnnjax/data/translation.py: vocabularies, the two problems and their arrays.

Truth: Python's ``datetime`` (parsing the words back must give the ISO date), integer addition
of the parsed operands, and decoding the arrays back to the strings they came from.
"""

import datetime

import numpy as np
import pytest

from rnnjax.data import translation
from rnnjax.data.translation import END, PAD, START, Vocabulary


def test_vocabulary_round_trips_and_pads():
    vocab = Vocabulary("ab-")
    tokens, lengths = vocab.encode(["ab", "", "-ba"], width=4)
    assert tokens.dtype == lengths.dtype == np.int32
    np.testing.assert_array_equal(lengths, [2, 0, 3])
    np.testing.assert_array_equal(tokens[0], [3, 4, PAD, PAD])
    assert vocab.decode(tokens) == ["ab", "", "-ba"]
    assert vocab.decode(np.array([[START, 3, END, 4]])) == ["a"]  # START skipped, END stops
    assert vocab.size == 6


def test_vocabulary_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'abc' has 3 characters, more than width 2"):
        Vocabulary("abc").encode(["abc"], width=2)
    with pytest.raises(ValueError, match=r"characters \['x'\] not in 'ab'"):
        Vocabulary("ab").encode(["ax"], width=4)


def test_dates_are_valid_and_formatted_like_the_exercise():
    words, iso = translation.date_pairs(500, np.random.default_rng(0))
    for text, target in zip(words, iso, strict=True):
        parsed = datetime.datetime.strptime(text, "%B %d, %Y").date()
        assert parsed.isoformat() == target and 1000 <= parsed.year <= 9999
        assert not text.split()[1].startswith("0")  # "April 2, 2019", as in the book
    assert len(set(iso)) > 490


def test_additions_are_correct():
    sources, targets = translation.addition_pairs(500, np.random.default_rng(0), max_digits=3)
    for source, target in zip(sources, targets, strict=True):
        a, b = source.split("+")
        assert max(len(a), len(b)) <= 3 and int(a) + int(b) == int(target)
        assert str(int(a)) == a  # no leading zeros


@pytest.mark.parametrize("name", translation.PROBLEMS)
def test_arrays_round_trip_and_lengths(name):
    problem = translation.problem(name)
    train, test = translation.splits(problem, 300, 100, seed=0)
    sources, targets = problem.pairs(300, np.random.default_rng([0, 0]))
    assert problem.source_vocab.decode(train["inputs"]) == sources
    assert problem.target_vocab.decode(train["targets"]) == targets
    assert problem.target_vocab.decode(train["decoder_inputs"]) == targets  # START skipped
    np.testing.assert_array_equal(train["source_lengths"], [len(s) for s in sources])
    np.testing.assert_array_equal(train["target_lengths"], [len(t) + 1 for t in targets])
    for split, n in ((train, 300), (test, 100)):
        assert {k: v.shape for k, v in split.items()} == {
            "inputs": (n, problem.source_width),
            "source_lengths": (n,),
            "decoder_inputs": (n, problem.target_width),
            "targets": (n, problem.target_width),
            "target_lengths": (n,),
        }
    rows = np.arange(300)
    assert np.all(train["targets"][rows, train["target_lengths"] - 1] == END)
    assert np.all(train["decoder_inputs"][:, 0] == START)
    shifted = np.where(train["targets"] == END, PAD, train["targets"])[:, :-1]
    np.testing.assert_array_equal(train["decoder_inputs"][:, 1:], shifted)


def test_test_split_is_reproducible_and_unseen_in_training():
    problem = translation.problem("addition", max_digits=2)
    train, test = translation.splits(problem, 2000, 500, seed=3)
    again = translation.splits(problem, 2000, 500, seed=3)[1]
    np.testing.assert_array_equal(test["inputs"], again["inputs"])
    seen = set(problem.source_vocab.decode(train["inputs"]))
    assert not seen & set(problem.source_vocab.decode(test["inputs"]))


def test_problem_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"one of \('dates', 'addition'\), got 'sums'"):
        translation.problem("sums")
    for digits in (0, 19):  # operands of 19 digits would not fit numpy's int64 draws
        with pytest.raises(ValueError, match=rf"max_digits must be in \[1, 18\], got {digits}"):
            translation.problem("addition", max_digits=digits)
    with pytest.raises(ValueError, match="could not draw 50 test examples"):
        translation.splits(translation.problem("addition", max_digits=1), 2000, 50, seed=0)
