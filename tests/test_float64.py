"""float64 (and complex128) parameters with x64 enabled get float64 steps: the
hyperparameters as given (not rounded to float32), the bias corrections and every per-step
scalar computed in float64.

Run in a subprocess, since x64 is process-wide: each optimizer of the test table, 50 steps on
float64 parameters against its float64 paper reference with the hyperparameters as given.
Before, the scalars were float32 and the first Adam step at lr 0.1, eps 0 was -0.1000000031.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import json, jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from tests import helpers
    from tests.optimizers import CASES
    import jadam

    report = {}
    for dtype, steps in ((np.float64, 50), (np.complex128, 10)):
        params = helpers.random_tree(np.random.default_rng(0), dtype)
        grads = helpers.gradient_sequence(1, steps, dtype)
        for case in CASES:
            if dtype == np.complex128 and "lion" in case.id:
                continue  # (Lion refuses complex parameters: tests/test_complex.py)
            ours, _ = helpers.run_jadam(case.make(), params, grads)
            ref = helpers.run_reference(case.reference, params, grads)
            worst = 0.0
            for a, b in zip(jax.tree.leaves(ours[-1]), jax.tree.leaves(ref[-1]), strict=True):
                assert a.dtype == dtype, a.dtype
                if b.size:
                    error = np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))
                    worst = max(worst, float(error))
            report[f"{case.id} {np.dtype(dtype)}"] = worst
    tx = jadam.adam(0.1, eps=0.0)
    p = {"w": jnp.ones(3, jnp.float64)}
    u, _ = tx.update({"w": jnp.full(3, 0.3, jnp.float64)}, tx.init(p), p)
    report["first adam step"] = float(u["w"][0])
    print(json.dumps(report))
""")


def test_float64_leaves_step_in_float64() -> None:
    """Tolerance 1e-12 of each leaf's scale after 50 steps (float32 steps are ~1e-7 off, so a
    scalar left in float32 fails by 10^5), and after 10 steps on complex128 parameters (every
    optimizer but Lion's two); the first Adam step is -lr to 2 float64 ulps."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(report.pop("first adam step") + 0.1) <= 2 * 2.0**-52 * 0.1
    assert {k: v for k, v in report.items() if not v <= 1e-12} == {}
