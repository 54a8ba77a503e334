"""Tests for experiments/benchmark.py (and its peers): tiny sizes, a couple of steps."""

import importlib.util
import json
import re

import pytest
from absl import app, flags
from absl.testing import flagsaver

from experiments import benchmark

KEYS = {"model", "framework", "mode", "device", "batch", "T"}
FIGURES = ("examples_per_s", "ms_per_step", "gflops", "peak_fraction")


def run_main(**values):
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    values = {"cpu_vector_width": "0"} | values  # this process's backend has started
    with flagsaver.flagsaver(**values):
        benchmark.main(["benchmark"])


def test_main_prints_and_writes_json_lines(tmp_path, capsys):
    frameworks = ["rnnjax_dp", "flax_linen"]  # the one-device runner differs by one flag
    if importlib.util.find_spec("torch") is not None:
        frameworks.append("torch")
    path = tmp_path / "bench.jsonl"
    run_main(
        models=["tiny"], frameworks=frameworks, steps=2, warmup=1, rounds=2, mode="both",
        json_out=str(path), peak_size=64,
    )  # fmt: skip
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    results = [line for line in lines if "framework" in line]
    assert {(r["framework"], r["mode"]) for r in results} == {
        (f, m) for f in frameworks for m in ("train", "infer")
    }
    for r in results:
        assert set(r) >= KEYS and all(r[k] > 0 for k in FIGURES), r
        low, high = r["examples_per_s_range"]
        assert 0 < low <= r["examples_per_s"] <= high, r
    ratios = [line for line in lines if "rnnjax_over_fastest_peer" in line]
    assert {r["mode"] for r in ratios} == {"train", "infer"}
    assert all(r["rnnjax_over_fastest_peer"] > 0 and r["ratio_at_fp32_peak"] > 0 for r in ratios)
    assert lines[-1]["peak_gflops"] > 0 and lines[-1]["peak_gflops_bfloat16"] > 0
    assert "rnnjax_dp / fastest peer" in out


def test_comparisons_against_the_fastest_peer_and_the_peak_bound():
    """Each of our variants over the fastest peer, and the ratio a run at the whole fp32 peak
    would reach: 1 / that peer's fraction of the peak."""

    def row(framework, examples_per_s, peak_fraction):
        return {"model": "m", "mode": "train", "framework": framework} | {
            "examples_per_s": examples_per_s, "peak_fraction": peak_fraction,
        }  # fmt: skip

    rows = [row("rnnjax_dp", 120, 0.6), row("flax_linen", 80, 0.4), row("torch", 100, 0.5)]
    (c,) = benchmark.comparisons(rows)
    assert c["ours"] == "rnnjax_dp" and c["fastest_peer"] == "torch"
    assert c["rnnjax_over_fastest_peer"] == 1.2 and c["ratio_at_fp32_peak"] == 2.0


def test_torch_gated_cells_train():
    pytest.importorskip("torch")
    for model in ("tiny_lstm", "tiny_gru"):
        (row,) = benchmark.measure_interleaved(model, ["torch"], True, 1, 1, 1, peak=1.0)
        assert row["ms_per_step"] > 0


def test_forward_flops_of_the_textbook_model():
    gates = 2 * 150 * 28 * (28 + 150) * 150  # simple RNN: one gate block
    assert benchmark.forward_flops(benchmark.MODELS["rnn150_t28"]) == gates + 2 * 150 * 150 * 10
    lstm, gru = benchmark.MODELS["lstm128_t28"], benchmark.MODELS["gru128_t28"]
    assert benchmark.forward_flops(lstm) - 2 * 150 * 128 * 10 == 4 * 2 * 150 * 28 * 156 * 128
    assert benchmark.forward_flops(gru) - 2 * 150 * 128 * 10 == 3 * 2 * 150 * 28 * 156 * 128
    # training: forward, weights' gradients, the carry's gradient; no gradient of the inputs
    textbook = benchmark.MODELS["rnn150_t28"]
    weights = 2 * 150 * 28 * 178 * 150 + 2 * 150 * 150 * 10
    carry = 2 * 150 * 28 * 150 * 150 + 2 * 150 * 150 * 10
    assert (
        benchmark.step_flops(textbook, train=True) == gates + 2 * 150 * 150 * 10 + weights + carry
    )


def test_memory_case_and_table():
    row = benchmark.memory_case(8, 4, 2)
    assert row["T"] == 8 and row["remat"] == 4
    assert row["peak_rss_gib"] >= row["baseline_rss_gib"] > 0
    fake = [
        {"T": 16384, "remat": 0, "peak_rss_gib": 5.0},
        {"T": 16384, "remat": 128, "peak_rss_gib": 1.5},
        {"T": 65536, "remat": 0, "peak_rss_gib": None, "error": "exit -9: "},
        {"T": 65536, "remat": 128, "peak_rss_gib": 2.5},
    ]
    text = benchmark.memory_table(fake, 128)
    assert "5.000" in text and "1.500" in text and "failed" in text and ": met" in text


def test_missing_peers_are_skipped_with_a_note(monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert benchmark.available(["rnnjax", "keras"]) == ["rnnjax"]
    assert "skipping keras" in capsys.readouterr().out


def test_unknown_framework_is_a_usage_error():
    with pytest.raises(app.UsageError, match="frameworks"):
        run_main(frameworks=["rnnjax", "tensorflow"])


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"steps": 0}, "--steps=0: 0 is not a positive integer"),
        ({"memory_lengths": ["0"]}, "--memory_lengths must be ints >= 1"),
        ({"remat": 0}, "--remat=0"),
    ],
)
def test_counts_that_would_divide_by_zero_or_time_nothing_are_refused(values, named):
    """``--steps=0`` died on a ZeroDivisionError after the warm-up; ``--memory_lengths=0``
    printed a table of empty runs."""
    with pytest.raises(flags.IllegalFlagValueError, match=re.escape(named)):
        run_main(**values)
