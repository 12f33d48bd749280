"""Which map the 4-bit second moment gets: Adam with its moments quantized and decoded again
after every step (blocks of 128, the first moment on jadam's 4-bit dynamic map), with each
candidate map for the second moment, on two small problems:

- an MLP (64-512-10, ReLU) on scikit-learn's 8x8 digits, 600 steps of batch 64, lr 3e-3,
  test loss and accuracy on 397 held-out digits, mean of 5 seeds;
- logistic regression with 4,096 weights on 2,000 random points, 200 full-batch steps at
  lr 1e-2, final loss (the case of tests/test_quantize.py).

Candidates: the 4-bit dynamic map of v (Dettmers-style: zero and 15 magnitudes from 3.25e-3
to 1), the linear map without zero ({1/16, ..., 1}, Li et al. and torchao), the linear map
with zero but a positive value never stored as zero ({0, 1/15, ..., 1}, what jadam uses), and
the first two applied to sqrt(v). Run: ``python -m bench.four_bit_maps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jadam import quantize

BLOCK = quantize.FOUR.block
M_MAP = quantize.dynamic_map(True, quantize.FOUR)
# The unsigned dynamic map at 4 bits: zero, then the magnitudes 1..15 of the 8-bit map's
# construction (jadam.quantize) with 4 bits.
DYNAMIC = np.asarray([0.0, *np.asarray(quantize._magnitude(jnp.arange(1, 16), 4))], np.float32)
NO_ZERO = np.arange(1, 17, dtype=np.float32) / 16
V_MAPS = {  # name: (table, power): the table holds v ** (1 / power)
    "dynamic": (DYNAMIC, 1.0),
    "linear, no zero": (NO_ZERO, 1.0),
    "linear, zero kept": (np.arange(16, dtype=np.float32) / 15, 1.0),
    "dynamic, of sqrt(v)": (DYNAMIC, 2.0),
    "linear no zero, of sqrt(v)": (NO_ZERO, 2.0),
}


def round_trip(x: jax.Array, table: np.ndarray, power: float = 1.0) -> jax.Array:
    """``x`` quantized block-wise to the nearest entry of ``table`` (of the block's largest
    magnitude; a positive value never to zero) and decoded, after ``x ** (1 / power)``."""
    n = x.size
    blocks = -(-n // BLOCK)
    flat = jnp.concatenate([x.ravel(), jnp.zeros(blocks * BLOCK - n)]).reshape(blocks, BLOCK)
    flat = jnp.sign(flat) * jnp.abs(flat) ** (1 / power)
    scale = jnp.max(jnp.abs(flat), 1, keepdims=True)
    scale = jnp.where(scale > 0, scale, 1)
    t = jnp.asarray(table)
    index = jnp.sum((flat / scale)[..., None] > (t[1:] + t[:-1]) / 2, -1)
    if table.min() >= 0:
        index = jnp.where(flat > 0, jnp.maximum(index, int(np.argmax(table > 0))), index)
    y = t[index] * scale
    return (jnp.sign(y) * jnp.abs(y) ** power).ravel()[:n].reshape(x.shape)


def four_bit(v_map):
    """The moments' round trip: the first on the 4-bit dynamic map, the second on ``v_map``
    (arrays of at least 4,096 elements; ``(None, _)``: none)."""
    table, power = v_map
    if table is None:
        return None
    return (lambda m: round_trip(m, M_MAP), lambda v: round_trip(v, table, power))


def adam_step(p, m, v, g, t, lr, codec):
    """One Adam step; ``codec``, ``None`` or a pair of functions through which the new first
    and second moments of arrays of at least 4,096 elements make a round trip."""
    m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    if codec is not None:
        m = jax.tree.map(lambda m: codec[0](m) if m.size >= 4096 else m, m)
        v = jax.tree.map(lambda v: codec[1](v) if v.size >= 4096 else v, v)
    bc1, bc2 = 1 - 0.9**t, 1 - 0.999**t
    p = jax.tree.map(lambda p, m, v: p - lr * (m / bc1) / (jnp.sqrt(v / bc2) + 1e-8), p, m, v)
    return p, m, v


def digits(codec, seed: int) -> tuple[float, float]:
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order] / 16.0, y[order]
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (64, 512)) * 0.125, "b1": jnp.zeros(512),
              "w2": jax.random.normal(k2, (512, 10)) * 0.044, "b2": jnp.zeros(10)}

    def logits(p, xb):
        return jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss(p, xb, yb):
        return -jnp.mean(jax.nn.log_softmax(logits(p, xb))[jnp.arange(len(yb)), yb])

    @jax.jit
    def step(p, m, v, t, xb, yb):
        return adam_step(p, m, v, jax.grad(loss)(p, xb, yb), t, 3e-3, codec)

    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    for t in range(1, 601):
        i = (t * 64) % (1400 - 64)
        params, m, v = step(params, m, v, t, x[i:i + 64], y[i:i + 64])
    test_loss = float(loss(params, x[1400:], y[1400:]))
    return test_loss, float(np.mean(np.argmax(logits(params, x[1400:]), 1) == y[1400:]))


def logistic(codec) -> float:
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2000, 4096)) / 64, jnp.float32)
    y = jnp.asarray(np.asarray(x) @ rng.standard_normal(4096) > 0, jnp.float32)

    def loss(w):
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    @jax.jit
    def step(w, m, v, t):
        return adam_step(w, m, v, jax.grad(loss)(w), t, 1e-2, codec)

    w = m = v = jnp.zeros(4096)
    for t in range(1, 201):
        w, m, v = step(w, m, v, t)
    return float(loss(w))


def main() -> None:
    maps = {"float32 (no quantization)": (None, 1.0), **V_MAPS}
    print("| second moment map | digits MLP test loss | accuracy % | logistic loss |")
    print("|---|---|---|---|")
    for name, v_map in maps.items():
        codec = four_bit(v_map)
        runs = np.array([digits(codec, seed) for seed in range(5)])
        print(f"| {name} | {runs[:, 0].mean():.4f} | {100 * runs[:, 1].mean():.2f} | "
              f"{logistic(codec):.4f} |", flush=True)


if __name__ == "__main__":
    main()
