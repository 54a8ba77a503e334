"""Tests of rnnjax/train/tasks/grammar.py: the Reber config trains end to end (tiny)."""

from pathlib import Path

import jax
import numpy as np
from trainruns import TINY_GENERATED as TINY

from rnnjax.train import evaluation, launch, tasks, train_and_evaluate

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "reber_gru.py"


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
