"""Data-parallel and multi-host training on JAX's own runtime: a mesh, shardings, start-up.

One mesh axis, ``data``. Every batch is split along it by its leading axis; the train state is
replicated on every device or, with ``fsdp``, each leaf is split along its largest axis that
divides by the mesh size (XLA gathers it where a step needs it whole). The jitted steps take
and return arrays with these shardings, so gradients are averaged by XLA's own collectives.

Several processes (one per host, or several on one host) each run the same program: each
loads only its contiguous rows of every global batch (``data.batches(process_index=...)``) and
``jax.make_array_from_process_local_data`` joins them into one global array. With the mesh's
devices ordered by process, the global batch is the one a single process would see, so the
data order stays a pure function of ``(seed, step)`` for any number of devices and processes.
"""

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnjax import layers

AXIS = "data"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    detect_cluster: bool = False,
) -> bool:
    """Starts ``jax.distributed`` for a multi-process run; does nothing for a single process.

    Must run before anything touches a device. Arguments left unset come from the environment
    variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; with
    ``detect_cluster`` JAX detects what is still unset on Cloud TPU, SLURM, Open MPI and GKE.

    Returns:
      True when ``jax.distributed.initialize`` was called.

    Example:
      >>> distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    """
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    count = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    index = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    single = count in (None, 1) and index in (None, 0)  # e.g. JAX_NUM_PROCESSES=1 alone
    if not detect_cluster and address is None and single:
        return False
    jax.distributed.initialize(address, count, index)
    return True


def split_cpu(devices: int = -1, batch_size: int | None = None) -> int | None:
    """Makes JAX's CPU backend ``devices`` devices, -1 meaning one per core this process may
    use, and no more than divide ``batch_size``; a data-parallel mesh over them (``mesh.data=-1``)
    then runs each core's rows of a batch on its own.

    Why: XLA:CPU runs a recurrent step's small matmuls on one core about as fast as on two, so
    one intra-op thread pool leaves the other cores mostly idle; split this way, training ran
    1.2-1.6x and inference 1.2-2x faster on 2 cores (BUILD_NOTES.md). Must run before anything
    touches a device. A count already chosen (``JAX_NUM_CPU_DEVICES``, or ``XLA_FLAGS``'
    ``--xla_force_host_platform_device_count``) is left as it is.

    Returns:
      the number of CPU devices set, or None when left to the existing choice.
    """
    chosen = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if chosen or jax.config.jax_num_cpu_devices != -1:
        return None
    if devices == -1:
        devices = most_devices(batch_size, len(os.sched_getaffinity(0)))
    if devices < 1:
        raise ValueError(f"mesh.cpu_devices must be -1 (one per core) or >= 1, got {devices}")
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError as e:  # a device was used before: the backend's count is fixed
        raise RuntimeError(
            f"split_cpu({devices}) must run before anything touches a device (an array, "
            "jax.devices(), params), e.g. first thing after the imports; or set "
            f"JAX_NUM_CPU_DEVICES={devices} in the environment"
        ) from e
    return devices


CPU_VECTOR_WIDTHS = (0, 128, 256, 512)  # bits; 0 = XLA's own choice (256)
_VECTOR_FLAG = "--xla_cpu_prefer_vector_width"


def prefer_cpu_vector_width(bits: int = 512) -> bool:
    """Asks XLA:CPU to vectorise with ``bits``-wide registers (through ``XLA_FLAGS``).

    Why: XLA:CPU compiles loops for 256-bit vectors even where the CPU has 512-bit ones
    (AVX-512). At 512 the gate arithmetic of recurrent steps (sigmoid, tanh, exp) ran about a
    quarter faster and whole training and inference steps 1.0-1.2x (BUILD_NOTES.md); a CPU with
    narrower registers keeps its widest. Must run before anything touches a device: XLA reads
    ``XLA_FLAGS`` once, when its first backend starts. A width already in ``XLA_FLAGS`` is
    kept, and ``bits=0`` leaves XLA's default.

    Returns:
      True when the width was set.
    """
    if bits not in CPU_VECTOR_WIDTHS:
        raise ValueError(f"cpu_vector_width must be one of {CPU_VECTOR_WIDTHS} bits, got {bits}")
    flags = os.environ.get("XLA_FLAGS", "")
    if bits == 0 or _VECTOR_FLAG in flags:
        return False
    if _backend_started():  # XLA_FLAGS would be ignored without a word
        raise RuntimeError(
            f"prefer_cpu_vector_width({bits}) must run before anything touches a device (an "
            f"array, jax.devices(), params); or set XLA_FLAGS={_VECTOR_FLAG}={bits}"
        )
    os.environ["XLA_FLAGS"] = f"{flags} {_VECTOR_FLAG}={bits}".strip()
    return True


