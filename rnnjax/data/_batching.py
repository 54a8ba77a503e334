"""Batches whose order is a pure function of ``(seed, step)``, and full-coverage eval batches."""

import itertools
from collections.abc import Iterator

import numpy as np


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches in one pass over ``n`` examples (a partial last one counts unless dropped).

    Example::

      steps_per_epoch(60000, 128)  # 468
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches forever, epoch after epoch, starting at global step ``start_step``.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``e = s // steps_per_epoch``, whose order
    is ``np.random.default_rng([seed, e]).permutation(n)`` (or ``arange(n)`` without ``shuffle``),
    so resuming at ``start_step`` yields exactly what an uninterrupted run sees from that step.

    Args:
      arrays: equally long ``[N, ...]`` arrays, e.g. from ``load``.
      batch_size: the global batch size, divisible by ``process_count``.
      seed: fixes the order of every epoch.
      start_step: the global step of the first batch yielded.
      shuffle: permute each epoch; otherwise keep the arrays' order.
      drop_remainder: skip each epoch's last partial batch (keeps shapes static under jit).
      process_index: this process's index, ``jax.process_index()`` in multi-process runs.
      process_count: the number of processes; each gets its contiguous slice of every batch.

    Returns:
      An iterator of dicts with the keys of ``arrays`` and leading size
      ``batch_size // process_count`` (smaller for a kept partial batch).

    Example::

      for batch in batches(train, 128, seed=0, start_step=int(state.step)):
          state, metrics = step(state, batch)
    """
    per_epoch = steps_per_epoch(n := _length(arrays), batch_size, drop_remainder)
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} examples with drop_remainder")
    if start_step < 0 or seed < 0:  # (numpy's generators take no negative seed)
        raise ValueError(f"start_step and seed must be >= 0, got {start_step} and {seed}")
    if process_count < 1 or batch_size % process_count or not 0 <= process_index < process_count:
        raise ValueError(
            f"need batch_size % process_count == 0 and 0 <= process_index < process_count, got "
            f"batch_size={batch_size}, process_index={process_index}, process_count={process_count}"
        )
    epoch, order = None, None
    for step in itertools.count(start_step):
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        start = (step % per_epoch) * batch_size
        index = np.array_split(order[start : start + batch_size], process_count)[process_index]
        yield {key: value[index] for key, value in arrays.items()}


def eval_batches(arrays: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields every example exactly once, in order, in batches of exactly ``batch_size``.

    The last batch is padded with copies of the final example; its bool ``"mask"`` ``[B]`` is
    False there, so metrics weighted by the mask count each example once.

    Example::

      correct = sum(((predict(b["image"]) == b["label"]) & b["mask"]).sum()
                    for b in eval_batches(test, 1000))
    """
    steps = steps_per_epoch(n := _length(arrays), batch_size, drop_remainder=False)
    if "mask" in arrays:
        raise ValueError(f"arrays must not already have a 'mask' key, got keys {sorted(arrays)}")
    for step in range(steps):
        position = np.arange(step * batch_size, (step + 1) * batch_size)
        index = np.minimum(position, n - 1)
        yield {key: value[index] for key, value in arrays.items()} | {"mask": position < n}


def _length(arrays: dict[str, np.ndarray]) -> int:
    lengths = {key: len(value) for key, value in arrays.items()}
    if not lengths or len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"arrays must be non-empty and equally long, got lengths {lengths}")
    return next(iter(lengths.values()))
