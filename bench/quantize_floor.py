"""How fast a block-quantized Adam step can be in XLA on this machine: the floor under
``jadam.quantized``'s speed (issue 17's target: 8-bit and 4-bit updates at most 3x optax's
float32 update on a 10M-element leaf).

Times, in one process and interleaved, Adam's update of one leaf of ``--size`` elements:
``optax.adam`` (float32 moments), ``jadam.quantized(jadam.adam)`` with 8 and 4 bits, and
hand-written steps that decode, update and encode both moments with the cheapest block
formats there are, which no one should train with, as lower bounds:

- ``linear int8 blocks``: blocks of 256 with a float32 scale, codes ``round(127 x / max|x|)``
  (one reduction, one multiply and a rounding per element; the first moment loses everything
  below 1/254 of its block's largest, which is why the dynamic map exists);
- ``float8 e4m3 blocks``: the same blocks, codes by XLA's conversion to ``float8_e4m3fn``;
- ``float32 moments in blocks``: Adam with its moments kept as ``(blocks, 256)`` float32
  arrays and nothing encoded (what the step costs before any coding).

Each is timed as ``python -m bench`` times an update (``bench.run``): update and apply in one
jitted step, parameters and state donated.

``python -m bench.quantize_floor [--size 10000000] [--rounds 7]``; prints a table of median
milliseconds and ratios to optax.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jadam
from bench.lowprec import _cpu
from bench.run import Contender, _jax_contender

B = 256


def _adam(g: jax.Array, m: jax.Array, v: jax.Array, t: int = 10) -> tuple[jax.Array, ...]:
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    u = -1e-3 * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return u, m, v


def _blocks(x: jax.Array) -> jax.Array:
    return x.reshape(-1, B)


def copy_step(p: jax.Array, m: jax.Array, v: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
    # (The moments stay in blocks, as codes do: reshaping the new moments back to one axis
    # made XLA:CPU take 34 ms here instead of 7.)
    u, m, v = _adam(_blocks(g), m, v)
    return p + u.reshape(-1), m, v


def _linear_encode(x: jax.Array, signed: bool) -> tuple[jax.Array, jax.Array]:
    s = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    q = jnp.round(x / jnp.where(s > 0, s, 1) * (127 if signed else 255))
    return (q.astype(jnp.int8) if signed else q.astype(jnp.uint8)), s


def linear_step(p: jax.Array, mq: jax.Array, ms: jax.Array, vq: jax.Array, vs: jax.Array,
                g: jax.Array) -> tuple[jax.Array, ...]:
    m = mq.astype(jnp.float32) * (ms / 127)
    v = vq.astype(jnp.float32) * (vs / 255)
    u, m, v = _adam(_blocks(g), m, v)
    return (p + u.reshape(-1), *_linear_encode(m, True), *_linear_encode(v, False))


def _fp8_encode(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    return (x / jnp.where(s > 0, s, 1) * 448).astype(jnp.float8_e4m3fn), s


def fp8_step(p: jax.Array, mq: jax.Array, ms: jax.Array, vq: jax.Array, vs: jax.Array,
             g: jax.Array) -> tuple[jax.Array, ...]:
    m = mq.astype(jnp.float32) * (ms / 448)
    v = vq.astype(jnp.float32) * (vs / 448)
    u, m, v = _adam(_blocks(g), m, v)
    return (p + u.reshape(-1), *_fp8_encode(m), *_fp8_encode(v))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quantize_floor")
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed burst")
    args = parser.parse_args()
    n = args.size // B * B
    rng = np.random.default_rng(0)
    g = jnp.asarray(rng.standard_normal(n), jnp.float32) * 1e-2
    p = jnp.asarray(rng.standard_normal(n), jnp.float32)
    contenders: list[Contender] = []

    def jadam_step(tx: Any) -> Callable[..., Any]:
        def step(p: jax.Array, state: Any, g: jax.Array) -> tuple[jax.Array, Any]:
            u, state = tx.update(g, state, p)
            return optax.apply_updates(p, u), state
        return step

    for name, tx in [("optax.adam", optax.adam(1e-3)), ("jadam.adam", jadam.adam(1e-3)),
                     ("jadam.quantized(adam)", jadam.quantized(jadam.adam(1e-3))),
                     ("jadam.quantized(adam, bits=4)",
                      jadam.quantized(jadam.adam(1e-3), bits=4))]:
        contenders.append(_jax_contender(name, jadam_step(tx), (p + 0, tx.init(p)), (g,)))
    blocks = (n // B, B)
    scale = lambda: jnp.ones((n // B, 1), jnp.float32)  # noqa: E731  (a fresh one to donate)
    contenders.append(_jax_contender(
        "float32 moments in blocks (no coding)", copy_step,
        (p + 0, jnp.full(blocks, 1e-3), jnp.full(blocks, 1e-6)), (g,)))
    contenders.append(_jax_contender("linear int8 blocks", linear_step, (
        p + 0, jnp.zeros(blocks, jnp.int8), scale(), jnp.zeros(blocks, jnp.uint8), scale()),
        (g,)))
    contenders.append(_jax_contender("float8 e4m3 blocks", fp8_step, (
        p + 0, jnp.zeros(blocks, jnp.float8_e4m3fn), scale(),
        jnp.zeros(blocks, jnp.float8_e4m3fn), scale()), (g,)))
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(args.rounds):
        for c in contenders:
            times[c.name].append(c.step(args.steps))
    base = np.median(times["optax.adam"])
    print(f"Adam on one leaf of {n:,} elements, update and apply in one jitted step with the "
          f"parameters and state donated (as `python -m bench` times it); {_cpu()}, "
          f"{jax.device_count()} device(s), jax {jax.__version__}, "
          f"{time.strftime('%Y-%m-%d')}; median of {args.rounds} interleaved rounds of "
          f"{args.steps} steps\n")
    print("| step | median ms | / optax | compile s |")
    print("|---|---|---|---|")
    for c in contenders:
        ts = times[c.name]
        print(f"| {c.name} | {1e3 * np.median(ts):.1f} | {np.median(ts) / base:.2f} | "
              f"{c.compile_s:.1f} |")


if __name__ == "__main__":
    main()