def _backend_started() -> bool:
    """Whether JAX has started a backend. Only a private function says so; a JAX without it
    is taken as not started (the width may then be ignored, as XLA_FLAGS set late are)."""
    from jax._src import xla_bridge  # private: imported only where it is needed

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def most_devices(batch_size: int | None, available: int) -> int:
    """The largest count of at most ``available`` devices that splits ``batch_size`` evenly
    (``available`` itself when no batch size is given)."""
    return max(n for n in range(1, available + 1) if not batch_size or batch_size % n == 0)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    if value and not value.isdigit():
        raise ValueError(f"${name} must be a non-negative integer, got {value!r}")
    return int(value) if value else None


def make_mesh(data: int = -1) -> Mesh:
    """A one-axis (``"data"``) mesh over ``data`` devices, -1 meaning all of them.

    Devices are ordered by process, so process ``p``'s rows of a batch are the ``p``-th
    contiguous block of the global batch. With several processes the mesh spans all devices.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if data == -1:
        data = len(devices)
    if not 1 <= data <= len(devices):
        why = (  # split_cpu chose the count
            "; on a CPU the launcher makes one device per core, no more than divide batch_size, "
            "and mesh.cpu_devices sets another count"
            if devices[0].platform == "cpu"
            else ""
        )
        raise ValueError(
            f"mesh.data must be -1 (all) or 1..{len(devices)} devices, got {data} (this process "
            f"has {len(devices)}{why})"
        )
    if jax.process_count() > 1 and data != len(devices):
        raise ValueError(
            f"mesh.data must be -1 (all {len(devices)} devices) with {jax.process_count()} "
            f"processes, so every process holds part of the mesh, got {data}"
        )
    return Mesh(np.array(devices[:data]), (AXIS,))


def check_batch_size(batch_size: int, n: int) -> None:
    """Raises a clear error unless ``batch_size`` splits evenly over ``n`` devices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size % n:
        lower, upper = batch_size // n * n, (batch_size // n + 1) * n
        nearest = f"{lower} or {upper}" if lower else str(upper)
        raise ValueError(
            f"batch_size must divide by the {n} devices of the mesh (each gets an equal part), "
            f"got batch_size={batch_size}: use a multiple of {n} such as {nearest}, or change "
            "mesh.data"
        )


def fsdp_spec(shape: tuple[int, ...], size: int) -> PartitionSpec:
    """Splits the largest axis that divides by ``size`` (the first of equals); else replicates."""
    axes = [i for i, n in enumerate(shape) if n % size == 0]
    if size == 1 or not axes:
        return PartitionSpec()
    split = max(axes, key=lambda i: shape[i])
    return PartitionSpec(*(AXIS if i == split else None for i in range(len(shape))))


class Layout(NamedTuple):
    """Where a run's arrays live: train state and batch shardings on one mesh."""

    mesh: Mesh
    state: Any  # a NamedSharding per leaf of the train state
    batch: NamedSharding  # the leading (batch) axis split along "data"
    replicated: NamedSharding  # a whole copy on every device (metrics)
    steps: NamedSharding  # batches stacked [K, batch, ...] (steps_per_call), batch axis split


