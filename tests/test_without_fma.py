"""The layouts that promise the plain optimizer's bits, checked where that promise holds on
every x86-64 CPU: in a process whose instruction set is capped at AVX, without fused
multiply-add.

With FMA, LLVM contracts ``a * b + c`` into one rounding where its vectoriser pairs them, and
that depends on the loop's length and on the CPU: a packed buffer, a shard or a fused loop is
another loop than the plain leaf's, and on an AMD EPYC with AVX and FMA their results differed by
1 ulp where this project's Xeon gave equal bits (shared/notes/cpus-and-bits.md). Without FMA the
same operations in the same order round alike, whatever the vector width. The in-process tests
(tests/test_packing.py, tests/test_one_pass.py) compare the same layouts with the host's full
instruction set, to 2 ulps (of each array's largest magnitude in tests/test_packing.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import pytest

from tests.optimizers import CASES
from tests.test_packing import _is_elementwise

_SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np, optax, jadam
    from tests.helpers import gradient_sequence, random_tree
    from tests.optimizers import CASES
    from tests.test_packing import _is_elementwise

    def with_big(tree, rng):  # 4,099 elements: the vector loop and its scalar tail
        return {**tree, "big": jnp.asarray(rng.standard_normal(4099), jnp.float32)}

    params = with_big(random_tree(np.random.default_rng(0)), np.random.default_rng(1))
    grads = [with_big(g, np.random.default_rng(2 + i))
             for i, g in enumerate(gradient_sequence(1, 3))]

    def run(t, hp=None):
        # Three jitted steps; with hp, t(**hp) is built inside the step, hp traced arguments.
        def step(p, s, g, hp):
            tx = t if hp is None else t(**hp)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        step = jax.jit(step)
        p, s = params, (t if hp is None else t(**hp)).init(params)
        for g in grads:
            p, s = step(p, s, g, hp)
        if isinstance(s, jadam.PackedState):
            s = s.unpacked()
        if hasattr(s, "inner_state"):  # inject_hyperparams's
            s = s.inner_state
        return [np.asarray(x) for x in jax.tree.leaves((p, s))]

    def bytes_apart(a, b):  # also -0.0 against 0.0, and NaNs
        return sum(int(np.sum(x.reshape(-1).view(np.uint8) != y.reshape(-1).view(np.uint8)))
                   for x, y in zip(a, b, strict=True))

    report = {}
    for case in CASES:
        tx = case.make()
        plain = run(tx)
        traced = run(case.make, {k: jnp.float32(v) for k, v in case.numeric_kwargs.items()})
        report[f"{case.id}/traced"] = bytes_apart(plain, traced)
        report[f"{case.id}/injected"] = bytes_apart(plain, run(case.injected()))
        one_pass = run(tx.with_options(one_pass_min_size=1))
        report[f"{case.id}/one_pass"] = bytes_apart(plain, one_pass)
        if _is_elementwise(case.id):
            packed = run(jadam.packed(tx, min_size=1000))
            report[f"{case.id}/packed"] = bytes_apart(plain, packed)
    print(json.dumps(report))
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_bit_for_bit_the_plain_updates_without_fma() -> None:
    """Every optimizer of the test table, three jitted steps (update and apply) on a tree with
    small leaves and one of 4,099 elements: its numeric hyperparameters passed as traced
    arguments, the optimizer under optax.inject_hyperparams, one_pass on every array, and
    packed state (the small leaves in buffers, the large one as it is), each give parameters
    and state equal to the plain optimizer's byte for byte. Multi-output fusion is on, as
    one_pass needs it."""
    flags = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion --xla_cpu_max_isa=AVX"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                         text=True, timeout=900, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    want = {f"{c.id}/{v}" for c in CASES for v in ("traced", "injected", "one_pass")} | {
        f"{c.id}/packed" for c in CASES if _is_elementwise(c.id)}
    assert set(report) == want
    assert {k: v for k, v in report.items() if v} == {}


# Tests that assert equal bits where tests.helpers.WITHOUT_FMA holds, and a tolerance elsewhere.
_EXACT_TESTS = [
    "tests/test_tune.py::test_sequential_sweep_is_the_solo_runs",
    "tests/test_tune.py::test_halving_survivors_continue_as_if_never_paused",
    "tests/test_tune.py::test_compare_steps_a_trainable_from_python",
    "tests/test_tools.py::test_the_examples_trainable_trains_as_its_curves_function",
    "tests/test_adam.py::test_any_fixed_hyperparameters_equal_traced_ones",
    "tests/test_mnist_cnn.py::test_state_layouts_train_alike",
    *(f"tests/test_nnx.py::test_nnx_optimizer_trains_as_the_functional_loop[adam-{wrap}]"
      for wrap in ("plain", "quantized", "one_pass", "skip_nonfinite", "cautious", "packed")),
    *(f"tests/test_complex.py::test_layouts_keep_complex_updates[{wrap}]"
      for wrap in ("packed", "one_pass", "skip_nonfinite")),
]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_bit_for_bit_claims_of_other_test_files_without_fma() -> None:
    """A sweep against solo runs, halving's curves against straight runs, a comparison
    stepped from Python against one compiled call, fixed against
    traced hyperparameters (Hypothesis), the
    example's packed state against plain state, Adam in every wrapper in flax.nnx against
    the functional loop, and complex AdamW packed, one-pass and skipping against plain: run
    by pytest in one process without FMA, where each asserts equal bits."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist",
                          "-p", "no:cacheprovider", *_EXACT_TESTS], env=env,
                         capture_output=True, text=True, timeout=900,
                         cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"{len(_EXACT_TESTS)} passed" in out.stdout, out.stdout[-3000:]
