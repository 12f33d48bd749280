"""jadam.one_pass: with XLA:CPU's multi-output fusion on, one loop per large array; without the
flag, the optimizer unchanged. That its updates are the plain optimizer's bit for bit (without
FMA) is tested in tests/test_without_fma.py."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import jadam
from tests.helpers import train_step

# (jadam.one_pass is the function; its module holds the automatic choice)
one_pass_module = importlib.import_module("jadam.one_pass")


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


def _tree(n: int) -> dict:
    return {"big": jnp.linspace(-1.0, 1.0, n), "small": jnp.linspace(0.5, 2.0, 100)}


def test_by_default_large_leaves_take_one_pass_when_lowered_for_a_gpu() -> None:
    """Plain ``jadam.adam`` (no flag, no wrapper) lowered for an NVIDIA GPU computes a leaf of
    ``AUTOMATIC_MIN_SIZE`` elements from the old moments, as one_pass does: its inputs pass
    through optimization barriers (one_pass's hidden 1s); a smaller leaf does not. Lowered for
    TPU, as for CPU, the plain formula. (Lowering for another platform needs no device.)"""
    n = one_pass_module.AUTOMATIC_MIN_SIZE

    def barriers(tree: dict, platform: str) -> int:
        tx = jadam.adam(1e-3)
        s = tx.init(tree)
        lowered = jax.jit(train_step(tx)).trace(tree, s, tree).lower(lowering_platforms=(platform,))
        return lowered.as_text().count("optimization_barrier")

    small = {"small": _tree(n)["small"]}
    assert barriers(_tree(n), "cuda") > barriers(small, "cuda")
    assert barriers(_tree(n - 1), "cuda") == barriers(small, "cuda")
    assert barriers(_tree(n), "tpu") == barriers(small, "tpu")


def test_by_default_on_cpu_the_program_is_the_plain_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled for the CPU, the automatic choice leaves no conditional and the plain formula's
    loops: the same number of loops and bit-identical results as with the choice removed."""
    if jax.default_backend() != "cpu":
        pytest.skip("compiles for this process's default backend, not a CPU")
    tree = _tree(one_pass_module.AUTOMATIC_MIN_SIZE)
    grads = jax.tree.map(lambda x: jnp.cos(3 * x), tree)

    def run() -> tuple:
        tx = jadam.adam(1e-3)
        s = tx.init(tree)
        compiled = jax.jit(train_step(tx)).lower(tree, s, grads).compile()
        p = tree
        for _ in range(3):
            p, s = compiled(p, s, grads)
        return compiled.as_text(), p, s

    text, p, s = run()
    monkeypatch.setattr(one_pass_module, "automatic", lambda kernel, **_: kernel)
    plain_text, plain_p, plain_s = run()
    assert "conditional" not in text
    assert text.count(" fusion(") == plain_text.count(" fusion(")
    chex.assert_trees_all_equal((p, s), (plain_p, plain_s))
