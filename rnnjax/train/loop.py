"""``train_and_evaluate``: the resumable training loop that experiments and research code call."""

import contextlib
import functools
import json
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from rnnjax import data
from rnnjax.train import builders, distributed, tasks
from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.metrics import MetricsWriter, plot_learning_curves, read_metrics
from rnnjax.train.state import init_state
from rnnjax.train.steps import make_eval_step, make_train_step

CURVES_FILE = "learning_curves.png"
CONFIG_FILE = "config.json"


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""


def train_and_evaluate(config, workdir: str | Path) -> list[dict]:
    """Trains ``config.task`` (see ``rnnjax.train.tasks``), evaluating on its full test set
    after every epoch.

    Rerunning with the same ``workdir`` resumes from the newest good checkpoint and ends with
    bitwise the same params and metrics as an uninterrupted run. SIGTERM or Ctrl-C saves a
    checkpoint and returns early. Writes ``metrics.jsonl``, TensorBoard events, checkpoints, the
    config, a learning-curve PNG and, once finished, the task's report (figures) into
    ``workdir``.

    ``config.mesh.data`` devices (-1: all) train data-parallel; ``config.mesh.fsdp`` also
    splits params and optimizer state over them. With several processes (see
    ``distributed.initialize``) every process calls this with the same arguments; process 0
    writes the files. A run resumes on any number of devices.

    Returns:
      The evaluation records of the whole run (as in ``metrics.jsonl``).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
    with distributed.primary_first("load the data"):  # a dataset is prepared once
        task = tasks.build(config)
    examples = len(next(iter(task.train.values())))
    spe = data.steps_per_epoch(examples, config.batch_size)
    if spe == 0:
        raise ValueError(
            f"The training split has {examples} examples, fewer than batch_size="
            f"{config.batch_size}: lower batch_size, or check the data (a data_dir prepared "
            "from other files is reused as it is)"
        )
    tx = builders.optimizer(config, spe)
    state, layout = _initial_state(config, task, tx)
    if jax.process_index() == 0:
        mesh = layout.mesh
        print(
            f"training on {mesh.size} {mesh.devices.flat[0].platform} device(s), "
            f"{config.batch_size // mesh.size} rows of each batch per device",
            flush=True,
        )
    with Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints) as ckpts:
        restored = ckpts.restore(state)
        state, sums = (state, None) if restored is None else (restored[0], restored[1]["sums"])
        run = _Run(config, task, tx, spe, ckpts, workdir, int(state.step), layout)
        with _preemption() as stop, contextlib.closing(run):
            state, finished = run.epochs(state, sums, stop)
    distributed.sync("metrics written")
    records = read_metrics(workdir / "metrics.jsonl")
    if finished and records and jax.process_index() == 0:
        plot_learning_curves(records, workdir / CURVES_FILE)
        if task.report is not None:
            task.report(jax.device_get(state.params), workdir)
    return records


def _initial_state(config, task, tx):
    """The freshly initialised train state on ``config.mesh``, and its ``Layout``."""
    mesh = distributed.make_mesh(config.mesh.data)
    distributed.check_batch_size(config.batch_size, mesh.size)
    init = functools.partial(init_state, task.model, tx, jax.random.key(config.seed))
    return distributed.sharded_state(init, mesh, fsdp=config.mesh.fsdp)


class _Run:
    """The pieces one run's epochs share: jitted steps, checkpoints, the metrics writer (on
    process 0 only)."""

    def __init__(self, config, task, tx, steps_per_epoch, ckpts, workdir, start_step, layout):
        self.config, self.task, self.ckpts = config, task, ckpts
        self.steps_per_epoch = steps_per_epoch
        self.layout, self.primary = layout, jax.process_index() == 0
        self.train_step = make_train_step(
            task.model, tx, task.loss, forward=task.forward, layout=layout
        )
        self.eval_step = make_eval_step(
            task.model, task.loss, forward=task.forward, metrics=task.evaluate, layout=layout
        )
        self.writer = MetricsWriter(workdir, resume_step=start_step) if self.primary else None

    def close(self):
        if self.writer is not None:
            self.writer.close()

    def epochs(self, state, sums, stop) -> tuple:
        """Runs the remaining epochs: ``(state, finished)``, not finished when stopped early by
        a signal."""
        config, spe = self.config, self.steps_per_epoch
        first = int(state.step)
        stream = self._stream(self.task.train, first)
        for epoch in range(first // spe, config.num_epochs):
            start, tick = int(state.step), time.perf_counter()
            sums = None if sums is None else jax.tree.map(jnp.asarray, sums)
            bar = tqdm(
                total=spe,
                initial=start - epoch * spe,
                desc=f"epoch {epoch + 1}",
                disable=None if config.progress and self.primary else True,
                leave=False,
            )
            for step in range(start + 1, (epoch + 1) * spe + 1):  # the step each update ends at
                batch = distributed.global_batch(next(stream), self.layout.batch)
                state, metrics = self.train_step(state, batch)
                sums = _accumulate(sums, metrics, step - 1)
                bar.update()
                if step % config.log_every_steps == 0:  # a host sync: also look for NaNs
                    _check_finite(sums, self.ckpts)
                    _show(bar, sums, step - epoch * spe)
                if step % spe and self._stopping(stop, step):
                    self._save(state, sums, epoch)
                    logging.warning("Stopped by a signal at step %d; rerun to resume.", step)
                    return state, False
                if step % config.checkpoint_every_steps == 0 and step % spe:
                    self._save(state, sums, epoch)
            bar.close()
            self._end_epoch(
                state, sums, epoch, time.perf_counter() - tick, spe * (epoch + 1) - start
            )
            sums = None
            if distributed.any_process(stop()):
                logging.warning("Stopped by a signal after epoch %d; rerun to resume.", epoch + 1)
                return state, False
        return state, True

    def _stream(self, train, first: int):
        """This process's rows of every batch from step ``first`` on."""
        index, count = jax.process_index(), jax.process_count()
        return data.batches(
            train,
            self.config.batch_size,
            seed=self.config.seed,
            start_step=first,
            process_index=index,
            process_count=count,
        )

    def _stopping(self, stop, step) -> bool:
        """Whether to stop for a signal. Several processes must agree, so they compare their
        flags at log steps only (a host sync there anyway)."""
        if jax.process_count() == 1:
            return stop()
        return step % self.config.log_every_steps == 0 and distributed.any_process(stop())

    def _end_epoch(self, state, sums, epoch, seconds, steps_run):
        _check_finite(sums, self.ckpts)
        train_metrics = _means(sums, self.steps_per_epoch)
        test_metrics = evaluate(
            self.eval_step, state.params, self.task.test, self.config.batch_size, layout=self.layout
        )
        record = {"step": int(state.step), "epoch": epoch + 1}
        record |= {f"train_{k}": v for k, v in train_metrics.items()}
        record |= {f"test_{k}": v for k, v in test_metrics.items()}
        record["examples_per_sec"] = steps_run * self.config.batch_size / max(seconds, 1e-9)
        if self.primary:
            self.writer.write(record)
            headline = self.task.headline
            line = f"epoch {epoch + 1}  train_loss {record['train_loss']:.4f}  "
            print(line + f"test_{headline} {record[f'test_{headline}']:.4f}", flush=True)
        self._save(state, None, epoch + 1)

    def _save(self, state, sums, epoch):
        """Saves after checking that no update since the last save was non-finite.

        ``sums`` (the epoch's running train metrics) are saved mid-epoch so a resume reports the
        same epoch metrics; ``None`` at an epoch's end.
        """
        if sums is not None:
            _check_finite(sums, self.ckpts)
            sums = {k: np.asarray(v).item() for k, v in jax.device_get(sums).items()}
        self.ckpts.save(state, {"epoch": epoch, "sums": sums}, force=True)


