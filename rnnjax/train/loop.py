"""``train_and_evaluate``: the resumable training loop that experiments and research code call."""

import contextlib
import fnmatch
import functools
import json
import signal
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax.traverse_util import flatten_dict
from tqdm import tqdm

from rnnjax import data
from rnnjax._checks import check_directory
from rnnjax.train import builders, distributed, tasks
from rnnjax.train.checkpoints import Checkpoints
from rnnjax.train.metrics import (
    MetricsWriter,
    plot_learning_curves,
    read_metrics,
    write_atomically,
)
from rnnjax.train.state import init_state
from rnnjax.train.steps import make_eval_step, make_train_step
from rnnjax.train.sums import TrainSums, evaluate, train_means

CURVES_FILE = "learning_curves.png"
CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"

# Config keys (fnmatch patterns) a rerun may change in a workdir that holds checkpoints: how long
# to train (a cosine schedule then decays over the new length), progress, logging and checkpoint
# cadence and retention, where the same data is read from, the devices (any resume on any) and
# the CPU's vector width (speed settings: a machine without AVX-512 may go on with 256).
RESUMABLE_KEYS = (
    "num_epochs",
    "progress",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "steps_per_call",
    "data.manual_dir",
    "data.data_dir",
    "mesh.*",
    "cpu_vector_width",
)


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""


