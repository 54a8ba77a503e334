"""Types for code that may run inside ``jax.shard_map``, where each value records the mesh axes
it varies over and ``lax.scan`` needs its carry to keep one type."""

import jax


def varying_like(carry, inputs):
    """Inside ``shard_map``, ``carry`` marked as varying over every mesh axis that a leaf of
    ``inputs`` varies over: the step's new carry does, and ``lax.scan`` needs one carry type.
    Elsewhere it is returned as is."""
    axes = frozenset().union(*(_varying_axes(a) for a in jax.tree.leaves(inputs)))

    def cast(a):
        missing = tuple(sorted(axes - _varying_axes(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree.map(cast, carry) if axes else carry


def _varying_axes(a) -> frozenset:
    kind = getattr(jax.typeof(a), "manual_axis_type", None)
    return kind.varying if kind is not None else frozenset()
