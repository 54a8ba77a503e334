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
