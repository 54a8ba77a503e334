"""Training and inference speed of rnnjax against its peers, and memory against sequence length.

  python -m experiments.benchmark [--models=rnn150_t28,lstm128_t28,gru128_t28,lstm128_t784]
      [--frameworks=rnnjax,flax_linen,flax_nnx,keras,torch] [--mode=both] [--json_out=PATH]
  python -m experiments.benchmark --memory [--memory_lengths=1024,4096,16384 --remat=128]

Every framework trains the same model (recurrent layer, the last step's output, dense 10,
softmax cross-entropy, Adam 1e-3) on the same random batch, in this process. For each (model,
mode) every framework runs ``--warmup`` steps (compilation included); then ``--rounds``
round-robin rounds time ``--steps`` steps of each framework in turn between two
``block_until_ready``, and the median round is reported with the range of the rounds (a drift of
the machine's speed, large on shared 2-core machines, then hits every framework alike). rnnjax
runs its default path: ``seq2vec(rnn(cell), dense(10))`` with ``rnnjax.train.make_train_step``
(which also computes the gradient norm and a finiteness guard) on one device; ``rnnjax_dp`` is
the launcher's default, the batch split over the devices with a ``layout``, on a CPU one device
per core (``distributed.split_cpu``, run first; the others still run on device 0 alone), and
in training ``--steps_per_call`` steps per call (``config.steps_per_call``; the figures are
per step); the ``_bf16`` variants use ``compute_dtype="bfloat16"``. Like the launcher, the run
first asks XLA:CPU for 512-bit vectors (``--cpu_vector_width``,
``distributed.prefer_cpu_vector_width``), a process setting that the JAX peers (Flax, Keras)
compile with too. Peers are optional and skipped with a note when not installed; Keras runs on
the JAX backend (``train_on_batch`` / ``predict_on_batch``, which return to the host every
step), PyTorch on the CPU with ``torch.set_num_threads(cores)``.

FLOPs count the matmuls only: a forward pass is ``2·B·T·(D+H)·G·H + 2·B·H·10`` (G gate blocks:
1 simple, 3 GRU, 4 LSTM; input size D, H units, dense head 10); a training step 3x that, less
``2·B·T·D·G·H``, the gradient with respect to the inputs, which no framework computes (the data
are not differentiated). The peak is the best GFLOP/s of a ``--peak_size`` square fp32
``jnp.dot`` on JAX's default device: XLA's large-matmul rate when the run starts, an estimate of
the hardware's (it varies by 10-40% between runs on shared machines). The same product of
bfloat16 operands summed in float32 is reported too (``peak_gflops_bfloat16``): what the
``_bf16`` variants' matmuls could reach; their ``peak_fraction`` is still of the fp32 peak.

Output: a table, then JSON lines: one per result (``model, framework, mode, device, batch, T,
examples_per_s, examples_per_s_range, ms_per_step, gflops, peak_fraction``), one per (model,
mode) with ``rnnjax_over_fastest_peer`` (examples/s of rnnjax ÷ the fastest peer's; > 1 means
rnnjax is faster) and ``ratio_at_fp32_peak`` (the ratio a float32 run would reach at the whole
measured peak, ``1 / peak_fraction`` of the fastest peer: an estimate of the most a float32
run could reach, as good as the peak's), and one with ``peak_gflops`` and
``peak_gflops_bfloat16``. ``--memory`` runs each (T, remat) training step of an LSTM 128 (batch
``--memory_batch``, 1 input feature) in a fresh subprocess and reports its peak RSS (``ru_maxrss``,
Linux; the baseline before the step is the runtime's own) and, on an accelerator, the device's peak
memory (``device_peak_gib``), which is then what the goal is checked on. Expected: with remat, T =
16384 under 4 GiB.
"""

import functools
import importlib.util
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import rnnjax
from experiments.benchmark_peers import CLASSES, NEEDS, PEERS
from rnnjax.train import distributed


class Spec(NamedTuple):
    cell: str  # simple, lstm or gru
    units: int
    length: int  # T
    features: int  # D
    batch: int


