"""Run by tests/test_sharding.py in a subprocess with 8 forced CPU devices (the test process
itself has one): every optimizer's update, sharded over a 2x4 mesh in several ways, against the
unsharded update, with the collectives of the compiled program. Prints one JSON report."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jadam

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")

# Leaf shapes, and for each partitioning the spec of each leaf over the ("data", "model") mesh.
SHAPES = {"kernel": (8, 16), "bias": (16,), "conv": (3, 3, 4, 8), "scale": ()}
PARTITIONINGS = {
    "replicated": {"kernel": P(), "bias": P(), "conv": P(), "scale": P()},
    "model-rows": {"kernel": P("model", None), "bias": P("model"),
                   "conv": P(None, None, "model", None), "scale": P()},
    "model-cols": {"kernel": P(None, "model"), "bias": P("model"),
                   "conv": P(None, None, None, "model"), "scale": P()},
    "data-model": {"kernel": P("data", "model"), "bias": P("model"),
                   "conv": P(None, None, "data", "model"), "scale": P()},
}


# Layouts of the state, on Adam: 8-bit blocks (of the leaves of at least 64 elements) and
# packed buffers (of the leaves under 100 elements: a leaf split over devices stays unpacked);
# and the wrapper that skips non-finite steps.
LAYOUTS = {
    "adam-8bit": lambda: jadam.quantized(jadam.adam(1e-3), min_size=64),
    "adam-4bit": lambda: jadam.quantized(jadam.adam(1e-3), bits=4, min_size=64),
    "adam-packed": lambda: jadam.packed(jadam.adam(1e-3), min_size=100),
    "adam-skip-nonfinite": lambda: jadam.skip_nonfinite(jadam.adam(1e-3)),
    # bfloat16 parameters (the "-bf16" suffix), their sums Kahan-compensated or rounded at
    # random: elementwise, the compensation split like its parameter, the random bits a
    # function of each element's index in the whole array.
    "adamw-kahan-bf16": lambda: jadam.kahan_summation(jadam.adamw(1e-2, mu_dtype=jnp.float32)),
    "adamw-stochastic-bf16": lambda: jadam.stochastic_rounding(jadam.adamw(1e-2), seed=3),
}


def make(name: str) -> optax.GradientTransformation:
    if name in LAYOUTS:
        return LAYOUTS[name]()
    kwargs = {"learning_rate": 0.1, "momentum": 0.9} if name == "sgd" else {}
    return jadam.optimizers[name].make(**kwargs)


def collectives(hlo: str) -> dict[str, int]:
    counts = {}
    for op in COLLECTIVES:
        n = len(re.findall(rf"\b{op}(?:-start)?\(", hlo))
        if n:
            counts[op] = n
    return counts


def gathered_elements(hlo: str) -> int:
    """How many elements the program's all-gathers put on one device, in all: the sum of
    their results' sizes."""
    total = 0
    for dims in re.findall(r"= \w+\[([\d,]*)\][^=]*? all-gather(?:-start)?\(", hlo):
        total += int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    rng = np.random.default_rng(0)
    params32 = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
    grads32 = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in SHAPES.items()}
             for _ in range(3)]
    report: dict[str, Any] = {}
    names = sys.argv[1:] or [*sorted(jadam.optimizers), *LAYOUTS]
    for name in names:
        tx = make(name)
        dtype = jnp.bfloat16 if name.endswith("-bf16") else jnp.float32
        params = {k: v.astype(dtype) for k, v in params32.items()}
        grads = [{k: v.astype(dtype) for k, v in g.items()} for g in grads32]

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s, u

        # Unsharded: one device.
        p1, s1 = params, jax.jit(tx.init)(params)
        for g in grads:
            p1, s1, u1 = jax.jit(step)(p1, s1, g)
        modes = [(part, specs, None) for part, specs in PARTITIONINGS.items()]
        modes.append(("zero-data", PARTITIONINGS["replicated"], "data"))
        for part, specs, zero_axis in modes:
            shardings = {k: NamedSharding(mesh, specs[k]) for k in SHAPES}

            def put(t, shardings=shardings):
                return {k: jax.device_put(v, shardings[k]) for k, v in t.items()}

            p = put(params)
            if name in LAYOUTS:  # layouts decide at init from where the leaves are
                s = tx.init(p)
                state_shardings = jadam.state_shardings(tx, p, state=s, zero_axis=zero_axis)
                s = jax.device_put(s, state_shardings)
            else:
                state_shardings = jadam.state_shardings(tx, p, zero_axis=zero_axis)
                s = jax.jit(tx.init, out_shardings=state_shardings)(p)
            # No out_shardings: XLA must keep the inputs' shardings by itself. Under ZeRO the
            # parameters stay replicated while the state is split, which XLA cannot guess.
            out = (shardings, state_shardings, shardings) if zero_axis else None
            compiled = jax.jit(step, out_shardings=out).lower(p, s, put(grads[0])).compile()
            for g in grads:
                p, s, u = compiled(p, s, put(g))
            out_p, out_s, out_u = compiled.output_shardings
            kept = all(
                a.is_equivalent_to(b, len(x.shape))
                for a, b, x in zip(
                    jax.tree.leaves((out_p, out_u, out_s)),
                    jax.tree.leaves((shardings, shardings, state_shardings)),
                    jax.tree.leaves((params, params, s)), strict=True))
            # The parameters and updates, and the state where its layout is the same (a leaf
            # split over devices is neither packed nor quantized).
            same_layout = jax.tree.structure(s) == jax.tree.structure(s1) and all(
                (a.shape, a.dtype) == (b.shape, b.dtype)
                for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s1), strict=True))
            pairs = (jax.tree.leaves((p, u, s) if same_layout else (p, u)),
                     jax.tree.leaves((p1, u1, s1) if same_layout else (p1, u1)))
            diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)),
                                  initial=0.0) / max(float(np.max(np.abs(b), initial=0.0)), 1e-30))
                     for a, b in zip(*pairs, strict=True)
                     if jnp.issubdtype(jnp.asarray(b).dtype, jnp.floating)]
            device0 = jax.devices()[0]
            report[f"{name}/{part}"] = {
                "max_relative_difference": max(diffs),
                "bitwise": all(d == 0 for d in diffs),
                "collectives": collectives(compiled.as_text()),
                "gathered_elements": gathered_elements(compiled.as_text()),
                "shardings_kept": kept,
                "same_state_layout": same_layout,
                "state_bytes": sum(x.nbytes for x in jax.tree.leaves(s1)),
                "state_bytes_on_device_0": sum(
                    shard.data.nbytes for x in jax.tree.leaves(s)
                    for shard in x.addressable_shards if shard.device == device0),
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
