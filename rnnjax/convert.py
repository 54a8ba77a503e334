"""Weight converters between rnnjax cell params and PyTorch / Flax recurrent layers.

rnnjax fuses gates (``x @ wx`` with ``wx [D, G*H]``) in PyTorch's gate order (LSTM i, f, g, o;
GRU r, z, n), so a conversion is a transpose, a concatenation or a split, and a bias fold: the
converted params give the same outputs as the source layer, to float32 rounding. Kinds are
``"rnn"`` (``rnnjax.cells.simple``; tanh, or ``activation="relu"`` for PyTorch's relu),
``"lstm"`` (``rnnjax.cells.lstm``, with ``proj_size``) and ``"gru"`` (``rnnjax.cells.gru`` with
``reset_after=True``). A learnt initial carry (``carry0``) has no counterpart and is ignored;
options that add no params (activation, ``cell_clip``, Flax ``residual``) are the caller's to match.
"""

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from rnnjax._checks import check_size

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# Flax linen cells keep one Dense per gate: (input-side names, recurrent-side names), the
# submodules that have a bias, and the side whose biases make up rnnjax's fused ``b``.
_FLAX_NAMES = {
    "rnn": (("i",), ("h",)),
    "lstm": (("ii", "if", "ig", "io"), ("hi", "hf", "hg", "ho")),
    "gru": (("ir", "iz", "in"), ("hr", "hz", "hn")),
}
_FLAX_BIASED = {"rnn": {"i"}, "lstm": {"hi", "hf", "hg", "ho"}, "gru": {"ir", "iz", "in", "hn"}}
_FLAX_BIAS_SIDE = {"rnn": 0, "lstm": 1, "gru": 0}


def from_torch(kind: str, state_dict: Mapping, *, layer: int = 0, reverse: bool = False) -> dict:
    """rnnjax params from one layer and direction of a PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

    Reads ``weight_ih_l{layer}`` ``[G*H, D]``, ``weight_hh_l{layer}`` ``[G*H, P]``, the biases
    ``bias_ih``/``bias_hh`` ``[G*H]`` (zeros when the module has ``bias=False``) and, for an LSTM
    with ``proj_size``, ``weight_hr_l{layer}`` ``[P, H]``; names end in ``_reverse`` with
    ``reverse``. The two biases are folded into ``b``, except GRU's recurrent n-gate bias, which
    sits inside the reset gate and becomes ``bh_n``.

    Args:
      kind: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      state_dict: ``module.state_dict()``; values are torch tensors or anything ``np.asarray``
        takes. Other layers' entries are ignored.
      layer, reverse: which layer and direction to read.

    Returns:
      params for ``rnnjax.cells.simple(H)``, ``lstm(H, proj_size=P)`` or ``gru(H)``.

    Example:
      >>> params = rnnjax.convert.from_torch("lstm", torch_lstm.state_dict())
      >>> carry, ys = rnnjax.unroll(rnnjax.cells.lstm(H), params, xs)
    """
    gates = _gates(kind)
    w_ih, w_hh, b_ih, b_hh, w_hr = _read_torch(kind, state_dict, _suffix(layer, reverse))
    hidden = w_ih.shape[0] // gates
    params = {"wx": w_ih.T, "wh": w_hh.T, "b": b_ih + b_hh}
    if kind == "gru":  # the n-gate recurrent bias is multiplied by r, so it cannot be folded
        params["b"][2 * hidden :] = b_ih[2 * hidden :]
        params["bh_n"] = b_hh[2 * hidden :]
    if w_hr is not None:
        params["w_proj"] = w_hr.T
    return {name: jnp.asarray(value) for name, value in params.items()}


