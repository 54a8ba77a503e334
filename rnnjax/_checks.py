"""Input checks run at trace time, with errors that name what was expected and what arrived."""

import functools
import os
from numbers import Integral, Real
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def check_sequence(
    name: str, xs, feature_size: int | None = None, *, time_major: bool = False
) -> None:
    """Checks that ``xs`` is a float ``[B, T, D]`` array (``[T, B, D]`` with ``time_major``),
    with ``D == feature_size`` if given."""
    shape = tuple(jnp.shape(xs))
    leading = "T, B" if time_major else "B, T"
    want = f"[{leading}, {feature_size if feature_size is not None else 'D'}]"
    if len(shape) != 3:
        raise ValueError(f"{name} must be {want} (rank 3), got shape {shape} (rank {len(shape)})")
    if not jnp.issubdtype(jnp.result_type(xs), jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {jnp.result_type(xs)}")
    if feature_size is not None and shape[-1] != feature_size:
        raise ValueError(f"{name} must be {want}, got shape {shape}")


def check_step_input(x, input_size: int) -> None:
    """Checks one step's input ``x [..., D]`` against the params' input size D."""
    shape = tuple(jnp.shape(x))
    if not shape or shape[-1] != input_size:
        raise ValueError(
            f"x must be [..., {input_size}] (the params' input size), got shape {shape}"
        )


def batch_entry(batch, name: str, reader: str):
    """``batch[name]``, or a KeyError that names the reader and the keys the batch has."""
    try:
        return batch[name]
    except KeyError:
        raise KeyError(
            f"{reader} reads batch[{name!r}], which this batch lacks (it has {sorted(batch)})"
        ) from None


def check_lengths(lengths, batch: int, time: int) -> jax.Array:
    """Checks ``lengths`` is an integer ``[B]`` array (or list); concrete values must lie in
    ``[0, T]``. Returns it as an array."""
    if isinstance(lengths, list | tuple):
        lengths = jnp.asarray(lengths)  # (under jit, a list of tracers)
    shape = tuple(jnp.shape(lengths))
    if shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) = [B], got {shape}")
    if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        raise TypeError(f"lengths must have an integer dtype, got {jnp.result_type(lengths)}")
    check_range("lengths", lengths, 0, time + 1, f"[0, T={time}]")
    return jnp.asarray(lengths)


def check_range(name: str, values, low: int, high: int, described: str) -> None:
    """Checks concrete integer ``values`` lie in ``[low, high)`` (``described``); under jit
    the values are unknown and pass."""
    if isinstance(values, jax.core.Tracer):
        return
    values = np.asarray(values)
    if values.size and (values.min() < low or values.max() >= high):
        raise ValueError(
            f"{name} must lie in {described}, got min {values.min()} and max {values.max()}"
        )


def check_mask(name: str, mask, want: tuple[int, int], layout: str) -> None:
    """Checks a boolean mask such as ``resets`` has shape ``want`` (named ``layout``)."""
    shape = tuple(jnp.shape(mask))
    if shape != want:
        raise ValueError(f"{name} must have shape {want} = {layout}, got {shape}")
    if jnp.result_type(mask) != jnp.bool_:
        raise TypeError(f"{name} must be boolean, got {jnp.result_type(mask)}")


def check_carry(carry, expected) -> None:
    """Checks that ``carry`` has the structure, leaf shapes and dtypes of ``expected`` (a shape
    tree)."""
    if jax.tree.structure(carry) != jax.tree.structure(expected):
        raise ValueError(f"carry must be like {_described(expected)}, got {_described(carry)}")
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected), strict=True):
        if tuple(jnp.shape(got)) != tuple(want.shape):
            shapes = jax.tree.map(lambda a: tuple(a.shape), expected)
            actual = jax.tree.map(lambda a: tuple(jnp.shape(a)), carry)
            raise ValueError(f"carry must have shapes {shapes}, got {actual}")
        if jnp.result_type(got) != want.dtype:
            dtypes = jax.tree.map(lambda a: str(a.dtype), expected)
            actual = jax.tree.map(lambda a: str(jnp.result_type(a)), carry)
            raise TypeError(f"carry must have dtypes {dtypes}, got {actual}")


def _described(tree):
    """``tree`` with each leaf shown as its dtype and shape, e.g. ``LSTMCarry(c='float32[2,
    8]', h=...)``: its structure, readably."""
    return jax.tree.map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree)


def check_params(cell, params, fallback_input_size: int) -> int:
    """Checks that ``params`` have the entries and shapes ``cell.init`` gives (dtypes are
    free): a wrong leaf would otherwise fail deep inside the step, as a broadcasting error that
    names neither the param nor what it should be. The input size is the params' own
    (``cell.input_size``), or ``fallback_input_size`` when they lack what it reads; it is
    returned."""
    try:
        input_size = cell.input_size(params)
    except (KeyError, IndexError, TypeError, AttributeError):
        input_size = fallback_input_size
    want = _init_shapes(cell.init, input_size)
    _compare_shapes(params, want, "the cell's init", f" for input size {input_size}")
    return input_size


