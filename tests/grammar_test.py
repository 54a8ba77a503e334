"""Tests of rnnjax/data/grammar.py: embedded Reber strings, valid and corrupted, and the
language-model dataset with its optimal loss."""

import numpy as np
import pytest

from rnnjax.data import grammar

# An independent checker: the whole embedded grammar as one automaton. States are named by where
# they are: "wrap-T"/"wrap-P" carry the second symbol through the inner Reber string ("in1".."in6").
INNER = {
    ("start", "B"): "in1",
    ("in1", "T"): "in2", ("in1", "P"): "in3",
    ("in2", "S"): "in2", ("in2", "X"): "in4",
    ("in3", "T"): "in3", ("in3", "V"): "in5",
    ("in4", "X"): "in3", ("in4", "S"): "in6",
    ("in5", "P"): "in4", ("in5", "V"): "in6",
    ("in6", "E"): "done",
}  # fmt: skip
TABLE = {("begin", "B"): "second", ("second", "T"): ("T", "start"), ("second", "P"): ("P", "start")}
for wrap in "TP":
    TABLE |= {((wrap, a), s): (wrap, b) for (a, s), b in INNER.items()}
    TABLE[((wrap, "done"), wrap)] = "last"
TABLE[("last", "E")] = "accept"


def accepts(string: str) -> bool:
    state = "begin"
    for symbol in string:
        state = TABLE.get((state, symbol))
        if state is None:
            return False
    return state == "accept"


def decode(inputs, lengths) -> list[str]:
    rows = zip(inputs, lengths, strict=True)
    return ["".join(grammar.SYMBOLS[i] for i in row[:n].argmax(-1)) for row, n in rows]


def test_the_checker_knows_the_book_examples():
    assert accepts("BTBTXSETE") and accepts("BPBPVVEPE") and accepts("BTBPTTVPXVVETE")
    assert not accepts("BTBTXSEPE") and not accepts("BTBTXSET") and not accepts("BTBTSSETE")


def test_valid_strings_are_accepted_and_cover_the_grammar():
    rng = np.random.default_rng(0)
    strings = [grammar.embedded_reber_string(rng) for _ in range(3000)]
    assert all(accepts(s) for s in strings)
    assert all(grammar.is_embedded_reber(s) for s in strings)
    assert {s[1] for s in strings} == {"T", "P"}
    assert min(map(len, strings)) == 9
    assert set("".join(strings)) == set("BEPSTVX")
    allowed = {(a, b) for (_, a), q in TABLE.items() for (r, b) in TABLE if r == q}
    used = {(a, b) for s in strings for a, b in zip(s, s[1:], strict=False)}
    assert used == allowed  # every path of the grammar is taken


def test_corrupted_strings_are_rejected_and_differ_from_a_valid_one_in_one_symbol():
    for seed in range(3000):
        bad = grammar.corrupted_string(np.random.default_rng(seed))
        good = grammar.embedded_reber_string(np.random.default_rng(seed))  # the one corrupted
        assert not accepts(bad) and not grammar.is_embedded_reber(bad)
        assert len(bad) == len(good) and sum(a != b for a, b in zip(bad, good, strict=True)) == 1


def test_dataset_labels_lengths_and_padding():
    data = grammar.embedded_reber_dataset(1001, seed=(0, 0))
    inputs, lengths, labels = data["inputs"], data["lengths"], data["labels"]
    assert inputs.shape == (1001, lengths.max(), 7) and inputs.dtype == np.float32
    assert lengths.dtype == labels.dtype == np.int32 and lengths.min() >= 9
    assert labels.sum() == 500 and 0 < labels[:10].sum() < 10  # half valid, shuffled
    steps = np.arange(inputs.shape[1])
    np.testing.assert_array_equal(inputs.sum(-1), (steps < lengths[:, None]).astype(np.float32))
    strings = decode(inputs, lengths)
    np.testing.assert_array_equal([len(s) for s in strings], lengths)
    np.testing.assert_array_equal([accepts(s) for s in strings], labels == 1)


def test_dataset_is_fixed_by_the_seed():
    a, b, c = (grammar.embedded_reber_strings(50, seed=s) for s in ((0, 0), (0, 0), (0, 1)))
    assert a[0] == b[0] and a[0] != c[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_one_hot_round_trips():
    data = grammar.one_hot(["BTBTXSETE", "BPE"])
    assert decode(data["inputs"], data["lengths"]) == ["BTBTXSETE", "BPE"]
    assert not data["inputs"][1, 3:].any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: grammar.embedded_reber_strings(1, seed=0), "num_examples must be an integer >= 2"),
        (lambda: grammar.embedded_reber_dataset(2.5, seed=0), "got 2.5"),
        (lambda: grammar.one_hot([]), "non-empty list"),
        (lambda: grammar.reber_language_dataset(0, seed=0), "integer >= 1, got 0"),
        (lambda: grammar.one_hot(["BTA", "BZ"]), r"only 'BEPSTVX', got also \['A', 'Z'\]"),
    ],
)
def test_bad_arguments_name_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def choices_by_the_checker(string: str) -> list[int]:
    """How many symbols the independent automaton accepts after each proper prefix."""
    counts, state = [], "begin"
    for symbol in string[:-1]:
        state = TABLE[(state, symbol)]
        counts.append(sum((state, s) in TABLE for s in grammar.SYMBOLS))
    return counts


def test_language_dataset_shifts_valid_strings_and_knows_their_branch_points():
    data = grammar.reber_language_dataset(300, seed=4)
    assert set(data) == {"inputs", "targets", "lengths", "target_lengths", "optimal_loss"}
    np.testing.assert_array_equal(data["target_lengths"], data["lengths"])
    assert data["inputs"].dtype == data["targets"].dtype == np.int32
    assert grammar.next_symbol_choices("BTBTXSETE") == [2, 1, 2, 2, 2, 1, 1, 1]  # by hand
    for inputs, targets, n, optimal in zip(
        data["inputs"], data["targets"], data["lengths"], data["optimal_loss"], strict=True
    ):
        string = "".join(grammar.SYMBOLS[i] for i in inputs[:n]) + "E"
        assert accepts(string)
        np.testing.assert_array_equal(targets[:n], [grammar.SYMBOLS.index(c) for c in string[1:]])
        assert not inputs[n:].any() and not targets[n:].any()
        choices = choices_by_the_checker(string)
        assert grammar.next_symbol_choices(string) == choices
        assert optimal == pytest.approx(np.log(2) * choices.count(2) / n, rel=1e-6)


def test_a_strings_frequency_is_one_half_per_branch_point():
    """The optimal loss assumes each branch is taken with probability 1/2: "BTBTXSETE" has 4
    branch points, so the generator draws it 1/16 of the time."""
    rng = np.random.default_rng(0)
    draws = 16_000
    count = sum(grammar.embedded_reber_string(rng) == "BTBTXSETE" for _ in range(draws))
    p = 2.0 ** -grammar.next_symbol_choices("BTBTXSETE").count(2)
    assert abs(count / draws - p) < 5 * np.sqrt(p * (1 - p) / draws)