def to_torch(
    kind: str, params: Mapping, *, layer: int = 0, reverse: bool = False, bias: bool = True
) -> dict:
    """PyTorch state-dict entries for one layer and direction, from rnnjax params.

    The inverse of :func:`from_torch` in function: the whole bias goes to ``bias_ih`` and
    ``bias_hh`` holds zeros (GRU: zeros for r, z and ``bh_n`` for n), so the module computes what
    the rnnjax cell computes. Peepholes, layer norm and GRU ``reset_after=False`` have no PyTorch
    counterpart and raise.

    Args:
      kind: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      params: rnnjax params: ``wx [D, G*H]``, ``wh [P, G*H]``, ``b [G*H]``, and ``bh_n [H]``
        (GRU) or ``w_proj [H, P]`` (LSTM with projection).
      layer, reverse: which layer and direction to name.
      bias: False for a module built with ``bias=False``: no bias entries, and params whose
        biases are not all zero raise (the module could not compute what they do).

    Returns:
      ``{name: np.ndarray}``; load with
      ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    gates, sfx = _gates(kind), _suffix(layer, reverse)
    required = ["wx", "wh", "b"] + (["bh_n"] if kind == "gru" else [])
    optional = ["w_proj"] if kind == "lstm" else []
    arrays = _rnnjax_arrays(params, required, optional)
    size_in, hidden = _fused_sizes(arrays["wx"], gates, kind)
    fused = gates * hidden
    out = arrays["w_proj"].shape[-1] if "w_proj" in arrays else hidden
    shapes = {"wx": (size_in, fused), "wh": (out, fused), "b": (fused,), "bh_n": (hidden,)}
    _check_shapes(arrays, shapes | {"w_proj": (hidden, out)}, "params")
    bias_hh = np.zeros((fused,), arrays["b"].dtype)
    if kind == "gru":
        bias_hh[2 * hidden :] = arrays["bh_n"]
    state = {f"weight_ih{sfx}": arrays["wx"].T, f"weight_hh{sfx}": arrays["wh"].T}
    if bias:
        state |= {f"bias_ih{sfx}": arrays["b"], f"bias_hh{sfx}": bias_hh}
    elif np.any(arrays["b"]) or np.any(bias_hh):
        raise ValueError(
            "to_torch(bias=False) is for a module without biases, but these params have "
            "non-zero biases ('b'" + (" or 'bh_n'" if kind == "gru" else "") + ")"
        )
    if "w_proj" in arrays:
        state[f"weight_hr{sfx}"] = arrays["w_proj"].T
    return {name: _torch_ready(value) for name, value in state.items()}


def from_torch_layers(
    kind: str, state_dict: Mapping, num_layers: int, *, bidirectional: bool = False
) -> list:
    """Per-layer rnnjax params for a multi-layer (and/or bidirectional) PyTorch module.

    Returns a list of ``num_layers`` params, or of ``(forward, backward)`` pairs with
    ``bidirectional``. Run layer ``k`` with ``rnnjax.unroll`` on the previous layer's outputs
    (forward and ``reverse=True`` outputs concatenated on the last axis), as PyTorch does.

    Example:
      >>> layers = from_torch_layers("gru", m.state_dict(), m.num_layers, bidirectional=True)
    """
    num_layers = check_size("num_layers", num_layers)
    _check_no_more_layers(state_dict, num_layers, bidirectional)
    if not bidirectional:
        return [from_torch(kind, state_dict, layer=k) for k in range(num_layers)]
    return [
        (from_torch(kind, state_dict, layer=k), from_torch(kind, state_dict, layer=k, reverse=True))
        for k in range(num_layers)
    ]


def _check_no_more_layers(state_dict: Mapping, num_layers: int, bidirectional: bool) -> None:
    """Raises if ``state_dict`` holds weights past ``num_layers`` or, without
    ``bidirectional``, a reverse direction: converting only part of a module would be silent."""
    found = (re.search(r"_l(\d+)(_reverse)?$", name) for name in state_dict)
    left_out = sorted(
        m.string for m in found if m and (int(m[1]) >= num_layers or (m[2] and not bidirectional))
    )
    if left_out:
        raise ValueError(
            f"state_dict has weights that num_layers={num_layers}, bidirectional="
            f"{bidirectional} would leave out: {left_out}"
        )


def from_flax(kind: str, params: Mapping) -> dict:
    """rnnjax params from a Flax linen ``SimpleCell``, ``LSTMCell`` or ``GRUCell``.

    Flax keeps one ``Dense`` per gate, ``kernel [D or H, H]``: SimpleCell ``i`` (biased) and
    ``h``; LSTMCell ``ii, if, ig, io`` and biased ``hi, hf, hg, ho``; GRUCell biased
    ``ir, iz, in``, ``hr, hz`` and biased ``hn`` (which becomes ``bh_n``). Kernels are
    concatenated in gate order. SimpleCell's ``residual`` option adds no params and is not
    converted.

    Args:
      kind: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      params: the cell's params; wrappers ``{"params": ...}`` and ``{"cell": ...}`` (as from
        ``nn.RNN(cell).init``) are unwrapped.

    Returns:
      params for ``rnnjax.cells.simple(H)``, ``lstm(H)`` or ``gru(H)``.

    Example:
      >>> params = from_flax("lstm", nn.RNN(nn.LSTMCell(64)).init(key, xs))
    """
    tree = _flax_tree(kind, params)
    inputs, recurrent = _FLAX_NAMES[kind]
    biases = (inputs, recurrent)[_FLAX_BIAS_SIDE[kind]]
    out = {
        "wx": jnp.concatenate([tree[n]["kernel"] for n in inputs], axis=-1),
        "wh": jnp.concatenate([tree[n]["kernel"] for n in recurrent], axis=-1),
        "b": jnp.concatenate([tree[n]["bias"] for n in biases], axis=-1),
    }
    if kind == "gru":
        out["bh_n"] = tree["hn"]["bias"]
    return out


def to_flax(kind: str, params: Mapping) -> dict:
    """Flax linen cell params (the inverse of :func:`from_flax`) from rnnjax params.

    Peepholes, projection and layer norm (LSTM) and ``reset_after=False`` (GRU) have no Flax
    counterpart and raise. Returns the cell's params, e.g. ``{"ii": {"kernel": [D, H]}, ...}``;
    for ``nn.RNN`` use ``{"params": {"cell": to_flax(...)}}``.
    """
    gates = _gates(kind)
    arrays = _rnnjax_arrays(params, ["wx", "wh", "b"] + (["bh_n"] if kind == "gru" else []), [])
    size_in, hidden = _fused_sizes(arrays["wx"], gates, kind)
    fused = gates * hidden
    shapes = {"wx": (size_in, fused), "wh": (hidden, fused), "b": (fused,), "bh_n": (hidden,)}
    _check_shapes(arrays, shapes, "params")
    inputs, recurrent = _FLAX_NAMES[kind]
    biases = (inputs, recurrent)[_FLAX_BIAS_SIDE[kind]]
    tree = {}
    for names, key in ((inputs, "wx"), (recurrent, "wh"), (biases, "b")):
        leaf = "bias" if key == "b" else "kernel"
        for name, block in zip(names, np.split(arrays[key], gates, axis=-1), strict=True):
            tree.setdefault(name, {})[leaf] = jnp.asarray(block)
    if kind == "gru":
        tree["hn"]["bias"] = jnp.asarray(arrays["bh_n"])
    return tree


def _gates(kind: str) -> int:
    if not isinstance(kind, str) or kind not in _GATES:
        raise ValueError(f"kind must be one of {sorted(_GATES)}, got {kind!r}")
    return _GATES[kind]


def _suffix(layer: int, reverse: bool) -> str:
    return f"_l{layer}" + ("_reverse" if reverse else "")


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor (maybe requiring grad), without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # which numpy cannot hold
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _torch_ready(value: np.ndarray) -> np.ndarray:
    """A writable C-ordered copy, float32 where ``torch.from_numpy`` cannot take the dtype
    (bfloat16)."""
    dtype = np.float32 if value.dtype == jnp.bfloat16 else value.dtype
    return np.array(value, dtype=dtype, order="C")


def _fused_sizes(wx: np.ndarray, gates: int, kind: str) -> tuple[int, int]:
    """``(D, H)`` from a fused input kernel ``wx [D, G*H]``."""
    if wx.ndim != 2 or wx.shape[1] % gates:
        raise ValueError(f"wx must be [D, {gates}*H] for kind {kind!r}, got shape {wx.shape}")
    return wx.shape[0], wx.shape[1] // gates


def _read_torch(kind: str, state_dict: Mapping, sfx: str) -> list:
    """Checked ``[w_ih, w_hh, b_ih, b_hh, w_hr or None]`` (zero biases where absent)."""
    gates = _gates(kind)
    names = [f"{n}{sfx}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
    _require(state_dict, names[:2], "state_dict")
    w_ih = _array(state_dict[names[0]])
    if w_ih.ndim != 2 or w_ih.shape[0] % gates:
        raise ValueError(f"{names[0]} must be [{gates}*H, D] for {kind!r}, got shape {w_ih.shape}")
    (fused, size_in), hidden = w_ih.shape, w_ih.shape[0] // gates
    zeros = np.zeros((fused,), w_ih.dtype)
    w_hh = _array(state_dict[names[1]])
    arrays = {names[0]: w_ih, names[1]: w_hh}
    arrays |= {n: _array(state_dict.get(n, zeros)) for n in names[2:4]}
    if kind == "lstm" and names[4] in state_dict:  # proj_size > 0
        arrays[names[4]] = _array(state_dict[names[4]])
    elif kind == "lstm" and w_hh.ndim == 2 and w_hh.shape[1] != hidden:
        raise ValueError(
            f"{names[1]} has shape {w_hh.shape}, not [4*H, H] with H={hidden}: an LSTM with "
            f"proj_size also needs {names[4]}, which state_dict lacks"
        )
    out = arrays[names[4]].shape[0] if names[4] in arrays else hidden
    shapes = [(fused, size_in), (fused, out), (fused,), (fused,), (out, hidden)]
    _check_shapes(arrays, dict(zip(names, shapes, strict=True)), "state_dict")
    return [arrays.get(n) for n in names]


def _require(tree: Mapping, names, source: str) -> None:
    missing = [n for n in names if n not in tree]
    if missing:
        raise ValueError(f"{source} is missing {missing}: expected {list(names)}, got {list(tree)}")


def _check_shapes(arrays: Mapping, expected: Mapping, source: str) -> None:
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(expected[name]):
            raise ValueError(
                f"{source}[{name!r}] must have shape {tuple(expected[name])}, got {value.shape}"
            )


def _rnnjax_arrays(params: Mapping, required: list, optional: list) -> dict:
    """The named rnnjax params as numpy arrays; keys nothing can hold raise, ``carry0`` is
    dropped."""
    _require(params, required, "params")
    unknown = sorted(set(params) - set(required) - set(optional) - {"carry0"})
    if unknown:
        raise ValueError(
            f"params has {unknown}, which the target cannot represent: expected keys "
            f"{required} (optional {optional}), got {sorted(params)}"
        )
    return {n: _array(params[n]) for n in required + optional if n in params}


def _flax_tree(kind: str, params: Mapping) -> Mapping:
    """Unwraps ``{"params": ...}``/``{"cell": ...}`` and checks the cell's submodules and leaves."""
    _gates(kind)
    while isinstance(params, Mapping) and len(params) == 1 and set(params) <= {"params", "cell"}:
        params = params[next(iter(params))]
    names = [n for side in _FLAX_NAMES[kind] for n in side]
    if set(params) != set(names):
        raise ValueError(
            f"Flax {kind!r} cell params must have submodules {sorted(names)}, got {sorted(params)}"
        )
    inputs, recurrent = _FLAX_NAMES[kind]
    shapes = {n: {leaf: tuple(np.shape(v)) for leaf, v in params[n].items()} for n in names}
    # D and H are read off the first input kernel [D, H] and the first recurrent one [H, H]:
    # checked first, a bad one is named itself, not as a mismatch of some other submodule
    first_in, first_h = shapes[inputs[0]].get("kernel", ()), shapes[recurrent[0]].get("kernel", ())
    if len(first_in) != 2 or len(first_h) != 2 or first_h[0] != first_h[1]:
        raise ValueError(
            f"Flax {kind!r} cell params[{inputs[0]!r}] and params[{recurrent[0]!r}] must have "
            f"kernels [D, H] and [H, H], got {shapes[inputs[0]]} and {shapes[recurrent[0]]}"
        )
    size_in, hidden = first_in[:1], first_h[1:]
    for name in names:
        want = {"kernel": (size_in if name in inputs else hidden) + hidden}
        if name in _FLAX_BIASED[kind]:
            want["bias"] = hidden
        if shapes[name] != want:
            raise ValueError(
                f"Flax {kind!r} cell params[{name!r}] must be {want} (D={size_in[0]}, "
                f"H={hidden[0]}), got {shapes[name]}"
            )
    return params
