"""Whether an FP8 format would store Adam's moments better than jadam's 8-bit dynamic map
(issue 17: "an FP8 format if it measures better than int8"). Adam with both moments
quantized block-wise (blocks of 256, a float32 scale each) and decoded again after every
step, on the two problems of ``bench/four_bit_maps.py`` (an MLP on scikit-learn's 8x8
digits, 5 seeds; logistic regression with 4,096 weights), for each format:

- jadam's dynamic maps (``jadam.quantize``, exactly as ``jadam.quantized`` stores them: the
  signed map for the first moment, the unsigned one for the second, which never stores a
  positive value as zero);
- float8 e4m3 (``float8_e4m3fn``, 3 mantissa bits, 2**-9 to 448) and e5m2 (2 mantissa bits,
  2**-16 to 57344), each block scaled so its largest magnitude is the format's largest, by
  XLA's rounding conversion; for the second moment a positive value rounded to zero is
  raised to the smallest positive value (as jadam's map does), and a variant stores
  ``sqrt(v)`` instead.

Run: ``python -m bench.eight_bit_formats``; prints the table ``bench/README.md`` quotes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench.four_bit_maps import digits, logistic
from jadam import quantize

B = 256


def dynamic(signed: bool) -> Callable[[jax.Array], jax.Array]:
    def round_trip(x: jax.Array) -> jax.Array:
        q = quantize.quantize(x, signed=signed)
        return quantize.dequantize(q, x.shape, signed=signed)
    return round_trip


def fp8(dtype: Any, signed: bool, power: float = 1.0) -> Callable[[jax.Array], jax.Array]:
    largest = float(jnp.finfo(dtype).max)
    smallest = float(jnp.finfo(dtype).smallest_subnormal)

    def round_trip(x: jax.Array) -> jax.Array:
        n = x.size
        blocks = -(-n // B)
        flat = jnp.concatenate([x.ravel(), jnp.zeros(blocks * B - n)]).reshape(blocks, B)
        flat = jnp.sign(flat) * jnp.abs(flat) ** (1 / power)
        scale = jnp.max(jnp.abs(flat), 1, keepdims=True) / largest
        scale = jnp.where(scale > 0, scale, 1)
        y = (flat / scale).astype(dtype).astype(jnp.float32)
        if not signed:  # a positive second moment never zero
            y = jnp.where((flat > 0) & (y == 0), smallest, y)
        y = y * scale
        return (jnp.sign(y) * jnp.abs(y) ** power).ravel()[:n].reshape(x.shape)
    return round_trip


FORMATS: dict[str, Any] = {
    "float32 (no quantization)": None,
    "jadam 8-bit dynamic maps": (dynamic(True), dynamic(False)),
    "float8 e4m3": (fp8(jnp.float8_e4m3fn, True), fp8(jnp.float8_e4m3fn, False)),
    "float8 e4m3, sqrt(v)": (fp8(jnp.float8_e4m3fn, True), fp8(jnp.float8_e4m3fn, False, 2.0)),
    "float8 e5m2": (fp8(jnp.float8_e5m2, True), fp8(jnp.float8_e5m2, False)),
    "float8 e5m2, sqrt(v)": (fp8(jnp.float8_e5m2, True), fp8(jnp.float8_e5m2, False, 2.0)),
}


def main() -> None:
    print("| moments stored as | digits MLP test loss | accuracy % | logistic loss |")
    print("|---|---|---|---|")
    for name, codec in FORMATS.items():
        runs = np.array([digits(codec, seed) for seed in range(5)])
        print(f"| {name} | {runs[:, 0].mean():.4f} | {100 * runs[:, 1].mean():.2f} | "
              f"{logistic(codec):.4f} |", flush=True)


if __name__ == "__main__":
    main()