MODELS = {
    "rnn150_t28": Spec("simple", 150, 28, 28, 150),
    "lstm128_t28": Spec("lstm", 128, 28, 28, 150),
    "gru128_t28": Spec("gru", 128, 28, 28, 150),
    "lstm128_t784": Spec("lstm", 128, 784, 1, 64),
    "tiny": Spec("simple", 8, 5, 3, 4),  # for tests
    "tiny_lstm": Spec("lstm", 8, 5, 3, 4),
    "tiny_gru": Spec("gru", 8, 5, 3, 4),
}
GATES = {"simple": 1, "gru": 3, "lstm": 4}
FRAMEWORKS = (
    *("rnnjax", "rnnjax_bf16", "rnnjax_dp", "rnnjax_dp_bf16"),
    *("flax_linen", "flax_nnx", "keras", "torch"),
)
# Our variants: (matmuls' compute_dtype, data-parallel over the devices: on a CPU one per core)
OURS = {
    "rnnjax": (None, False),
    "rnnjax_bf16": ("bfloat16", False),
    "rnnjax_dp": (None, True),
    "rnnjax_dp_bf16": ("bfloat16", True),
}
MODES = {"train": (True,), "infer": (False,), "both": (True, False)}
MEMORY_UNITS = 128
MEMORY_GOAL_GIB, MEMORY_GOAL_T = 4, 16384

_MODELS = flags.DEFINE_list("models", list(MODELS)[:4], f"Models, among {list(MODELS)}.")
_FRAMEWORKS = flags.DEFINE_list("frameworks", list(FRAMEWORKS), f"Among {FRAMEWORKS}.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per round.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5, "Round-robin rounds over the frameworks; the median is reported.", lower_bound=1
)
_WARMUP = flags.DEFINE_integer(
    "warmup", 5, "Untimed steps first (compilation included).", lower_bound=1
)
_MODE = flags.DEFINE_enum("mode", "both", list(MODES), "Training, inference or both.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the JSON lines to this file.")
_PEAK_SIZE = flags.DEFINE_integer(
    "peak_size", 2048, "Size N of the N x N fp32 peak matmul.", lower_bound=1
)
_MEMORY = flags.DEFINE_bool("memory", False, "Measure peak RSS against T, remat off and on.")
_MEMORY_LENGTHS = flags.DEFINE_list("memory_lengths", ["1024", "4096", "16384"], "Lengths T.")
_MEMORY_BATCH = flags.DEFINE_integer(
    "memory_batch", 16, "Batch size of the memory runs.", lower_bound=1
)
_REMAT = flags.DEFINE_integer(
    "remat", 128, "Remat block k of the memory runs (k steps kept).", lower_bound=1
)
_STEPS_PER_CALL = flags.DEFINE_integer(
    "steps_per_call",
    10,
    "Training steps per call of the rnnjax_dp variants, as the launcher's config.steps_per_call.",
    lower_bound=1,
)
_VECTOR_WIDTH = flags.DEFINE_enum(
    "cpu_vector_width",
    "512",
    [str(bits) for bits in distributed.CPU_VECTOR_WIDTHS],
    "XLA:CPU's SIMD width in bits, as the launcher sets it (for every JAX framework of the run); "
    "0 = XLA's own.",
)
_MEMORY_CASE = flags.DEFINE_string("memory_case", None, "Internal: 'T,remat', one child run.")
flags.register_validator(
    "memory_lengths",
    lambda lengths: all(t.isdigit() and int(t) >= 1 for t in lengths),
    "--memory_lengths must be ints >= 1",
)


def forward_flops(spec: Spec) -> int:
    """Matmul FLOPs of one forward pass over a batch (see the module docstring)."""
    gates = 2 * spec.batch * spec.length * (spec.features + spec.units) * GATES[spec.cell]
    return gates * spec.units + 2 * spec.batch * spec.units * CLASSES


def step_flops(spec: Spec, train: bool) -> int:
    """Matmul FLOPs of one inference or training step: the backward pass has two products per
    forward one (the weights' gradient and the gradient of what they multiplied) but the
    inputs' gradient."""
    forward = forward_flops(spec)
    if not train:
        return forward
    inputs_gradient = 2 * spec.batch * spec.length * spec.features * GATES[spec.cell] * spec.units
    return 3 * forward - inputs_gradient


def sig(x: float) -> float:
    """``x`` to 4 significant figures (so that tiny figures stay positive)."""
    return float(f"{x:.4g}")