def evaluate(eval_step, params, arrays, batch_size: int, *, layout=None) -> dict:
    """Exact metrics over every example of ``arrays`` (the last batch padded and masked).

    With a ``distributed.Layout`` (``eval_step`` made with it), every batch is split along the
    mesh's data axis, each process supplying its rows; ``batch_size`` must divide by the mesh.
    """
    totals = None
    for batch in data.eval_batches(arrays, batch_size):
        if layout is None:
            batch = jax.device_put(batch)
        else:
            batch = distributed.global_batch(distributed.process_rows(batch), layout.batch)
        sums = eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {name: float(value) / count for name, value in totals.items()}


_NOT_SUMMED = ("finite", "grad_norm")


def _accumulate(sums, metrics, step):
    """Adds a step's metrics (all but the finiteness flag and gradient norm) to the epoch's
    sums, and records the first step whose update was not finite."""
    if sums is None:  # an epoch's first step
        sums = {k: jnp.zeros_like(v) for k, v in metrics.items() if k not in _NOT_SUMMED}
        sums["first_nonfinite"] = jnp.full((), -1, jnp.int32)
    bad = (~metrics["finite"]) & (sums["first_nonfinite"] < 0)
    added = {k: sums[k] + v for k, v in metrics.items() if k not in _NOT_SUMMED}
    return added | {"first_nonfinite": jnp.where(bad, step, sums["first_nonfinite"])}


def _means(sums, steps: int) -> dict:
    return {k: float(v) / steps for k, v in sums.items() if k != "first_nonfinite"}


def _show(bar, sums, steps_done):
    means = _means(jax.device_get(sums), max(steps_done, 1))
    bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})


def _check_finite(sums, ckpts):
    bad = int(sums["first_nonfinite"])
    if bad >= 0:
        steps = ckpts.steps()
        kept = f"the last good checkpoint is step {steps[-1]}" if steps else "no checkpoint yet"
        raise NonFiniteError(
            f"Non-finite loss or gradient at step {bad}; training stopped, {kept}. "
            "Lower the learning rate or set config.grad_clip_norm."
        )


@contextlib.contextmanager
def _preemption():
    """Turns SIGTERM and SIGINT into a flag that the loop checks after every step."""
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def load_config(workdir: str | Path) -> dict:
    """The config a run saved in ``workdir`` (as plain JSON)."""
    return json.loads((Path(workdir) / CONFIG_FILE).read_text())
