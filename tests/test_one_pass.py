"""jadam.one_pass: the update computed from the old moments gives the plain optimizer's values
bit for bit, and, with XLA:CPU's multi-output fusion on, one loop per large array."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import jax
import optax
import pytest

import jadam
from tests.optimizers import CASES

# Run in a process with multi-output fusion on (the layout's one loop per array) and the CPU
# instruction set capped below FMA: LLVM then has no multiply-add to contract, so the same
# arithmetic must give the same bits. With FMA it may contract ``a * b + c * d`` either way in
# the fused loop and in the plain ones (1 ulp; see jadam.one_pass).
_EXACT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np, optax
    from tests.helpers import gradient_sequence, random_tree
    from tests.optimizers import CASES

    def with_big(tree, rng):  # 4,099 elements: the vector loop and its scalar tail
        return {**tree, "big": jnp.asarray(rng.standard_normal(4099), jnp.float32)}

    params = with_big(random_tree(np.random.default_rng(0)), np.random.default_rng(1))
    grads = [with_big(g, np.random.default_rng(2 + i))
             for i, g in enumerate(gradient_sequence(1, 3))]
    report = {}
    for case in CASES:
        tx = case.make()
        fused = tx.with_options(one_pass_min_size=1)
        results = []
        for t in (tx, fused):
            def step(p, s, g, t=t):
                u, s = t.update(g, s, p)
                return optax.apply_updates(p, u), s
            step = jax.jit(step)
            p, s = params, t.init(params)
            for g in grads:
                p, s = step(p, s, g)
            results.append([np.asarray(x) for x in jax.tree.leaves((p, s))])
        plain, one = results
        report[case.id] = sum(  # bytes that differ (also -0.0 against 0.0, and NaNs)
            int(np.sum(a.reshape(-1).view(np.uint8) != b.reshape(-1).view(np.uint8)))
            for a, b in zip(plain, one, strict=True))
    print(json.dumps(report))
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_bit_for_bit_the_plain_updates_without_fma() -> None:
    """Every optimizer of the test table, three jitted steps (update and apply) on a tree with
    small leaves and one of 4,099 elements, every array one-pass: parameters and state after
    each run equal the plain layout's byte for byte."""
    flags = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion --xla_cpu_max_isa=AVX"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", _EXACT], env=env, capture_output=True,
                         text=True, timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == {case.id for case in CASES}
    assert {k: v for k, v in report.items() if v} == {}


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