def random_batch(spec: Spec):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((spec.batch, spec.length, spec.features), np.float32)
    return xs, rng.integers(0, CLASSES, spec.batch).astype(np.int32)


class Runner(NamedTuple):
    run: Callable[[], Any]  # one call of a framework's step
    steps: int = 1  # training steps each call runs


def rnnjax_runner(
    cell: str,
    units: int,
    xs,
    labels,
    train: bool,
    compute_dtype=None,
    data_parallel: bool = False,
    steps_per_call: int = 1,
    **rnn_options,
) -> Runner:
    """The library's default path, with batches as dicts already on the device;
    ``compute_dtype="bfloat16"`` is its mixed-precision option. ``data_parallel``: the
    launcher's default, the batch split over as many of the devices as divide it (``layout``).
    Training runs ``steps_per_call`` steps per call (on the same batch, stacked)."""
    layer = rnnjax.rnn(
        getattr(rnnjax.cells, cell)(units, compute_dtype=compute_dtype), **rnn_options
    )
    head = rnnjax.dense(CLASSES, compute_dtype=compute_dtype)
    model = rnnjax.seq2vec(layer, head, in_size=xs.shape[-1])
    tx = optax.adam(1e-3)
    init = functools.partial(rnnjax.train.init_state, model, tx, jax.random.key(0))
    batch = {"inputs": xs, "labels": labels}
    if data_parallel:
        count = distributed.most_devices(len(xs), jax.device_count())
        state, layout = distributed.sharded_state(init, distributed.make_mesh(count))
    else:
        state, layout = init(), None
    if not train:
        params, apply = state.params, jax.jit(model.apply)
        inputs = _on_devices(batch, layout and layout.batch)["inputs"]
        return Runner(lambda: apply(params, inputs))
    if steps_per_call > 1:
        batch = {key: np.stack([value] * steps_per_call) for key, value in batch.items()}
    batch = _on_devices(batch, layout and (layout.steps if steps_per_call > 1 else layout.batch))
    step = rnnjax.train.make_train_step(
        model, tx, rnnjax.train.softmax_xent, layout=layout, steps_per_call=steps_per_call
    )

    def run():
        nonlocal state
        state, _ = step(state, batch)
        return state

    return Runner(run, steps_per_call)


def _on_devices(batch, sharding):
    """``batch`` on the default device, or split by ``sharding``."""
    if sharding is None:
        return jax.tree.map(jnp.asarray, batch)
    return distributed.global_batch(batch, sharding)


def seconds_per_step(run, steps: int, warmup: int) -> float:
    """Mean wall time of ``steps`` calls of ``run`` after ``warmup`` (compiling) calls."""
    out = None
    for _ in range(warmup):
        out = run()
    jax.block_until_ready(out)  # non-JAX leaves (torch, numpy) pass through: they are done
    if not steps:
        return 0.0
    start = time.perf_counter()
    for _ in range(steps):
        out = run()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def matmul_peak_gflops(size: int, repeats: int = 5, dtype=jnp.float32) -> float:
    """Best GFLOP/s of an N x N ``jnp.dot`` on JAX's default device, of ``dtype`` operands
    accumulated in float32 (bfloat16: the rate ``compute_dtype="bfloat16"`` can reach)."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    dot = jax.jit(functools.partial(jnp.dot, preferred_element_type=jnp.float32))
    jax.block_until_ready(dot(a, a))
    best = min(seconds_per_step(lambda: dot(a, a), 1, 0) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def make_runner(name: str, framework: str, train: bool) -> Runner:
    """``framework``'s step on model ``name``, as it runs by default."""
    spec = MODELS[name]
    if framework in OURS:
        dtype, data_parallel = OURS[framework]
        steps_per_call = _STEPS_PER_CALL.value if data_parallel else 1  # one device: as peers
        args = (*spec[:2], *random_batch(spec), train, dtype, data_parallel, steps_per_call)
        return rnnjax_runner(*args)
    return Runner(PEERS[framework](spec.cell, spec.units, *random_batch(spec), train))


