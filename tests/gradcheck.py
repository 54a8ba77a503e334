"""Gradient checks that compile fast: shared by the cell and unroll tests."""

import functools

import jax
from jax.test_util import check_jvp, check_vjp


@functools.cache
def fast_compile_options():
    """XLA options that cut CPU compile time about 3x for these tiny programs, where supported.

    Compiling, not running, is nearly all of this file's time.
    """
    candidates = [
        {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
        {"xla_backend_optimization_level": 0},
    ]
    for options in candidates:
        try:
            jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
            return options
        except jax.errors.JaxRuntimeError:
            pass
    return {}


def fast_jit(fn):
    return jax.jit(fn, compiler_options=fast_compile_options())


def check_grads(f, args, modes=("rev",)):
    """``jax.test_util.check_grads(f, args, order=1, modes=modes)``, compiled fast.

    The same two checks check_grads runs at order 1 (``check_jvp``/``check_vjp``: autodiff
    against central differences along a random direction), but with ``f``, its JVP and its VJP
    each one ``fast_jit`` program: check_grads itself cannot take compiler options, since it
    differentiates through ``f``.
    """
    fast_f = fast_jit(f)
    if "fwd" in modes:
        check_jvp(fast_f, fast_jit(functools.partial(jax.jvp, f)), args)
    if "rev" in modes:
        vjp = fast_jit(lambda args, cotangent: jax.vjp(f, *args)[1](cotangent))
        check_vjp(fast_f, lambda *a: (fast_f(*a), functools.partial(vjp, a)), args)
