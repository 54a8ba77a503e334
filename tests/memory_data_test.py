"""Tests of rnnjax/data/memory.py: the adding problem and copy task generators."""

import numpy as np
import pytest

from rnnjax.data import memory


def test_adding_marks_one_step_in_each_half_and_targets_their_sum():
    length = 9  # odd: the halves are [0, 4) and [4, 9)
    data = memory.adding_problem(2000, length, seed=0)
    inputs, targets = data["inputs"], data["targets"]
    assert inputs.shape == (2000, length, 2) and targets.shape == (2000, 1)
    assert inputs.dtype == targets.dtype == np.float32
    values, markers = inputs[..., 0], inputs[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert (markers[:, : length // 2].sum(1) == 1).all()
    assert (markers[:, length // 2 :].sum(1) == 1).all()
    assert ((values >= 0) & (values < 1)).all()
    np.testing.assert_allclose(targets[:, 0], (values * markers).sum(1), rtol=1e-6)
    # every position of each half gets marked
    assert len(np.unique(markers.argmax(1))) == length // 2
    assert len(np.unique(length - 1 - markers[:, ::-1].argmax(1))) == length - length // 2


def test_adding_baseline_of_always_one_is_a_sixth():
    targets = memory.adding_problem(200_000, 4, seed=1)["targets"]
    assert np.mean((targets - 1.0) ** 2) == pytest.approx(1 / 6, abs=3e-3)


def test_generators_are_fixed_by_the_seed():
    a, b = memory.adding_problem(50, 10, seed=(0, 0)), memory.adding_problem(50, 10, seed=(0, 0))
    c = memory.adding_problem(50, 10, seed=(0, 1))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    d, e = (memory.copy_task(50, delay=5, seed=s)["labels"] for s in (3, 4))
    np.testing.assert_array_equal(d, memory.copy_task(50, delay=5, seed=3)["labels"])
    assert not np.array_equal(d, e)


def test_copy_layout_and_targets():
    delay, k, symbols = 6, 4, 5
    data = memory.copy_task(500, delay=delay, num_to_copy=k, num_symbols=symbols, seed=0)
    inputs, labels = data["inputs"], data["labels"]
    length = delay + 2 * k
    assert inputs.shape == (500, length, symbols + 2) and labels.shape == (500, length)
    assert inputs.dtype == np.float32 and labels.dtype == np.int32
    assert (inputs.sum(-1) == 1).all()  # one-hot
    tokens = inputs.argmax(-1)
    shown = tokens[:, :k]
    assert shown.min() == 1 and shown.max() == symbols  # the whole alphabet, never blank
    blank, delimiter = 0, symbols + 1
    assert (tokens[:, k : k + delay - 1] == blank).all()
    assert (tokens[:, k + delay - 1] == delimiter).all()
    assert (tokens[:, k + delay :] == blank).all()
    assert (labels[:, : delay + k] == blank).all()
    np.testing.assert_array_equal(labels[:, -k:], shown)


def test_copy_baseline_is_the_memoryless_cross_entropy():
    delay, k, symbols = 30, 10, 8
    labels = memory.copy_task(10, delay=delay, num_to_copy=k, num_symbols=symbols, seed=0)["labels"]
    # blanks with certainty until the recall, then uniform over the symbols
    probabilities = np.zeros((delay + 2 * k, symbols + 2))
    probabilities[: delay + k, 0] = 1.0
    probabilities[delay + k :, 1 : symbols + 1] = 1 / symbols
    picked = np.take_along_axis(
        np.broadcast_to(probabilities, (10, *probabilities.shape)), labels[..., None], -1
    )
    expected = -np.log(picked).mean()
    baseline = memory.copy_baseline_loss(delay=delay, num_to_copy=k, num_symbols=symbols)
    assert baseline == pytest.approx(expected) == pytest.approx(10 * np.log(8) / 50)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: memory.adding_problem(0, 10, seed=0), "num_examples must be an integer >= 1"),
        (lambda: memory.adding_problem(5, 1, seed=0), "length must be an integer >= 2, got 1"),
        (lambda: memory.adding_problem(5, 10.0, seed=0), "length must be an integer >= 2"),
        (lambda: memory.copy_task(5, delay=0, seed=0), "delay must be an integer >= 1, got 0"),
        (lambda: memory.copy_task(5, delay=3, num_symbols=1, seed=0), "num_symbols must be"),
        (lambda: memory.copy_task(5, delay=3, num_to_copy=True, seed=0), "num_to_copy must be"),
    ],
)
def test_bad_arguments_name_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
