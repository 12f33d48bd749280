"""jadam.one_pass: with XLA:CPU's multi-output fusion on, one loop per large array; without the
flag, the optimizer unchanged. That its updates are the plain optimizer's bit for bit (without
FMA) is tested in tests/test_without_fma.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import optax
import pytest

import jadam


def test_without_the_flag_on_cpu_it_warns_and_changes_nothing() -> None:
    if jax.default_backend() != "cpu" or "multi_output_fusion" in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("this process can fuse; the subprocess test covers it")
    tx = jadam.adam(1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert jadam.one_pass(tx) is tx
    assert any("xla_cpu_use_multi_output_fusion" in str(w.message) for w in caught)
    with pytest.raises(TypeError, match="expected a jadam optimizer"):
        jadam.one_pass(optax.adam(1e-3))
    with pytest.raises(ValueError, match="min_size"):
        jadam.one_pass(tx, min_size=0)


def test_one_loop_per_large_leaf_with_the_flag() -> None:
    """In a process started with the flag: the donated step (update and apply) of a 1M leaf
    compiles to one loop fusion with three outputs (parameter, mu, nu) and no array-sized copy;
    the plain formula needs more loops."""
    script = textwrap.dedent("""
        import re, jax, jax.numpy as jnp, optax, jadam
        n = 1 << 20
        p, g = jnp.ones(n), jnp.full(n, 0.1)

        def loops(tx):
            def step(p, s, g):
                u, s = tx.update(g, s, p)
                return optax.apply_updates(p, u), s
            text = jax.jit(step, donate_argnums=(0, 1)).lower(p, tx.init(p), g).compile().as_text()
            lines = text.splitlines()
            big = [line for line in lines
                   if " fusion(" in line and f"f32[{n}]" in line.split("=")[1].split("fusion(")[0]]
            copies = [line for line in lines if f"f32[{n}]" in line and " copy(" in line]
            return len(big), len(copies)

        print([loops(jadam.one_pass(jadam.adam(1e-3))), loops(jadam.adam(1e-3))])
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    one_pass, plain = eval(out.stdout.strip())  # two (fusions, copies) tuples
    assert one_pass == (1, 0), out.stdout
    assert plain[0] > 1, out.stdout
