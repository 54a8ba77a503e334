"""Tests of rnnjax/train/tasks/memory.py: the adding and copy configs train end to end (tiny)."""

from pathlib import Path

import jax
import numpy as np
import pytest
from trainruns import TINY_GENERATED as TINY

from rnnjax.train import launch, tasks, train_and_evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def tiny_run(name: str, overrides: dict, workdir: Path) -> list[dict]:
    config = launch.load_config(str(CONFIGS / f"{name}.py"), TINY | overrides)
    records = train_and_evaluate(config, workdir)
    assert (workdir / "metrics.jsonl").exists() and (workdir / "learning_curves.png").exists()
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    return records


@pytest.mark.parametrize("name", ["adding_lstm", "adding_indrnn"])
def test_adding_trains_and_reports_the_baseline(name, tmp_path):
    records = tiny_run(name, {"data.length": 12}, tmp_path)
    config = launch.load_config(str(CONFIGS / f"{name}.py"), TINY | {"data.length": 12})
    expected = np.mean((tasks.build(config).test["targets"] - 1.0) ** 2)
    assert records[-1]["test_baseline_mse"] == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(records[-1]["test_loss"])


def output_shape(task) -> tuple:
    params = jax.eval_shape(task.model.init, jax.random.key(0))
    return jax.eval_shape(task.forward, params, task.test).shape


def test_adding_model_maps_sequences_to_one_value():
    config = launch.load_config(str(CONFIGS / "adding_lstm.py"), TINY | {"data.length": 12})
    task = tasks.build(config)
    assert task.train["inputs"].shape == (200, 12, 2) and task.test["targets"].shape == (30, 1)
    assert output_shape(task) == (30, 1)


def test_indrnn_recurrent_max_follows_the_length():
    config = launch.load_config(str(CONFIGS / "adding_indrnn.py"), {"data.length": 500})
    assert config.model.cell_options.recurrent_max == pytest.approx(2 ** (1 / 500))
    assert config.model.cell == "indrnn" and config.model.num_layers == 2


def test_copy_trains_and_scores_the_recall(tmp_path):
    records = tiny_run("copy_lstm", {"data.delay": 5, "data.num_to_copy": 3}, tmp_path)
    last = records[-1]
    assert last["test_baseline_loss"] == pytest.approx(3 * np.log(8) / 11)
    assert 0 <= last["test_exact_match"] <= last["test_recall_accuracy"] <= 1
    # past the first epoch the model outputs blanks on the delay steps, so it beats chance
    assert last["test_loss"] < np.log(10)


def test_copy_model_outputs_logits_at_every_step():
    config = launch.load_config(
        str(CONFIGS / "copy_lstm.py"), TINY | {"data.delay": 5, "data.num_to_copy": 3}
    )
    task = tasks.build(config)
    assert output_shape(task) == (30, 11, 10) and task.test["labels"].shape == (30, 11)
    assert task.headline == "recall_accuracy"


def test_unknown_memory_task_is_named():
    from rnnjax.train.tasks import memory

    config = launch.load_config(str(CONFIGS / "copy_lstm.py"))
    config.task = "paste"
    with pytest.raises(ValueError, match="one of \\['adding', 'copy'\\], got 'paste'"):
        memory.build(config)