def result(name: str, framework: str, train: bool, seconds: list[float], peak: float) -> dict:
    """One JSON line from the per-round seconds per step (the median is reported)."""
    spec = MODELS[name]
    median = statistics.median(seconds)
    gflops = step_flops(spec, train) / median / 1e9
    device = "cpu" if framework == "torch" else jax.devices()[0].device_kind
    return {"model": name, "framework": framework, "mode": "train" if train else "infer"} | {
        "device": device,
        "batch": spec.batch,
        "T": spec.length,
        "examples_per_s": sig(spec.batch / median),
        "examples_per_s_range": [sig(spec.batch / max(seconds)), sig(spec.batch / min(seconds))],
        "ms_per_step": sig(1000 * median),
        "gflops": sig(gflops),
        "peak_fraction": sig(gflops / peak),
    }


def measure_interleaved(name, frameworks, train, steps, warmup, rounds, peak):
    """Every framework on one (model, mode), timed in ``rounds`` round-robin rounds of ``steps``
    steps each, so that slow drifts of the machine's speed hit every framework alike."""
    runners = {f: make_runner(name, f, train) for f in frameworks}
    for runner in runners.values():
        seconds_per_step(runner.run, 0, warmup)
    seconds = {f: [] for f in frameworks}
    for _ in range(rounds):
        for framework, (run, per_call) in runners.items():
            calls = max(1, round(steps / per_call))
            seconds[framework].append(seconds_per_step(run, calls, 0) / per_call)
    return [result(name, f, train, seconds[f], peak) for f in frameworks]


def comparisons(rows):
    """Per (model, mode) and each of our variants: its examples/s over the fastest peer's."""
    out = []
    for key in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        group = [r for r in rows if (r["model"], r["mode"]) == key]
        peers = [r for r in group if r["framework"] not in OURS]
        for ours in (r for r in group if r["framework"] in OURS):
            if not peers:
                break
            best = max(peers, key=lambda r: r["examples_per_s"])
            ratio = ours["examples_per_s"] / best["examples_per_s"]
            out.append({"model": key[0], "mode": key[1], "ours": ours["framework"]})
            out[-1] |= {
                "fastest_peer": best["framework"],
                "rnnjax_over_fastest_peer": round(ratio, 3),
                "ratio_at_fp32_peak": round(1 / best["peak_fraction"], 3),
            }
    return out


def table(rows, ratios) -> str:
    lines = [
        f"{'model':<14}{'mode':<7}{'framework':<16}{'examples/s':>12}{'range of rounds':>20}"
        f"{'ms/step':>10}{'GFLOP/s':>10}{'of peak':>9}"
    ]
    for r in rows:
        low, high = r["examples_per_s_range"]
        lines.append(
            f"{r['model']:<14}{r['mode']:<7}{r['framework']:<16}{r['examples_per_s']:>12.1f}"
            f"{f'{low:.0f}-{high:.0f}':>20}"
            f"{r['ms_per_step']:>10.3f}{r['gflops']:>10.2f}{r['peak_fraction']:>9.2%}"
        )
    for c in ratios:
        lines.append(
            f"{c['model']} {c['mode']}: {c['ours']} / fastest peer ({c['fastest_peer']}) = "
            f"{c['rnnjax_over_fastest_peer']:.2f}x (at the fp32 matmul peak: "
            f"{c['ratio_at_fp32_peak']:.2f}x)"
        )
    return "\n".join(lines)


