"""Tests of rnnjax/train/tasks/grammar.py: the Reber configs train end to end (tiny); the
language model's generated strings are checked by the grammar."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from trainruns import TINY_GENERATED as TINY

import rnnjax
from rnnjax.data import grammar as reber
from rnnjax.train import evaluation, launch, tasks, train_and_evaluate
from rnnjax.train.tasks import grammar

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
CONFIG = CONFIGS / "reber_gru.py"
LM_CONFIG = CONFIGS / "reber_lm.py"


def test_reber_trains_and_gets_a_confusion_matrix(tmp_path):
    records = train_and_evaluate(launch.load_config(str(CONFIG), TINY), tmp_path)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert 0 <= records[-1]["test_accuracy"] <= 1
    result = evaluation.evaluate_workdir(tmp_path)
    assert np.sum(result["confusion_matrix"]) == 30
    assert result["test_accuracy"] == records[-1]["test_accuracy"]
    assert (tmp_path / "confusion_matrix.png").exists()


def test_reber_batches_are_padded_with_lengths_and_pooled_at_the_last_valid_step():
    task = tasks.build(launch.load_config(str(CONFIG), TINY))
    assert set(task.train) == {"inputs", "lengths", "labels"} and task.num_classes == 2
    params = task.model.init(jax.random.key(0))
    shortest = int(task.test["lengths"].argmin())
    batch = {k: np.stack([v[shortest]] * 2) for k, v in task.test.items()}
    batch["inputs"][1, batch["lengths"][1] :] = 1.0  # garbage past the end of the second copy
    logits = task.forward(params, batch)
    assert logits.shape == (2, 2)
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-6)  # read at the last valid step


def test_the_language_model_trains_and_its_generated_strings_are_checked(tmp_path):
    overrides = TINY | {"generation.samples": 50, "generation.max_length": 30}
    records = train_and_evaluate(launch.load_config(str(LM_CONFIG), overrides), tmp_path)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert 0 < records[-1]["test_optimal_loss"] < records[-1]["test_loss"]
    generated = json.loads((tmp_path / grammar.GENERATED_FILE).read_text())
    assert generated["samples"] == 50 and generated["temperature"] == 1.0
    examples = generated["examples"]
    assert len(examples) == 20 and all(s.startswith("B") for s in examples)
    valid = np.mean([reber.is_embedded_reber(s) for s in examples])
    assert 0 <= generated["valid_fraction"] <= 1 and 0 <= valid <= 1


def test_generated_strings_end_after_their_second_end_symbol():
    """A string is cut where an embedded Reber string ends: its inner string ends with the
    first E. A model that always answers T, then E, ..., shows every case."""
    vocab = len(reber.SYMBOLS)

    def apply(params, tokens, carry=None, *, lengths=None, key=None):
        step = tokens.shape[1] if carry is None else carry + 1  # steps seen so far
        ends = jnp.isin(step, jnp.array(params["ends_after"]))
        symbol = jnp.where(ends, reber.SYMBOLS.index("E"), reber.SYMBOLS.index("T"))
        logits = jnp.where(jnp.arange(vocab) == symbol, 0.0, -jnp.inf)
        return step, jnp.broadcast_to(logits, (*tokens.shape, vocab))

    stepper = rnnjax.Layer(lambda key, size: ({}, vocab), apply)
    settings = ml_collections.ConfigDict({"samples": 2, "max_length": 8, "temperature": 1.0})
    cases = {(2, 4): "BTETE", (3,): "BTTETTTTT", (): "BTTTTTTTT"}
    for ends_after, want in cases.items():
        params = {"ends_after": ends_after or (-1,)}
        got = grammar.generate_strings(stepper, params, jax.random.key(0), settings)
        assert got == [want, want], ends_after


@pytest.mark.parametrize(
    "override, message",
    [
        ({"generation.samples": 0}, "generation.samples must be an int >= 1, got 0"),
        ({"generation.temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
    ],
)
def test_bad_generation_settings_fail_when_the_task_is_built(override, message):
    with pytest.raises(ValueError, match=message):
        tasks.build(launch.load_config(str(LM_CONFIG), TINY | override))