def make_layout(mesh: Mesh, abstract_state, *, fsdp: bool = False) -> Layout:
    """The shardings of a train state shaped like ``abstract_state`` and of batches."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def leaf(x):
        return NamedSharding(mesh, fsdp_spec(x.shape, mesh.size)) if fsdp else replicated

    state = jax.tree.map(leaf, abstract_state)
    batch, steps = (NamedSharding(mesh, PartitionSpec(*axes, AXIS)) for axes in ((), (None,)))
    return Layout(mesh, state, batch, replicated, steps)


def sharded_state(init: Callable[[], Any], mesh: Mesh, *, fsdp: bool = False):
    """Runs ``init`` (which returns a train state) straight into its shardings on ``mesh``.

    Each device computes only its own shards, so with ``fsdp`` a state too large for one
    device can still be initialised.

    Returns:
      ``(state, layout)``.
    """
    layout = make_layout(mesh, jax.eval_shape(init), fsdp=fsdp)
    return jax.jit(init, out_shardings=layout.state)(), layout


def data_parallel(forward: Callable, mesh: Mesh) -> Callable:
    """``forward(params, batch, key=None)`` run on each device's rows of ``batch`` alone.

    For training steps: under plain ``jit`` the partitioner sums each time step's weight
    gradient across devices inside the backward scan (one all-reduce per step, measured to
    cancel the gain of a second device). Here each device unrolls its rows with its own copy of
    the params, so the gradient's sum across devices happens once, at the params' entry. The
    outputs are the same global arrays as ``forward``'s, so the loss stays the caller's,
    computed on the whole batch. Dropout masks are drawn per row of the whole batch
    (``layers.rows_from``), so they are the same on any number of devices.
    """

    def local(params, batch, key):
        params = jax.lax.pcast(params, (AXIS,), to="varying")  # the gradient's psum: here, once
        rows = jax.tree.leaves(batch)[0].shape[0]
        with layers.rows_from(jax.lax.axis_index(AXIS) * rows):
            outputs = forward(params, batch, key)
        for path, leaf in jax.tree_util.tree_leaves_with_path(outputs):
            if np.ndim(leaf) == 0:
                raise ValueError(
                    "under a layout, forward's outputs are split over the devices by their "
                    f"first (batch) axis, but forward{jax.tree_util.keystr(path)} is a scalar: "
                    "return per-example values [B, ...] (a weight penalty goes in the "
                    "optimizer, e.g. optax.add_decayed_weights)"
                )
        return outputs

    spread = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(AXIS), PartitionSpec()),
        out_specs=PartitionSpec(AXIS),
    )

    def sharded(params, batch, key=None):
        return spread(params, batch, key)

    return sharded


def bounded_dispatch(program: Callable, mesh: Mesh) -> Callable:
    """``program`` (jitted, over ``mesh``) kept to two calls in flight when ``mesh`` holds
    several CPU devices of this process: each call, once dispatched, waits for the call before
    it to finish. Elsewhere ``program`` itself.

    Why: JAX dispatches asynchronously, so a training loop queues steps ahead of the devices.
    XLA's CPU client launches every device's part of a program on one small thread pool, and a
    collective (the gradient's all-reduce) holds its thread until every device arrives. With
    steps queued ahead, the devices deadlocked there and the runtime aborted the process after
    40 s (on 2 devices: tiny train steps, 6 runs of 6; the launcher beside two busy processes,
    2 of 2). Two calls in flight never did, at the same speed (BUILD_NOTES.md). The bound is
    the process's, over every program so wrapped (a loop alternating two train steps hands
    one's outputs to the other), and the previous call's outputs stay referenced until the
    next call.
    """
    if not _shares_cpu_threads(mesh.devices.flat):
        return program

    @functools.wraps(program)
    def bounded(*args, **kwargs):
        out = program(*args, **kwargs)
        if _last_call:
            _wait(_last_call.pop(), handed_on=(args, kwargs), latest=out)
        _last_call.append(out)
        return out

    return bounded


_last_call = []  # the outputs of this process's latest bounded call, if any


def _shares_cpu_threads(devices) -> bool:
    """Whether several of ``devices`` are CPU devices of this process (one thread pool)."""
    local = [d for d in devices if d.process_index == jax.process_index()]
    return len(local) > 1 and all(d.platform == "cpu" for d in local)


def _wait(previous, handed_on, latest) -> None:
    """Blocks until the previous call's outputs are ready, but for those handed on to the
    latest call (which may have taken them as donated buffers: the latest call's own end
    covers them); with none left, until ``latest``'s are."""
    passed = {id(x) for x in jax.tree.leaves(handed_on)}
    kept = [
        x
        for x in jax.tree.leaves(previous)
        if isinstance(x, jax.Array) and id(x) not in passed and not x.is_deleted()
    ]
    jax.block_until_ready(kept or latest)


def global_batch(rows: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Joins every process's ``rows`` (its block of the batch) into global arrays.

    ``sharding`` is a layout's ``batch`` (rows on axis 0) or ``steps`` (batches stacked
    ``[K, B, ...]``, rows on axis 1); rows that do not split evenly over the mesh are named
    with the nearest sizes that do."""
    axis = list(sharding.spec).index(AXIS)
    for name, value in rows.items():
        if np.ndim(value) <= axis:
            stacked = " (batches stacked [K, B, ...] for steps_per_call)" if axis else ""
            raise ValueError(
                f"batch entry {name!r} needs its rows on axis {axis}{stacked}, got shape "
                f"{np.shape(value)}"
            )
        check_batch_size(np.shape(value)[axis] * jax.process_count(), sharding.mesh.size)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in rows.items()}


def process_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous block of a whole batch (as ``data.batches`` splits it)."""
    index, count = jax.process_index(), jax.process_count()
    return {k: np.array_split(v, count)[index] for k, v in batch.items()}


def any_process(flag: bool) -> bool:
    """True when ``flag`` is True on any process (with several, every one must call this)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.asarray(flag)).any())


def sync(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (nothing for a single one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def primary_first(name: str):
    """Runs the body on process 0 first, then on the others (e.g. to prepare a dataset once)."""
    if jax.process_index():
        sync(name)
    yield
    if not jax.process_index():
        sync(name)


def host_array(x) -> np.ndarray:
    """``x`` whole as a numpy array, gathered from all processes when they each hold a part."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
