"""Training speed of linear cells: parallel (associative scan) vs sequential (lax.scan) unroll.

  python -m experiments.parallel_scan_benchmark --lengths=64,256,784,4096 --repeats=20
      [--compute_dtype=bfloat16]

One training step is the jitted gradient of a mean-squared-output loss w.r.t. the params
(forward and backward; ``--compute_dtype`` sets the cells' matmuls), timed after a compiling
call, with ``block_until_ready``, the two forms alternately; the median of ``--repeats`` runs
of each is reported. Prints a table, one JSON line per (cell, T) and, per cell, the crossover:
the T from which the parallel form is faster, interpolated in log-log between the measured
lengths. Expected on an accelerator (issue
"Linear recurrences trained in parallel over time"): the parallel form ≥ 5x faster at T = 784
and T = 4096.
"""

import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

import rnnjax

CELLS = {
    "min_gru": rnnjax.cells.min_gru,
    "min_lstm": rnnjax.cells.min_lstm,
    "lru": rnnjax.cells.lru,
}

_CELLS = flags.DEFINE_list("cells", list(CELLS), f"Cells to time, among {list(CELLS)}.")
_LENGTHS = flags.DEFINE_list("lengths", ["64", "256", "784", "4096"], "Sequence lengths T.")
flags.register_validator(
    "lengths",
    lambda lengths: all(t.isdigit() and int(t) >= 1 for t in lengths),
    "--lengths must be ints >= 1",
)
_BATCH = flags.DEFINE_integer("batch", 16, "Sequences per batch.", lower_bound=1)
_UNITS = flags.DEFINE_integer("units", 128, "Hidden units.", lower_bound=1)
_INPUT_SIZE = flags.DEFINE_integer("input_size", 8, "Input features per step.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats", 10, "Timed steps per measurement (median taken).", lower_bound=1
)
_COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype",
    "float32",
    ["float32", "bfloat16"],
    "The cells' matmuls (float32 accumulation; the scans stay float32).",
)


def both_forms_ms(cell, length: int, batch: int, input_size: int, repeats: int) -> dict:
    """Median milliseconds of one jitted forward+backward pass of each form (``{parallel:
    ms}``), compilation excluded; the two are timed alternately, so that a drift of the
    machine's speed hits both alike."""
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), input_size)
    xs = jax.random.normal(jax.random.key(1), (batch, length, input_size))

    def step(parallel):
        def loss(params, xs):
            _, ys = rnnjax.unroll(cell, params, xs, parallel=parallel)
            return jnp.mean(ys**2)

        return jax.jit(jax.grad(loss))

    steps = {parallel: step(parallel) for parallel in (True, False)}
    for run in steps.values():
        jax.block_until_ready(run(params, xs))  # compiles
    times = {parallel: [] for parallel in steps}
    for _ in range(repeats):
        for parallel, run in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(run(params, xs))
            times[parallel].append(time.perf_counter() - start)
    return {parallel: 1000 * statistics.median(t) for parallel, t in times.items()}


def benchmark(
    cells, lengths, *, batch: int, units: int, input_size: int, repeats: int, compute_dtype=None
):
    """One row per (cell, T): ms per step of each form and the parallel speedup."""
    rows = []
    for name in cells:
        cell = CELLS[name](units, compute_dtype=compute_dtype)
        for length in lengths:
            ms = both_forms_ms(cell, length, batch, input_size, repeats)
            rows.append(
                {
                    "cell": name,
                    "T": length,
                    "compute_dtype": compute_dtype or "float32",
                    "parallel_ms": round(ms[True], 4),
                    "sequential_ms": round(ms[False], 4),
                    "speedup": round(ms[False] / ms[True], 3),
                }
            )
    return rows


def crossover(rows) -> str:
    """Where, for one cell's rows sorted by T, the parallel form starts to win."""
    if rows[0]["speedup"] >= 1:
        return f"parallel faster at every T measured (from T={rows[0]['T']})"
    if rows[-1]["speedup"] < 1:
        return f"sequential faster at every T measured (up to T={rows[-1]['T']})"
    last_slower = max(i for i, r in enumerate(rows) if r["speedup"] < 1)
    lo, hi = rows[last_slower], rows[last_slower + 1]
    # log speedup is interpolated linearly in log T, to where it crosses 0
    s_lo, s_hi = math.log(lo["speedup"]), math.log(hi["speedup"])
    log_t = math.log(lo["T"]) + (math.log(hi["T"]) - math.log(lo["T"])) * s_lo / (s_lo - s_hi)
    return f"crossover at T ≈ {math.exp(log_t):.0f} (between T={lo['T']} and T={hi['T']})"


def table(rows) -> str:
    lines = [f"{'cell':<10}{'T':>7}{'parallel ms':>14}{'sequential ms':>16}{'speedup':>10}"]
    for r in rows:
        lines.append(
            f"{r['cell']:<10}{r['T']:>7}{r['parallel_ms']:>14.3f}"
            f"{r['sequential_ms']:>16.3f}{r['speedup']:>9.2f}x"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = set(_CELLS.value) - set(CELLS)
    if unknown:
        raise app.UsageError(f"--cells must be among {list(CELLS)}, got {sorted(unknown)}")
    lengths = sorted(int(t) for t in _LENGTHS.value)
    dtype = _COMPUTE_DTYPE.value
    print(
        f"device: {jax.devices()[0].device_kind}, batch {_BATCH.value}, units {_UNITS.value}, "
        f"matmuls in {dtype}"
    )
    rows = benchmark(
        _CELLS.value,
        lengths,
        batch=_BATCH.value,
        units=_UNITS.value,
        input_size=_INPUT_SIZE.value,
        repeats=_REPEATS.value,
        compute_dtype=None if dtype == "float32" else dtype,
    )
    print(table(rows))
    for row in rows:
        print(json.dumps(row))
    for name in _CELLS.value:
        print(f"{name}: {crossover([r for r in rows if r['cell'] == name])}")


if __name__ == "__main__":
    app.run(main)
