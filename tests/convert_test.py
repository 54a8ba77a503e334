"""rnnjax.convert: Flax and PyTorch layers with converted weights give rnnjax's outputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import convert

B, T, D, H, P = 3, 7, 5, 8, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}
KINDS = ["rnn", "lstm", "gru"]
RNNJAX_CELLS = {"rnn": rnnjax.cells.simple, "lstm": rnnjax.cells.lstm, "gru": rnnjax.cells.gru}


def _xs(seed=0, size=D):
    return np.random.default_rng(seed).normal(size=(B, T, size)).astype(np.float32)


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **TOL)


# ---------------------------------------------------------------------------------------------
# Flax linen


FLAX_CELLS = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _randomize(tree, seed=1):
    """Every leaf replaced by N(0, 0.5²) noise, so that zero-initialised biases are tested too."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


def _flax_rnn(kind):
    """A Flax nn.RNN and its variables, every leaf random (Flax initialises biases to zero)."""
    layer = nn.RNN(FLAX_CELLS[kind](features=H), return_carry=True)
    variables = layer.init(jax.random.key(0), _xs())
    return layer, _randomize(variables)


@pytest.mark.parametrize("kind", KINDS)
def test_from_flax_matches_flax_rnn(kind):
    layer, variables = _flax_rnn(kind)
    xs = _xs()
    flax_carry, flax_ys = layer.apply(variables, xs)
    carry, ys = rnnjax.unroll(RNNJAX_CELLS[kind](H), convert.from_flax(kind, variables), xs)
    _close(ys, flax_ys)
    if kind == "lstm":  # Flax's LSTM carry is (c, h), as LSTMCarry
        assert isinstance(carry, rnnjax.cells.LSTMCarry)
        _close(carry.c, flax_carry[0])
        _close(carry.h, flax_carry[1])
    else:
        _close(carry, flax_carry)


@pytest.mark.parametrize("kind", KINDS)
def test_flax_round_trip(kind):
    params = RNNJAX_CELLS[kind](H).init(jax.random.key(2), D)
    back = convert.from_flax(kind, convert.to_flax(kind, params))
    assert back.keys() == params.keys()
    for name in params:
        np.testing.assert_array_equal(back[name], params[name])
    _, variables = _flax_rnn(kind)
    cell_params = variables["params"]["cell"]
    again = convert.to_flax(kind, convert.from_flax(kind, cell_params))
    jax.tree.map(np.testing.assert_array_equal, again, cell_params)


@pytest.mark.parametrize("kind", KINDS)
def test_to_flax_runs_in_flax(kind):
    params = _randomize(RNNJAX_CELLS[kind](H).init(jax.random.key(3), D), seed=4)
    xs = _xs()
    layer = nn.RNN(FLAX_CELLS[kind](features=H), return_carry=True)
    flax_carry, flax_ys = layer.apply({"params": {"cell": convert.to_flax(kind, params)}}, xs)
    carry, ys = rnnjax.unroll(RNNJAX_CELLS[kind](H), params, xs)
    _close(ys, flax_ys)
    _close(jax.tree.leaves(carry), jax.tree.leaves(flax_carry))


def test_flax_errors():
    _, variables = _flax_rnn("gru")
    cell = dict(variables["params"]["cell"])
    with pytest.raises(ValueError, match="kind must be one of"):
        convert.from_flax("transformer", cell)
    with pytest.raises(ValueError, match="submodules"):
        convert.from_flax("gru", {k: v for k, v in cell.items() if k != "hn"})
    with pytest.raises(ValueError, match=r"params\['hz'\] must be"):
        convert.from_flax("gru", cell | {"hz": {"kernel": jnp.zeros((H + 1, H))}})
    with pytest.raises(ValueError, match="submodules"):
        convert.from_flax("lstm", cell)
    lstm = rnnjax.cells.lstm(H, peepholes=True).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="cannot represent.*peep"):
        convert.to_flax("lstm", lstm)
    gru_v1 = rnnjax.cells.gru(H, reset_after=False).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="missing.*bh_n"):
        convert.to_flax("gru", gru_v1)
    simple = rnnjax.cells.simple(H).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match=r"params\['wh'\] must have shape \(8, 8\)"):
        convert.to_flax("rnn", simple | {"wh": jnp.zeros((H, H + 1))})


