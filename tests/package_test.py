"""The package as a new user meets it: a light import, the public names."""

import subprocess
import sys

import rnnjax


def test_import_rnnjax_does_not_import_tensorflow():
    code = (
        "import sys, rnnjax, rnnjax.train, rnnjax.data; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_public_name_resolves():
    for name in rnnjax.__all__:
        assert getattr(rnnjax, name) is not None, name


BUILD_EVERYTHING = """
import jax, optax, rnnjax
from rnnjax import cells
built = [
    cells.simple(8, learn_initial_carry=True), cells.indrnn(8), cells.gru(8, reset_after=False),
    cells.lstm(8, peepholes=True, proj_size=4, layer_norm=True, learn_initial_carry=True),
    cells.min_gru(8), cells.min_lstm(8), cells.lru(8, learn_initial_carry=True),
    cells.stack(cells.gru(8), cells.gru(8)), cells.output_projection(cells.gru(8), 3),
    rnnjax.seq2vec(
        rnnjax.serial(
            rnnjax.rnn(cells.gru(8), carry_dropout=0.2), rnnjax.dropout(0.1),
            rnnjax.residual(rnnjax.bidirectional(cells.lstm(4))),
        ),
        rnnjax.dense(10), in_size=3,
    ),
    rnnjax.seq2seq(rnnjax.rnn(cells.simple(8)), rnnjax.dense(1), in_size=1),
    rnnjax.vec2seq(cells.gru(8), rnnjax.dense(2), in_size=3, length=5),
    rnnjax.encoder_decoder(
        rnnjax.rnn(cells.gru(8)), cells.gru(8), src_embed=rnnjax.embed(10, 4),
        tgt_embed=rnnjax.embed(10, 4), head=rnnjax.dense(10), attention="luong",
    ),
    optax.adam(1e-3),
]
jax.config.update("jax_num_cpu_devices", 2)  # raises once anything has touched a device
print(jax.device_count())
"""


def test_building_cells_and_models_touches_no_device():
    """So ``distributed.split_cpu`` (which must run before any device is used) may come after
    the model is built, as in the README."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD_EVERYTHING], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2"]