def check_model_params(init, params) -> None:
    """Checks that a model's ``params`` have the entries and shapes its ``init(key)`` gives,
    naming each wrong one by its whole path (params of another model would otherwise fail on
    a bare ``KeyError``, or deep in one layer)."""
    _compare_shapes(params, _init_shapes(init, None), "the model's init", "")


def check_params_like(params, like, source: str) -> None:
    """Checks that ``params`` have the entries and shapes of the params tree ``like``, naming
    each wrong one by its path."""
    _compare_shapes(params, _shapes_by_path(like), source, "")


def _compare_shapes(params, want: dict, source: str, shapes_note: str) -> None:
    got = _shapes_by_path(params)
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    if missing or unexpected:
        raise ValueError(
            f"params must have the entries of {source}: missing "
            f"{', '.join(missing) or 'none'}, unexpected {', '.join(unexpected) or 'none'}"
        )
    wrong = [
        f"{path} {got[path]} (expected {want[path]})" for path in want if got[path] != want[path]
    ]
    if wrong:
        raise ValueError(
            f"params must have the shapes of {source}{shapes_note}: " + ", ".join(wrong)
        )


@functools.lru_cache(maxsize=256)
def _init_shapes(init, input_size: int | None) -> dict[str, tuple[int, ...]]:
    """The shapes ``init`` gives (a cell's, for ``input_size``; a model's, which takes the key
    alone, for None), by path; cached, as every call of a model or unroll asks again."""
    args = () if input_size is None else (input_size,)
    return _shapes_by_path(jax.eval_shape(lambda: init(jax.random.key(0), *args)))


def _shapes_by_path(tree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(jnp.shape(leaf)) for path, leaf in leaves}


def check_directory(path: Path, name: str) -> None:
    """Fails fast when ``path`` cannot become a writable directory: it, or the nearest of its
    parents that exists, is a file or cannot be written."""
    path = Path(path)
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{name} must be a directory, but {existing} is a file"
            + ("" if existing == path else f" ({name}={path})")
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{name} {path} cannot be written: {existing} is read-only")


def real_number(value) -> bool:
    """A real number: a Python or numpy scalar, or a 0-d numpy or JAX array of one."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, Real):
        return True
    return (
        isinstance(value, np.ndarray | jax.Array)
        and value.ndim == 0
        and (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
    )


def check_size(name: str, value) -> int:
    """``value`` as an int >= 1 (a layer's width, a vocabulary, an input size)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


_EXAMPLES = {"Cell": "rnnjax.cells.lstm(64)", "Layer": "rnnjax.rnn(cell) or rnnjax.dense(10)"}


def check_kind(name: str, value, kind: type, hint: str | None = None) -> None:
    """Refuses, where a model is built, a piece of the wrong kind (a layer where a cell goes, or
    the reverse), which would otherwise fail later inside ``init`` or ``apply``. ``hint`` says
    what goes there, when a general example would not."""
    if not isinstance(value, kind):
        hint = hint or f"e.g. {_EXAMPLES.get(kind.__name__, '')}"
        want, got = kind.__name__, type(value).__name__
        raise TypeError(f"{name} must be {_a(want)} ({hint}), got {_a(got)}")


def _a(noun: str) -> str:
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


def check_bound(name: str, value) -> None:
    """Checks that an optional clipping bound (``cell_clip``, ``recurrent_max``) is None or a
    number > 0: clipping to ``[-v, v]`` with ``v <= 0`` would quietly pin the values."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"{name} must be None or a number > 0, got {value!r}")


def check_fed_back_ids(who: str, apply, params, shape: tuple[int, ...], vocab: int) -> None:
    """Refuses, while tracing, a model whose logits range over more ids (V) than its
    embedding takes in: ``who`` feeds its emitted ids back, and one past the embedding's table
    would embed as NaN under jit, not raise. ``apply(params, ids)`` is traced abstractly on
    ids ``shape`` of V - 1, int32 as the fed-back ids are (a narrower dtype could wrap it),
    evaluated at trace time where they do not meet the params (``tokens[:, None]``), so the
    embedding's own check sees them."""
    try:
        with jax.ensure_compile_time_eval():
            largest = jnp.full(shape, vocab - 1, jnp.int32)
            jax.eval_shape(lambda params: apply(params, largest), params)
    except ValueError as e:
        raise ValueError(
            f"{who} feeds back ids up to V - 1 = {vocab - 1}, V = {vocab} being the size of "
            f"the logits, but the model does not take them ({e}): its head's size must be its "
            "embedding's vocabulary"
        ) from e