@pytest.mark.parametrize("hr", [{}, {"kernel": jnp.zeros((H, H + 1))}], ids=["none", "not_square"])
def test_flax_errors_blame_the_kernel_the_sizes_are_read_from(hr):
    """D and H come from ``ir`` and ``hr``: a bad ``hr`` must not be reported as a bad ``ir``
    with made-up expected shapes."""
    _, variables = _flax_rnn("gru")
    cell = dict(variables["params"]["cell"]) | {"hr": hr}
    want = r"params\['ir'\] and params\['hr'\] must have kernels \[D, H\] and \[H, H\]"
    with pytest.raises(ValueError, match=want):
        convert.from_flax("gru", cell)
    with pytest.raises(ValueError, match=r"params\['hz'\] must be .*\(D=5, H=8\)"):
        convert.from_flax("gru", dict(variables["params"]["cell"]) | {"hz": {}})


# ---------------------------------------------------------------------------------------------
# PyTorch (each test skips cleanly where torch is not installed)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return torch


def _torch_module(torch, kind, **kwargs):
    module_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    return module_cls(D, H, batch_first=True, dtype=torch.float32, **kwargs)


def _run_torch(torch, module, xs):
    """``(ys, h_n, c_n or None)`` as numpy; ``h_n``/``c_n`` are ``[layers * dirs, B, ...]``."""
    with torch.no_grad():
        ys, final = module(torch.from_numpy(xs))
    h_n, c_n = final if isinstance(final, tuple) else (final, None)
    return ys.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()


def _check_final(carry, h_n, c_n):
    if c_n is None:
        _close(carry, h_n)
    else:
        _close(carry.h, h_n)
        _close(carry.c, c_n)


TORCH_CASES = [
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {}),
    ("lstm", {"proj_size": P}),
    ("gru", {}),
    ("gru", {"bias": False}),
]


def _rnnjax_cell(kind, kwargs):
    if kind == "lstm":
        return rnnjax.cells.lstm(H, proj_size=kwargs.get("proj_size"))
    if kind == "rnn":
        return rnnjax.cells.simple(H, activation=kwargs.get("nonlinearity", "tanh"))
    return rnnjax.cells.gru(H)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(("kind", "kwargs"), TORCH_CASES)
