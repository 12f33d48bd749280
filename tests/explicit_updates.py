"""Run by tests/test_sharding.py in a subprocess with 8 forced CPU devices: every optimizer's
update under a mesh of explicit axes (``jax.sharding.AxisType.Explicit``, set with
``jax.set_mesh``), where every array's type carries its sharding and an operation whose
result's sharding is ambiguous is an error. Prints one JSON report: per optimizer and
partitioning, the error if any, the largest difference from the one-device update (relative
to the leaf's largest magnitude), whether each update kept its parameter's sharding, and the
all-gathers of the compiled step (elements, and whether any is inside a loop)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding

import jadam
from tests.sharded_updates import PARTITIONINGS, SHAPES, gathered_elements, make


def gathers_in_loops(hlo: str) -> int:
    """How many all-gathers lie in the body of a while loop (run at every iteration)."""
    bodies = set(re.findall(r"\bbody=%?([\w.\-]+)", hlo))
    count, current = 0, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            current = header.group(1)
        elif current in bodies and re.search(r"all-gather(?:-start)?\(", line):
            count += 1
    return count


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    grads = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    report: dict[str, Any] = {}
    for name in sys.argv[1:] or sorted(jadam.optimizers):
        tx = make(name)
        want, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        for part, specs in PARTITIONINGS.items():
            if part == "replicated":
                continue
            entry: dict[str, Any] = {}
            with jax.set_mesh(mesh):
                def put(t: dict, specs: dict = specs) -> dict:
                    return {k: jax.device_put(v, NamedSharding(mesh, specs[k]))
                            for k, v in t.items()}
                try:
                    p, g = put(params), put(grads)
                    state = jax.jit(tx.init)(p)
                    step = jax.jit(tx.update)
                    got, _ = step(g, state, p)
                    hlo = step.lower(g, state, p).compile().as_text()
                except Exception as e:  # reported, so that every optimizer is checked
                    entry["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                else:
                    entry["diff"] = max(
                        float(np.max(np.abs(np.asarray(got[k]) - np.asarray(want[k])),
                                     initial=0.0))
                        / max(float(np.max(np.abs(np.asarray(want[k])), initial=0.0)), 1e-30)
                        for k in SHAPES)
                    entry["kept"] = all(got[k].sharding.spec == NamedSharding(
                        mesh, specs[k]).spec for k in SHAPES)
                    entry["gathered_elements"] = gathered_elements(hlo)
                    entry["gathers_in_loops"] = gathers_in_loops(hlo)
            report[f"{name}/{part}"] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