def memory_case(length: int, remat: int, batch: int) -> dict:
    """One LSTM training step at length T (compile included); this process's peak RSS."""
    spec = Spec("lstm", MEMORY_UNITS, length, 1, batch)
    row = {"T": length, "remat": remat, "batch": batch, "baseline_rss_gib": peak_rss_gib()}
    options = {"remat": remat} if remat else {}
    runner = rnnjax_runner("lstm", MEMORY_UNITS, *random_batch(spec), True, **options)
    jax.block_until_ready(runner.run())
    row["peak_rss_gib"] = peak_rss_gib()
    stats = jax.devices()[0].memory_stats()  # None on the CPU
    if stats and "peak_bytes_in_use" in stats:
        row["device_peak_gib"] = sig(stats["peak_bytes_in_use"] / 2**30)
    return row


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (``ru_maxrss`` is in KiB on Linux)."""
    return sig(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def memory_rows(lengths, remat: int, batch: int):
    """Runs every (T, remat off/on) in a fresh ``python -m experiments.benchmark`` child."""
    rows = []
    for length in lengths:
        for k in (0, remat):
            command = [sys.executable, "-m", "experiments.benchmark"]
            command += [f"--memory_case={length},{k}", f"--memory_batch={batch}"]
            root = Path(__file__).resolve().parents[1]
            done = subprocess.run(command, cwd=root, capture_output=True, text=True)
            if done.returncode == 0:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:  # e.g. killed for memory: a result too, and the other cases still run
                error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"T": length, "remat": k, "batch": batch, "peak_rss_gib": None})
                rows[-1]["error"] = f"exit {done.returncode}: {error}"
    return rows


def gib(value: float | None) -> str:
    return "failed" if value is None else f"{value:.3f}"


def memory_table(rows, remat: int) -> str:
    lines = [f"{'T':>7}{'no remat GiB':>14}{f'remat={remat} GiB':>16}"]
    for length in dict.fromkeys(r["T"] for r in rows):
        rss = {r["remat"]: gib(r["peak_rss_gib"]) for r in rows if r["T"] == length}
        lines.append(f"{length:>7}{rss[0]:>14}{rss[remat]:>16}")
    for r in rows:
        if r["remat"] and r["T"] == MEMORY_GOAL_T:
            peak = r.get("device_peak_gib", r["peak_rss_gib"])  # an accelerator's own memory
            verdict = "met" if (peak or math.inf) < MEMORY_GOAL_GIB else "NOT met"
            lines.append(f"goal: remat, T={MEMORY_GOAL_T} under {MEMORY_GOAL_GIB} GiB: {verdict}")
    return "\n".join(lines)


def emit(lines, json_out: str | None) -> None:
    for line in lines:
        print(json.dumps(line))
    if json_out:
        Path(json_out).write_text("".join(json.dumps(line) + "\n" for line in lines))


def run_speed(models, frameworks, modes, steps: int, warmup: int, rounds: int, peak_size: int):
    """Every (model, mode, framework) measured; returns the JSON lines."""
    peak = matmul_peak_gflops(peak_size)
    bf16_peak = matmul_peak_gflops(peak_size, dtype=jnp.bfloat16)
    rows = []
    for name in models:
        for train in modes:
            rows += measure_interleaved(name, frameworks, train, steps, warmup, rounds, peak)
    ratios = comparisons(rows)
    print(table(rows, ratios))
    print(f"matmul peak: {peak:.0f} GFLOP/s float32, {bf16_peak:.0f} bfloat16 (float32 sums)")
    peaks = {"peak_gflops": round(peak, 2), "peak_gflops_bfloat16": round(bf16_peak, 2)}
    device = jax.devices()[0].device_kind
    return rows + ratios + [peaks | {"peak_size": peak_size, "device": device}]


def available(frameworks):
    """The frameworks whose package is installed, with a note for each one skipped."""
    found = []
    for name in frameworks:
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            print(f"# skipping {name}: `{NEEDS[name]}` is not installed (pip install '.[bench]')")
        else:
            found.append(name)
    return found


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.prefer_cpu_vector_width(int(_VECTOR_WIDTH.value))  # before any device is used
    if _MEMORY_CASE.value:  # a child of --memory: one JSON line, nothing else
        length, remat = (int(v) for v in _MEMORY_CASE.value.split(","))
        print(json.dumps(memory_case(length, remat, _MEMORY_BATCH.value)))
        return
    if _MEMORY.value:
        lengths = [int(t) for t in _MEMORY_LENGTHS.value]
        rows = memory_rows(lengths, _REMAT.value, _MEMORY_BATCH.value)
        print(memory_table(rows, _REMAT.value))
        emit(rows, _JSON_OUT.value)
        return
    for flag, allowed in ((_MODELS, MODELS), (_FRAMEWORKS, FRAMEWORKS)):
        if unknown := set(flag.value) - set(allowed):
            raise app.UsageError(f"--{flag.name} must be among {list(allowed)}, got {unknown}")
    frameworks = available(_FRAMEWORKS.value)
    args = (_STEPS.value, _WARMUP.value, _ROUNDS.value, _PEAK_SIZE.value)
    emit(run_speed(_MODELS.value, frameworks, MODES[_MODE.value], *args), _JSON_OUT.value)


if __name__ == "__main__":
    distributed.split_cpu()  # one CPU device per core, for the data-parallel variants
    app.run(main)