def test_from_torch_matches_torch(kind, kwargs):
    torch = _torch()
    module = _torch_module(torch, kind, **kwargs)
    xs = _xs()
    torch_ys, h_n, c_n = _run_torch(torch, module, xs)
    params = convert.from_torch(kind, dict(module.named_parameters()))  # tensors needing grad
    carry, ys = rnnjax.unroll(_rnnjax_cell(kind, kwargs), params, xs)
    _close(ys, torch_ys)
    _check_final(carry, h_n[0], None if c_n is None else c_n[0])


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_layers_bidirectional(kind):
    torch = _torch()
    module = _torch_module(torch, kind, num_layers=2, bidirectional=True)
    xs = _xs()
    torch_ys, h_n, c_n = _run_torch(torch, module, xs)
    layers = convert.from_torch_layers(kind, module.state_dict(), 2, bidirectional=True)
    cell, inputs, finals = RNNJAX_CELLS[kind](H), xs, []
    for forward, backward in layers:
        carry_f, ys_f = rnnjax.unroll(cell, forward, inputs)
        carry_b, ys_b = rnnjax.unroll(cell, backward, inputs, reverse=True)
        inputs, finals = jnp.concatenate([ys_f, ys_b], axis=-1), [*finals, carry_f, carry_b]
    _close(inputs, torch_ys)
    for k, carry in enumerate(finals):  # PyTorch orders h_n as l0 fwd, l0 bwd, l1 fwd, l1 bwd
        _check_final(carry, h_n[k], None if c_n is None else c_n[k])


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(("kind", "kwargs"), [c for c in TORCH_CASES if "bias" not in c[1]])
def test_torch_round_trip(kind, kwargs):
    torch = _torch()
    module = _torch_module(torch, kind, **kwargs)
    copy = _torch_module(torch, kind, **kwargs)
    state = convert.to_torch(kind, convert.from_torch(kind, module.state_dict()))
    copy.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    xs = _xs(seed=1)
    for expected, actual in zip(
        _run_torch(torch, module, xs), _run_torch(torch, copy, xs), strict=True
    ):
        if expected is not None:
            _close(actual, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_a_module_without_biases_round_trips(kind):
    torch = _torch()
    module, copy = _torch_module(torch, kind, bias=False), _torch_module(torch, kind, bias=False)
    params = convert.from_torch(kind, module.state_dict())
    state = convert.to_torch(kind, params, bias=False)
    copy.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    xs = _xs(seed=2)
    _close(_run_torch(torch, copy, xs)[0], _run_torch(torch, module, xs)[0])
    params["b"] = params["b"].at[0].set(0.5)
    with pytest.raises(ValueError, match="bias=False.* non-zero biases"):
        convert.to_torch(kind, params, bias=False)


def test_to_torch_reverse_names_and_gru_bias():
    params = rnnjax.cells.gru(H).init(jax.random.key(0), D)
    params["bh_n"] = jnp.arange(H, dtype=jnp.float32)
    state = convert.to_torch("gru", params, layer=1, reverse=True)
    assert sorted(state) == [
        f"{n}_l1_reverse" for n in ("bias_hh", "bias_ih", "weight_hh", "weight_ih")
    ]
    np.testing.assert_array_equal(state["bias_hh_l1_reverse"][2 * H :], np.arange(H))
    np.testing.assert_array_equal(state["bias_hh_l1_reverse"][: 2 * H], 0)
    assert state["weight_ih_l1_reverse"].shape == (3 * H, D)


def test_torch_errors():
    torch = _torch()
    state = _torch_module(torch, "lstm", proj_size=P).state_dict()
    with pytest.raises(ValueError, match="kind must be one of"):
        convert.from_torch("transformer", state)
    with pytest.raises(ValueError, match="kind must be one of"):
        convert.from_torch(["lstm"], state)
    with pytest.raises(ValueError, match=r"proj_size also needs weight_hr_l0, which state_dict"):
        convert.from_torch("lstm", {k: v for k, v in state.items() if k != "weight_hr_l0"})
    with pytest.raises(ValueError, match=r"missing \['weight_hh_l0'\]"):
        convert.from_torch("lstm", {k: v for k, v in state.items() if k != "weight_hh_l0"})
    with pytest.raises(ValueError, match="missing.*weight_ih_l1"):
        convert.from_torch("lstm", state, layer=1)
    with pytest.raises(ValueError, match=r"bias_ih_l0'\] must have shape \(32,\)"):
        convert.from_torch("lstm", state | {"bias_ih_l0": np.zeros(31)})
    with pytest.raises(ValueError, match=r"must be \[3\*H, D\]"):
        convert.from_torch("gru", state)  # 4H rows is not a multiple of 3 when H = 8
    with pytest.raises(ValueError, match=r"weight_hr_l0'\] must have shape \(4, 8\)"):
        convert.from_torch("lstm", state | {"weight_hr_l0": np.zeros((P, H + 1))})
    peep = rnnjax.cells.lstm(H, peepholes=True).init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="cannot represent.*peep"):
        convert.to_torch("lstm", peep)
    with pytest.raises(ValueError, match="missing.*bh_n"):
        convert.to_torch("gru", rnnjax.cells.gru(H, reset_after=False).init(jax.random.key(0), D))
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(32,\)"):
        params = rnnjax.cells.lstm(H).init(jax.random.key(0), D)
        convert.to_torch("lstm", params | {"b": jnp.zeros(8)})
    for num_layers in (0, 2.0):
        with pytest.raises(ValueError, match=f"num_layers must be an int >= 1, got {num_layers}"):
            convert.from_torch_layers("lstm", state, num_layers)


def test_from_torch_layers_will_not_leave_layers_or_directions_out():
    torch = _torch()
    deep = _torch_module(torch, "gru", num_layers=2).state_dict()
    with pytest.raises(ValueError, match=r"num_layers=1, bidirectional=False would leave out: "):
        convert.from_torch_layers("gru", deep, 1)
    both_ways = _torch_module(torch, "gru", bidirectional=True).state_dict()
    with pytest.raises(ValueError, match=r"leave out: \['bias_hh_l0_reverse'"):
        convert.from_torch_layers("gru", both_ways, 1)
    assert len(convert.from_torch_layers("gru", deep, 2)) == 2


def test_bfloat16_weights_convert_both_ways():
    """numpy holds no torch bfloat16, and torch.from_numpy takes no ml_dtypes bfloat16."""
    torch = _torch()
    module = _torch_module(torch, "lstm")
    params = convert.from_torch("lstm", module.to(torch.bfloat16).state_dict())
    want = {k: v.float().numpy() for k, v in module.state_dict().items()}  # bf16 values, exactly
    np.testing.assert_array_equal(params["wx"], want["weight_ih_l0"].T)
    state = convert.to_torch("lstm", jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
    copy = _torch_module(torch, "lstm")
    copy.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    np.testing.assert_array_equal(copy.weight_hh_l0.detach().numpy(), want["weight_hh_l0"])
