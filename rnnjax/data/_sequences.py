"""Variable-length sequences: zero padding into ``[B, T, ...]`` and length-bucketed batches."""

from collections.abc import Sequence

import numpy as np

from rnnjax.data._batching import steps_per_epoch


def pad_batch(
    sequences: Sequence[np.ndarray], *, pad_to_multiple: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads sequences ``[T_i, ...]`` with zeros into one array ``[B, T, ...]``.

    Args:
      sequences: ``B`` arrays ``[T_i, ...]`` with equal trailing dims (``[T_i]`` for token ids).
      pad_to_multiple: round ``T = max T_i`` up to a multiple of this, so that jit sees
        fewer distinct shapes.

    Returns:
      ``(padded [B, T, ...], lengths int32 [B])``, the dtype the sequences' common one.

    Example::

      xs, lengths = pad_batch([np.ones((3, 2)), np.ones((5, 2))], pad_to_multiple=4)
      xs.shape, lengths  # (2, 8, 2), [3, 5]
    """
    arrays = [np.asarray(s) for s in sequences]
    shapes = [a.shape for a in arrays]
    if not arrays or min(len(s) for s in shapes) == 0 or len({s[1:] for s in shapes}) != 1:
        raise ValueError(f"sequences must be [T_i, ...] with equal trailing dims, got {shapes}")
    if pad_to_multiple is not None and pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    lengths = np.array([s[0] for s in shapes], np.int32)
    multiple = pad_to_multiple or 1
    time = -(-int(lengths.max()) // multiple) * multiple
    padded = np.zeros((len(arrays), time, *shapes[0][1:]), np.result_type(*arrays))
    for row, a in zip(padded, arrays, strict=True):
        row[: len(a)] = a
    return padded, lengths


def bucket_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    pool: int = 100,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """Groups example indices into batches of similar length, in an order fixed by (seed, epoch).

    The indices are shuffled with ``np.random.default_rng([seed, epoch])``; each run of
    ``pool * batch_size`` of them is sorted by length and cut into batches; the batches are
    shuffled. There are always ``steps_per_epoch(N, batch_size, drop_remainder)`` batches, so
    global step ``s`` is batch ``s % that`` of epoch ``s // that``.

    Args:
      lengths: int ``[N]`` length of each example.
      batch_size: examples per batch; unless ``drop_remainder``, one batch (the last cut,
        shuffled like the others to any position) may be smaller.
      seed: fixes the grouping and order.
      epoch: gives each epoch its own grouping and order.
      pool: how many batches' worth of examples are sorted together; larger pools pad less
        but are less random.
      drop_remainder: leave out ``N mod batch_size`` examples, drawn anew each epoch, so
        every batch is full.

    Returns:
      A list of int index arrays into the ``N`` examples, ``[batch_size]`` but for that one.

    Example::

      for index in bucket_batches(lengths, 32, seed=0, epoch=e):
          xs, xs_lengths = pad_batch([tokens[i] for i in index], pad_to_multiple=16)
    """
    lengths = np.asarray(lengths)
    count = steps_per_epoch(lengths.shape[0] if lengths.ndim else 0, batch_size, drop_remainder)
    if lengths.ndim != 1 or count == 0 or pool < 1:
        raise ValueError(
            f"need lengths [N] giving at least one batch and pool >= 1, got lengths of shape "
            f"{lengths.shape}, batch_size={batch_size}, pool={pool}"
        )
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if drop_remainder:  # a random remainder each epoch, not the longest of the last pool
        order = order[: count * batch_size]
    result = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start : start + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        result += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [result[i] for i in rng.permutation(count)]