def train_and_evaluate(config, workdir: str | Path) -> list[dict]:
    """Trains ``config.task`` (see ``rnnjax.train.tasks``), evaluating on its full test set
    after every epoch.

    Rerunning with the same ``workdir`` resumes from the newest good checkpoint and ends with
    bitwise the same params and metrics as an uninterrupted run; a rerun whose config differs
    from the saved one in other keys than ``RESUMABLE_KEYS`` is refused (ValueError). SIGTERM or
    Ctrl-C during the epochs saves a checkpoint and returns early; once training has finished,
    the end-of-run figures are written first. Writes ``metrics.jsonl``, TensorBoard events,
    checkpoints, the config, a learning-curve PNG and, once finished, the task's report
    (figures) into ``workdir``.

    ``config.mesh.data`` devices (-1: all) train data-parallel; ``config.mesh.fsdp`` also
    splits params and optimizer state over them. With several processes (see
    ``distributed.initialize``) every process calls this with the same arguments; process 0
    writes the files. A run resumes on any number of devices.

    Returns:
      The evaluation records of the whole run (as in ``metrics.jsonl``).
    """
    workdir = Path(workdir)
    _check_settings(config)
    check_directory(workdir, "workdir")  # before the data is loaded
    mesh = distributed.make_mesh(config.mesh.data)
    distributed.check_batch_size(config.batch_size, mesh.size)
    _check_resumable(config, workdir)
    with distributed.primary_first("load the data"):  # a dataset is prepared once
        task = tasks.build(config)  # a bad model or data setting fails before anything is written
    examples = len(next(iter(task.train.values())))
    spe = data.steps_per_epoch(examples, config.batch_size)
    if spe == 0:
        raise ValueError(
            f"The training split has {examples} examples, fewer than batch_size="
            f"{config.batch_size}: lower batch_size, or check the data (a data_dir prepared "
            "from other files is reused as it is)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        write_atomically(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))
    tx = builders.optimizer(config, spe)
    state, layout = _initial_state(config, task, tx, mesh)
    if jax.process_index() == 0:
        print(
            f"training on {mesh.size} {mesh.devices.flat[0].platform} device(s), "
            f"{config.batch_size // mesh.size} rows of each batch per device",
            flush=True,
        )
    with _preemption() as stop:  # from the restore to the last figure
        with Checkpoints(workdir / CHECKPOINTS_DIR, keep=config.keep_checkpoints) as ckpts:
            restored = ckpts.restore(state)
            state, sums = (state, None) if restored is None else (restored[0], restored[1]["sums"])
            start = int(state.step)
            _check_not_past_the_end(config, start, spe, workdir)
            if start == config.num_epochs * spe and jax.process_index() == 0:
                print(
                    f"{workdir} has trained its {config.num_epochs} epochs: nothing left to "
                    "train (a larger num_epochs goes on); the figures are written again",
                    flush=True,
                )
            run = _Run(config, task, tx, spe, ckpts, workdir, start, layout)
            with contextlib.closing(run):
                state, finished = run.epochs(state, sums, stop)
        distributed.sync("metrics written")
        records = read_metrics(workdir / "metrics.jsonl")
        if finished and records and jax.process_index() == 0:
            _report(task, state, records, workdir)
        if finished and stop():
            logging.warning("A signal arrived after training had finished; the report is written.")
    return records


def _check_not_past_the_end(config, step: int, steps_per_epoch: int, workdir: Path):
    """Refuses a resume whose checkpoint has trained past ``num_epochs``: its state matches
    no epoch's end of this run, so it can be neither trained on nor reported as finished."""
    end = config.num_epochs * steps_per_epoch
    if step > end:
        raise ValueError(
            f"{workdir} holds a run trained to step {step}, past the end of "
            f"num_epochs={config.num_epochs} (step {end}): rerun with num_epochs >= "
            f"{-(-step // steps_per_epoch)} to go on, or use a new workdir for a shorter run"
        )


def _report(task, state, records, workdir: Path):
    """The end-of-run figures: learning curves and the task's report."""
    plot_learning_curves(records, workdir / CURVES_FILE)
    if task.report is not None:
        task.report(jax.device_get(state.params), workdir)


_LEAST = {  # key: (smallest value, why)
    "seed": (0, "numpy's generators, which order the data, take no negative seed"),
    "num_epochs": (1, "epochs"),
    "batch_size": (1, "examples"),
    "log_every_steps": (1, "steps"),
    "checkpoint_every_steps": (1, "steps"),
    "steps_per_call": (1, "steps"),
    "keep_checkpoints": (2, "so a damaged newest checkpoint has a fallback"),
}


def _check_settings(config):
    """Fails fast, before loading data or writing anything (a refused rerun must not replace
    the workdir's config.json), on loop and optimizer settings that the run cannot use."""
    for key, (least, why) in _LEAST.items():
        if config[key] < least:
            raise ValueError(f"config.{key} must be >= {least} ({why}), got {config[key]!r}")
    builders.optimizer(config)  # raises on a bad learning_rate, lr_schedule or grad_clip_norm


def _check_resumable(config, workdir: Path):
    """Refuses to resume ``workdir``'s checkpoints with a config that differs from the saved one
    in other keys than ``RESUMABLE_KEYS``; nothing is written before this passes."""
    saved_file = workdir / CONFIG_FILE
    if not saved_file.exists() or not _has_checkpoints(workdir / CHECKPOINTS_DIR):
        return
    saved = flatten_dict(saved_config(workdir), sep=".")
    new = flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    changed = [
        f"{key}: {_shown(saved, key)} → {_shown(new, key)}"
        for key in sorted(saved.keys() | new.keys())
        if _shown(saved, key) != _shown(new, key)
        and not any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE_KEYS)
    ]
    if changed:
        raise ValueError(
            f"{workdir} holds checkpoints of another config ({saved_file}); changed: "
            f"{'; '.join(changed)}. Use a new workdir for these settings, or rerun with the "
            f"saved values (a resume may change only {', '.join(RESUMABLE_KEYS)})."
        )


