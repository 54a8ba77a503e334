"""Tests for rnnjax/train/distributed.py: the same run on 1, 2 and 4 devices and 2 processes.

The reference is an in-process run on this process's one CPU device. The device count is fixed
when JAX starts, so the runs on 4 CPU devices (``--xla_force_host_platform_device_count``) go
into one subprocess, which runs this file as a script: a run on 4 devices, then two of its
checkpoints resumed on 2 devices (FSDP) and on 1. Two ``jax.distributed`` processes on
localhost, of 2 devices each, run the launcher with FSDP. Every run must give the reference's
records and final params to 1e-5 (gradient sums add up in another order, not bit for bit).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from trainruns import restore_final_state

import rnnjax
from rnnjax.train import (
    distributed,
    launch,
    read_metrics,
    tasks,
)
from rnnjax.train.loop import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "mnist_rnn.py"
STEPS = 15  # 3 epochs of 60 // 12 batches
TIMEOUT = 240
# name: (mesh.data, mesh.fsdp, None or (the run whose checkpoint it resumes, at that step))
RUNS = {
    "4": (-1, False, None),
    "4_to_2_fsdp": (2, True, ("4", 6)),  # mid-epoch: the epoch's running sums resume too
    "4_to_1": (1, False, ("4", 10)),
}


def _overrides(data_dirs: Path, **extra) -> dict:
    return {
        "num_epochs": 3,
        "batch_size": 12,
        "model.units": 8,
        "checkpoint_every_steps": 6,  # and at every epoch's end: steps 5, 6, 10, 12, 15
        "steps_per_call": 2,  # calls of 2 steps between those, batches stacked [2, 12, ...]
        "keep_checkpoints": 5,
        "progress": False,
        "data.manual_dir": str(data_dirs / "idx"),
        "data.data_dir": str(data_dirs / "tfds"),
        **extra,
    }


def _env(devices: int) -> dict:
    return os.environ | {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }


def _assert_same_run(workdir: Path, reference):
    """The reference's records (but for speed) and final params, to 1e-5."""
    params, records = reference
    actual = read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in actual] == [r["step"] for r in records]
    for a, e in zip(actual, records, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert a[key] == pytest.approx(e[key], abs=1e-5), (workdir.name, a["step"], key)
    leaves = jax.tree.leaves_with_path(restore_final_state(workdir, STEPS).params)
    for (path, a), e in zip(leaves, jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, e, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    assert (workdir / "learning_curves.png").is_file()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_idx):
    """The IDX folder's link, the tfds data_dir (prepared here, before processes share it),
    the runs."""
    root = tmp_path_factory.mktemp("distributed")
    (root / "idx").symlink_to(tiny_idx)
    tasks.load_classification(launch.load_config(str(CONFIG), _overrides(root)).data)
    return root


@pytest.fixture(scope="module")
def launched(dirs):
    """Starts, in the background, ``RUNS`` in one subprocess with 4 CPU devices and the two
    processes of a ``jax.distributed`` run; yields ``{name: (process, log)}``."""
    address = f"127.0.0.1:{_free_port()}"
    args = [sys.executable, "-m", "experiments.main", f"--config={CONFIG}"]
    args += [f"--workdir={dirs / 'two_processes'}"]
    mesh = {"mesh.data": -1, "mesh.fsdp": True}
    overrides = _overrides(dirs, checkpoint_every_steps=100, log_every_steps=4, **mesh)
    args += [f"--config.{key}={value}" for key, value in overrides.items()]
    flags = [f"--coordinator_address={address}", "--num_processes=2", "--process_id=0"]
    variables = {
        "JAX_COORDINATOR_ADDRESS": address,
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    commands = {
        "four_devices": ([sys.executable, __file__, str(dirs)], _env(4)),
        "process0": (args + flags, _env(2)),  # set up from flags
        "process1": (args, _env(2) | variables),  # set up from the environment
    }
    procs = {}
    for name, (command, env) in commands.items():
        log = dirs / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        procs[name] = (proc, log)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _finished(launched, name: str) -> str:
    """Waits for a launched process; returns its log after checking that it exited with 0."""
    proc, log = launched[name]
    code = proc.wait(TIMEOUT)
    assert code == 0, f"{name} exited with {code}:\n{log.read_text()[-3000:]}"
    return log.read_text()


@pytest.fixture(scope="module")
def reference(dirs, launched):
    """The run on one device, while the launched runs go on: ``(final params, records)``."""
    records = train_and_evaluate(
        launch.load_config(str(CONFIG), _overrides(dirs)), dirs / "reference"
    )
    return restore_final_state(dirs / "reference", STEPS).params, records


@pytest.fixture(scope="module")
def four_devices(dirs, launched):
    """The report of the runs on 4 CPU devices."""
    _finished(launched, "four_devices")
    return json.loads((dirs / "report.json").read_text())


def _subprocess_runs(dirs: Path) -> None:
    """The subprocess's side: trains ``RUNS`` on 4 devices, writes ``report.json``."""
    assert jax.device_count() == 4, jax.devices()
    report = {}
    for name, (data, fsdp, resume) in RUNS.items():
        if resume is not None:
            source, step = resume
            shutil.copytree(dirs / source, dirs / name)
            (dirs / name / "learning_curves.png").unlink()  # made again when the run ends
            for path in (dirs / name / "checkpoints").iterdir():
                if int(path.name) > step:
                    shutil.rmtree(path)
        config = launch.load_config(
            str(CONFIG), _overrides(dirs, **{"mesh.data": data, "mesh.fsdp": fsdp})
        )
        train_and_evaluate(config, dirs / name)
    mesh = distributed.make_mesh(-1)
    abstract = jax.eval_shape(lambda: {"w": np.zeros((28, 8)), "b": np.zeros(10)})
    layout = distributed.make_layout(mesh, abstract, fsdp=True)
    report["fsdp_specs"] = {k: str(s.spec) for k, s in layout.state.items()}
    with pytest.raises(ValueError) as error:
        train_and_evaluate(
            launch.load_config(str(CONFIG), _overrides(dirs, batch_size=10, **{"mesh.data": -1})),
            dirs / "x",
        )
    report["batch_size_error"] = str(error.value)
    (dirs / "report.json").write_text(json.dumps(report))


def test_four_devices_train_like_one(dirs, reference, four_devices):
    _assert_same_run(dirs / "4", reference)


@pytest.mark.parametrize("name", ["4_to_2_fsdp", "4_to_1"])
def test_saved_on_four_devices_resumes_on_fewer(dirs, reference, four_devices, name):
    source, _ = RUNS[name][2]
    # The epoch-1 record is the source run's, speed included: the run resumed, not restarted.
    assert (
        read_metrics(dirs / name / "metrics.jsonl")[0]
        == read_metrics(dirs / source / "metrics.jsonl")[0]
    )
    _assert_same_run(dirs / name, reference)


def test_fsdp_splits_the_largest_divisible_axis(four_devices):
    assert four_devices["fsdp_specs"] == {"w": str(P("data", None)), "b": str(P())}
    assert distributed.fsdp_spec((8, 28), 4) == P(None, "data")
    assert distributed.fsdp_spec((8, 8), 4) == P("data", None)
    assert distributed.fsdp_spec((), 4) == P()
    assert distributed.fsdp_spec((28, 8), 1) == P()


def test_batch_size_that_does_not_divide_the_devices_is_named(four_devices):
    message = four_devices["batch_size_error"]
    assert "batch_size=10" in message and "4 devices" in message and "8 or 12" in message
    with pytest.raises(ValueError, match="multiple of 4 such as 4, or"):
        distributed.check_batch_size(3, 4)
    distributed.check_batch_size(12, 4)


def test_two_processes_on_localhost_train_and_checkpoint_like_one(dirs, reference, launched):
    logs = [_finished(launched, f"process{i}") for i in range(2)]
    assert "epoch 3" in logs[0] and "epoch 3" not in logs[1]  # process 0 reports
    _assert_same_run(dirs / "two_processes", reference)


def test_initialize_does_nothing_for_one_process(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.initialize()
    assert not distributed.initialize(num_processes=1, process_id=0)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")  # one process, said explicitly
    assert not distributed.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"JAX_NUM_PROCESSES must be .* got 'two'"):
        distributed.initialize()


def test_mesh_sizes_out_of_range_are_named():
    assert distributed.make_mesh(-1).devices.shape == (jax.device_count(),)
    assert distributed.make_mesh(1).axis_names == ("data",)
    for data in (0, jax.device_count() + 1):
        with pytest.raises(ValueError, match=rf"mesh.data must be -1 \(all\) .* got {data}"):
            distributed.make_mesh(data)


SPLIT_CPU = """
import sys, jax
from rnnjax.train import distributed
print(distributed.split_cpu(*map(int, sys.argv[1:])), jax.device_count())
"""


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["4", "6"], {}, "4 4"),  # an explicit count: as asked
        (["-1", "7"], {}, None),  # one per core, as many as divide the batch
        (["-1", "6"], {"JAX_NUM_CPU_DEVICES": "3"}, "None 3"),  # the user's choice is kept
        (["2", "6"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=5"}, "None 5"),
    ],
)
def test_split_cpu_makes_one_device_per_core_unless_already_chosen(args, env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    command = [sys.executable, "-c", SPLIT_CPU, *args]
    done = subprocess.run(
        command, env=clean | env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if expected is None:  # a batch of 7 splits over 7 cores or over 1
        cores = len(os.sched_getaffinity(0))
        expected = "7 7" if cores >= 7 else "1 1"
    assert done.stdout.split("\n")[-2] == expected


def test_split_cpu_after_a_device_was_used_says_what_to_do():
    code = (
        "import jax.numpy as jnp; from rnnjax.train import distributed; jnp.ones(1); "
        "distributed.split_cpu(2)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode != 0
    assert "split_cpu(2) must run before anything touches a device" in done.stderr
    assert "JAX_NUM_CPU_DEVICES=2" in done.stderr


VECTOR_WIDTH = """
import sys, jax, jax.numpy as jnp
from rnnjax.train import distributed
print(distributed.prefer_cpu_vector_width(int(sys.argv[1])))
jax.jit(lambda x: jnp.tanh(x) * 2 + 1)(jnp.ones((75, 512)))
"""


def _cpu_has_avx512() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "avx512f" in cpuinfo.read_text().split()


@pytest.mark.parametrize(
    ("bits", "flags", "returned", "width"),
    [
        (512, "", "True", 512),
        (0, "", "False", None),  # XLA's own width (256, left out of its options)
        (512, "--xla_cpu_prefer_vector_width=128", "False", 128),  # the user's choice is kept
    ],
)
def test_prefer_cpu_vector_width_reaches_the_compiler(tmp_path, bits, flags, returned, width):
    """What XLA compiled with, from its own dump: the option, and 16-lane float vectors in the
    generated code where the CPU has AVX-512."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_dump_to={tmp_path} {flags}".strip()
    command = [sys.executable, "-c", VECTOR_WIDTH, str(bits)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [returned]
    (options,) = tmp_path.glob("*jit__lambda.debug_options")
    widths = re.findall(r"xla_cpu_prefer_vector_width: (\d+)", options.read_text())
    assert widths == ([str(width)] if width else [])
    code = "".join(p.read_text() for p in tmp_path.glob("*jit__lambda*ir-with-opt.ll"))
    assert code
    if _cpu_has_avx512():
        assert ("<16 x float>" in code) == (width == 512)


def test_prefer_cpu_vector_width_checks_its_width_and_its_timing():
    with pytest.raises(ValueError, match=r"one of \(0, 128, 256, 512\) bits, got 300"):
        distributed.prefer_cpu_vector_width(300)
    jnp.ones(1)  # this process's backend has started
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_prefer_vector_width" not in flags:
        with pytest.raises(RuntimeError, match="before anything touches a device.*XLA_FLAGS="):
            distributed.prefer_cpu_vector_width(512)
    assert os.environ.get("XLA_FLAGS", "") == flags


def test_most_devices_splits_the_batch_evenly():
    assert distributed.most_devices(150, 4) == 3
    assert distributed.most_devices(64, 4) == 4
    assert distributed.most_devices(7, 6) == 1
    assert distributed.most_devices(None, 5) == 5


def test_split_cpu_rejects_a_count_below_one():
    with pytest.raises(ValueError, match="mesh.cpu_devices must be -1 .* got 0"):
        distributed.split_cpu(0)


def test_data_parallel_sums_the_gradient_once_outside_the_scan():
    """Under ``data_parallel`` the gradient of a model equals the plain one, and the devices'
    gradients are summed once (at the params' entry), never per time step in the scan."""
    model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.lstm(4)), rnnjax.dense(3), in_size=2)
    params = model.init(jax.random.key(0))
    batch = {"inputs": jax.random.normal(jax.random.key(1), (4, 5, 2)), "lengths": np.arange(4) + 2}
    forward = rnnjax.train.steps.model_forward(model)
    sharded = distributed.data_parallel(forward, distributed.make_mesh(1))

    def gradient(forward):
        return jax.grad(lambda p: jnp.sum(forward(p, batch) ** 2))

    want, got = gradient(forward)(params), jax.jit(gradient(sharded))(params)
    for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
    sums = _sums_by_enclosing(jax.make_jaxpr(gradient(sharded))(params).jaxpr, ())
    assert sums and all("scan" not in within and "while" not in within for within in sums), sums


# Tiny train steps, then eval steps, on 2 CPU devices, dispatched as fast as Python can: each
# call must return with the call before it finished. Without that bound the steps queued ahead
# deadlocked the devices at XLA:CPU's all-reduce within 1,200 steps in 6 runs of 6 (the runtime
# then aborts).
BOUNDED_STEPS = """
import functools, sys
import jax, numpy as np, optax, rnnjax
from rnnjax.train import distributed
assert jax.device_count() == 2, jax.devices()
model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(8)), rnnjax.dense(10), in_size=3)
tx = optax.adam(1e-3)
init = functools.partial(rnnjax.train.init_state, model, tx, jax.random.key(0))
state, layout = distributed.sharded_state(init, distributed.make_mesh(2))
rows = {"inputs": np.ones((4, 5, 3), np.float32), "labels": np.arange(4, dtype=np.int32)}
batch = distributed.global_batch(rows, layout.batch)
try:  # rows that do not split over the devices are named with the sizes that do
    distributed.global_batch({k: v[:3] for k, v in rows.items()}, layout.batch)
    sys.exit("3 rows were split over 2 devices")
except ValueError as e:
    assert "got batch_size=3: use a multiple of 2 such as 2 or 4" in str(e), e
step = rnnjax.train.make_train_step(model, tx, rnnjax.train.softmax_xent, layout=layout)
eval_step = rnnjax.train.make_eval_step(model, rnnjax.train.softmax_xent, layout=layout)


def run(name, calls, call):  # call() -> an output array; exit if the one before is unfinished
    previous = None
    for i in range(calls):
        out = call()
        if previous is not None and not previous.is_ready():
            sys.exit(f"{name} call {i}: the call before it is still running")
        previous = out
    return out


def train():
    global state
    state, metrics = step(state, batch)
    return metrics["loss"]


run("train", int(sys.argv[1]), train)
count = run("eval", int(sys.argv[1]) // 2, lambda: eval_step(state.params, batch)["count"])
print(int(state.step), int(count))
# As the loop does: calls of one step and of two (steps_per_call) in turn, each handing the
# state on to the other program. The bound is the process's, not each program's.
steps2 = rnnjax.train.make_train_step(
    model, tx, rnnjax.train.softmax_xent, layout=layout, steps_per_call=2
)
stacked = distributed.global_batch({k: np.stack([v, v]) for k, v in rows.items()}, layout.steps)
calls = 0


def alternate():
    global state, calls
    calls += 1
    state, metrics = step(state, batch) if calls % 2 else steps2(state, stacked)
    return metrics["loss"]


run("alternating", int(sys.argv[1]) // 2, alternate)
print(int(state.step))
"""


def test_steps_on_cpu_devices_stay_two_in_flight_and_never_deadlock():
    flags = "--xla_force_host_platform_device_count=2"
    flags += " --xla_cpu_collective_call_terminate_timeout_seconds=20"  # a deadlock: exit
    env = os.environ | {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    command = [sys.executable, "-c", BOUNDED_STEPS, "2000"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["2000", "4", str(2000 + 1000 // 2 * 3)]


# The same dropout model trained 3 steps on one device (no layout), on a 1-device mesh and on 2.
DROPOUT_ON_DEVICES = """
import jax, numpy as np, optax, rnnjax
from rnnjax.train import distributed
body = rnnjax.serial(
    rnnjax.rnn(rnnjax.cells.gru(8), input_dropout=0.3, carry_dropout=0.3), rnnjax.dropout(0.4)
)
model = rnnjax.seq2vec(body, rnnjax.dense(10), in_size=3, pool="mean")
tx = optax.adam(1e-2)
def init():  # a fresh key each time: a train step donates the state's
    return rnnjax.train.init_state(model, tx, jax.random.key(0))


rng = np.random.default_rng(0)
rows = {"inputs": rng.normal(size=(8, 5, 3)).astype(np.float32), "labels": np.arange(8) % 10}


def trained(devices):
    state, layout = (init(), None) if devices is None else distributed.sharded_state(
        init, distributed.make_mesh(devices)
    )
    step = rnnjax.train.make_train_step(model, tx, rnnjax.train.softmax_xent, layout=layout)
    batch = rows if layout is None else distributed.global_batch(rows, layout.batch)
    for _ in range(3):
        state, metrics = step(state, batch)
    return jax.device_get(state.params)


want = trained(None)
for devices in (1, 2):
    for got, expected in zip(jax.tree.leaves(trained(devices)), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
print("same")
"""


def test_dropout_masks_do_not_depend_on_the_device_count():
    """Each row's masks come from its row of the whole batch, not from its device's index."""
    env = os.environ | {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2"}
    command = [sys.executable, "-c", DROPOUT_ON_DEVICES]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "same"


def test_bounded_dispatch_applies_only_to_several_cpu_devices_of_this_process():
    def device(platform="cpu", process=0):
        return types.SimpleNamespace(platform=platform, process_index=process)

    assert distributed._shares_cpu_threads([device(), device()])
    assert not distributed._shares_cpu_threads([device()])
    assert not distributed._shares_cpu_threads([device(), device(process=1)])
    assert not distributed._shares_cpu_threads([device("gpu"), device("gpu")])
    program = jax.jit(lambda x: x + 1)
    assert distributed.bounded_dispatch(program, distributed.make_mesh(1)) is program


def _sums_by_enclosing(jaxpr, within: tuple) -> list[tuple]:
    """For each cross-device sum (``psum*``) in ``jaxpr``: the primitives that enclose it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith("psum"):
            found.append(within)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's, or a Jaxpr
                if hasattr(inner, "eqns"):
                    found += _sums_by_enclosing(inner, within + (eqn.primitive.name,))
    return found


if __name__ == "__main__":
    _subprocess_runs(Path(sys.argv[1]))


def test_a_scalar_output_of_forward_under_a_layout_is_named():
    """A layout splits forward's outputs by their batch axis: a scalar has none."""
    model = rnnjax.seq2vec(rnnjax.rnn(rnnjax.cells.simple(4)), rnnjax.dense(3), in_size=2)
    tx = optax.sgd(0.1)
    init = lambda: rnnjax.train.init_state(model, tx, jax.random.key(0))  # noqa: E731
    state, layout = distributed.sharded_state(init, distributed.make_mesh(1))

    def forward(params, batch, key):
        return model.apply(params, batch["inputs"]), jnp.float32(0.0)

    def loss(outputs, batch):
        return rnnjax.train.softmax_xent(outputs[0], batch)

    step = rnnjax.train.make_train_step(model, tx, loss, forward=forward, layout=layout)
    rows = {"inputs": np.ones((2, 3, 2), np.float32), "labels": np.arange(2)}
    with pytest.raises(ValueError, match=r"forward\[1\] is a scalar: return per-example"):
        step(state, distributed.global_batch(rows, layout.batch))
