"""Tests for rnnjax/train/tasks/translation.py: the translation configs train end to end.

A config runs a few steps on tiny sizes through ``load_config`` and ``train_and_evaluate``: the
loss falls, the metrics and the report's files are written. Compiling is nearly all the time,
so two configs train (attention on dates, none on addition: every code path of the task); every
config builds, and its model's logits have the target's shape.
"""

import json

import jax
import numpy as np
import pytest

from rnnjax.data import translation as data
from rnnjax.train import launch, tasks, train_and_evaluate
from rnnjax.train.tasks import translation

CONFIGS = ["dates_translation", "dates_attention", "addition_seq2seq"]
TINY = {
    "num_epochs": 2,
    "batch_size": 32,
    "learning_rate": 1e-2,
    "data.train_size": 160,
    "data.test_size": 40,
    "model.cell": "gru",  # compiles faster than the configs' LSTM (fewer orthogonal inits)
    "model.units": 16,
    "model.embed_size": 8,
    "decoding.beam_examples": 24,
    "decoding.beam_size": 2,
    "decoding.samples": 3,
    "progress": False,
}


def tiny_config(name, **overrides):
    return launch.load_config(f"experiments/configs/{name}.py", TINY | overrides)


@pytest.mark.parametrize("name", ["dates_attention", "addition_seq2seq"])
def test_config_trains_and_reports(name, tmp_path):
    records = train_and_evaluate(tiny_config(name), tmp_path)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["train_loss"] < records[0]["train_loss"]
    for key in ("test_exact_match", "test_token_accuracy", "test_loss"):
        assert all(0.0 <= r[key] < np.inf for r in records)
    beam = json.loads((tmp_path / translation.BEAM_FILE).read_text())
    assert beam["examples"] == 24 and beam["beam_size"] == 2
    assert 0.0 <= beam["beam_exact_match"] <= 1.0
    samples = (tmp_path / translation.SAMPLES_FILE).read_text().splitlines()
    assert len(samples) == 1 + 3 and samples[0].startswith("source")
    assert (tmp_path / translation.ATTENTION_FILE).exists() == name.endswith("attention")


def test_attention_map_rows_are_distributions_over_the_source():
    config = tiny_config("dates_attention")
    task = tasks.build(config)
    params = task.model.init(jax.random.key(0))
    example = {k: v[0] for k, v in task.test.items()}
    weights = translation.attention_map(task.model, params, example)
    assert weights.shape == (example["target_lengths"], example["source_lengths"])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_cover_every_target_step(name):
    config = tiny_config(name)
    task = tasks.build(config)
    problem = data.problem(config.data.name)
    batch = {k: v[:5] for k, v in task.test.items()}
    params = jax.eval_shape(task.model.init, jax.random.key(0))
    logits = jax.eval_shape(task.forward, params, batch)
    assert logits.shape == (5, problem.target_width, problem.target_vocab.size)


def test_exact_match_needs_every_token_and_the_end():
    batch = {"targets": np.tile([5, 6, 2], (3, 1)), "target_lengths": np.full(3, 3)}
    tokens = np.array([[5, 6, 2], [5, 7, 2], [5, 6, 6]])
    lengths = np.array([2, 2, 3])
    np.testing.assert_array_equal(translation.exact_match(tokens, lengths, batch), [1, 0, 0])


def test_bad_encoder_is_named():
    with pytest.raises(ValueError, match=r"encoder must be one of \('rnn', 'bidirectional'\)"):
        tasks.build(tiny_config("dates_translation", **{"model.encoder": "cnn"}))


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("decoding.beam_size", 0, "decoding.beam_size must be an int >= 1, got 0"),
        ("decoding.beam_examples", -1, "decoding.beam_examples must be an int >= 1, got -1"),
        ("decoding.samples", -2, "decoding.samples must be an int >= 0, got -2"),
        ("data.test_size", 0, "data.test_size must be an int >= 1, got 0"),
    ],
)
def test_a_bad_decoding_or_size_setting_is_named_before_training(key, value, named):
    """The report decodes once training ends, which a bad setting would only reach then (a
    beam of 0 was greedy decoding reported as beam search)."""
    with pytest.raises(ValueError, match=named):
        tasks.build(tiny_config("dates_translation", **{key: value}))