def _has_checkpoints(directory: Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint step (orbax's ``<step>`` folders)."""
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _shown(flat: dict, key: str) -> str:
    """A config value as the error shows it (and compares it): its repr, or "(absent)"."""
    return repr(flat[key]) if key in flat else "(absent)"


def _initial_state(config, task, tx, mesh):
    """The freshly initialised train state on ``mesh``, and its ``Layout``."""
    init = functools.partial(init_state, task.model, tx, jax.random.key(config.seed))
    return distributed.sharded_state(init, mesh, fsdp=config.mesh.fsdp)


class _Run:
    """The pieces one run's epochs share: jitted steps, checkpoints, the metrics writer (on
    process 0 only)."""

    def __init__(self, config, task, tx, steps_per_epoch, ckpts, workdir, start_step, layout):
        self.config, self.task, self.ckpts = config, task, ckpts
        self.steps_per_epoch = steps_per_epoch
        self.layout, self.primary = layout, jax.process_index() == 0
        make = functools.partial(
            make_train_step, task.model, tx, task.loss, forward=task.forward, layout=layout
        )
        self.train_step = make()
        self.train_steps = make(steps_per_call=config.steps_per_call)  # used only when > 1
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
            train = TrainSums(sums)
            bar = tqdm(
                total=spe,
                initial=start - epoch * spe,
                desc=f"epoch {epoch + 1}",
                disable=None if config.progress and self.primary else True,
                leave=False,
            )
            step, end = start, (epoch + 1) * spe  # steps done, and by the epoch's end
            while step < end:
                count = self._steps_to_run(step, end)
                state, metrics = self._train(state, stream, count)
                train.add(step, metrics)
                step += count
                bar.update(count)
                if step % config.log_every_steps == 0:  # a host sync: also look for NaNs
                    running = train.settle()
                    _check_finite(running, self.ckpts)
                    _show(bar, running, step - epoch * spe)
                if step % spe and self._stopping(stop, step):
                    self._save(state, train.settle(), epoch)
                    logging.warning("Stopped by a signal at step %d; rerun to resume.", step)
                    return state, False
                if step % config.checkpoint_every_steps == 0 and step % spe:
                    self._save(state, train.settle(), epoch)
            bar.close()
            self._end_epoch(
                state, train.settle(), epoch, time.perf_counter() - tick, spe * (epoch + 1) - start
            )
            sums = None
            last = epoch + 1 == config.num_epochs  # then the run has finished: report it
            if not last and distributed.any_process(stop()):
                logging.warning("Stopped by a signal after epoch %d; rerun to resume.", epoch + 1)
                return state, False
        return state, True

    def _steps_to_run(self, done: int, end: int) -> int:
        """How many steps the next call runs: ``steps_per_call`` when no log, checkpoint or
        epoch end falls inside them, else one (so the host acts after exactly those steps)."""
        config = self.config
        cadences = (config.log_every_steps, config.checkpoint_every_steps)
        boundary = min(end, *(done - done % every + every for every in cadences))
        return config.steps_per_call if boundary - done >= config.steps_per_call else 1

    def _train(self, state, stream, count: int):
        """``count`` training steps on the stream's next batches: ``(state, metrics)``, the
        metrics stacked when ``count`` > 1."""
        if count == 1:
            return self.train_step(state, distributed.global_batch(next(stream), self.layout.batch))
        rows = [next(stream) for _ in range(count)]
        stacked = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        return self.train_steps(state, distributed.global_batch(stacked, self.layout.steps))

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
        train_metrics = train_means(sums, self.steps_per_epoch)
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
        self.ckpts.save(state, {"epoch": epoch, "sums": sums}, force=True)


def _show(bar, sums, steps_done):
    means = train_means(sums, max(steps_done, 1))
    bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})


def _check_finite(sums, ckpts):
    bad = int(sums["first_nonfinite"])
    if bad >= 0:
        steps = ckpts.steps()
        kept = f"the last good checkpoint is step {steps[-1]}" if steps else "no checkpoint yet"
        raise NonFiniteError(
            f"Non-finite loss or gradient at step {bad}; training stopped, {kept}. "
            "Lower the learning rate or set config.grad_clip_norm, in a new workdir (a "
            "resume keeps the saved config)."
        )


@contextlib.contextmanager
def _preemption():
    """Turns SIGTERM and SIGINT into a flag that the loop checks after every step (and that the
    end-of-run report ignores: it is finished first, then the run returns)."""
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def saved_config(workdir: str | Path) -> dict:
    """The config a run saved in ``workdir`` (as plain JSON)."""
    return json.loads((Path(workdir) / CONFIG_FILE).read_text())
