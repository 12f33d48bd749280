r"""8-bit optimizer state: block-wise quantization with a dynamic map (Dettmers et al., 2022).

A moment of ``n`` elements is stored as ``n`` uint8 codes in blocks of :data:`BLOCK` (256)
elements, with one float32 scale per block: about 1.016 bytes per element instead of 4. To
store a block ``x``:

.. math::

    s = \max_i |x_i|, \qquad c_i = \arg\min_k \left| \frac{x_i}{s} - q_k \right|,

and to read it back, :math:`\hat{x}_i = s\, q_{c_i}`, where :math:`q` is a sorted table of 256
values in :math:`[-1, 1]` (the *signed* map, for moments of either sign such as Adam's first
moment) or in :math:`[0, 1]` (the *unsigned* map, for moments that are never negative, such as
the second). The blocks keep an outlier from costing the rest of the tensor its precision; the
maps are *dynamic*: like a floating-point format, they spend codes on every decade from 1 down
to :math:`10^{-7}`, rather than spacing them evenly, because moments span many orders of
magnitude. A block's largest element is stored exactly (it maps to :math:`\pm 1`), and so
are zeros.

The maps are built as the paper describes its dynamic tree quantization: after the sign bit
(signed map only), the number of leading zero bits gives the decimal exponent :math:`e`, the
first one bit is an indicator, and the remaining bits split :math:`[0.1, 1]` into equal
intervals whose midpoints, times :math:`10^{-e}`, are the values.

The optimizer's math never sees codes: the layout decodes each quantized moment to float32,
runs the optimizer's rule, and encodes the new moment (:func:`jadam.quantized`).

Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, *8-bit Optimizers via Block-wise
Quantization*, ICLR 2022, https://arxiv.org/abs/2110.02861.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: Elements per block, each block with one float32 scale.
BLOCK = 256
#: Default size (elements) below which a moment stays in its own dtype: for small arrays the
#: saving is negligible and the quantization error not worth it (as in the paper).
MIN_SIZE = 4096


@functools.cache
def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 sorted float32 values a code stands for (see the module docstring)."""
    bits = 7 if signed else 8  # bits after the sign bit
    magnitudes = [1.0]
    for e in range(bits):
        fraction_bits = bits - 1 - e
        edges = np.linspace(0.1, 1.0, 2**fraction_bits + 1)
        magnitudes += list(10.0**-e * (edges[:-1] + edges[1:]) / 2)
    magnitudes = np.sort(np.asarray(magnitudes))  # 2**bits values in (0, 1]
    if signed:  # 127 negative, zero, 128 positive: the smallest magnitude has no negative
        values = np.concatenate([-magnitudes[:0:-1], [0.0], magnitudes])
    else:  # zero takes the place of the smallest magnitude
        values = np.concatenate([[0.0], magnitudes[1:]])
    return values.astype(np.float32)


class Quantized(NamedTuple):
    """A moment stored in 8 bits: ``codes`` (uint8, shape ``(blocks, 256)``, the last block
    padded) and ``scales`` (float32, one per block, the block's largest magnitude). Whether the
    map is signed is static, from the moment's definition."""

    codes: jax.Array
    scales: jax.Array


def quantize(x: jax.Array, *, signed: bool) -> Quantized:
    """Encodes ``x`` (any shape) block by block; see the module docstring."""
    table = jnp.asarray(dynamic_map(signed))
    flat = jnp.ravel(x).astype(jnp.float32)
    blocks = -(-flat.size // BLOCK)
    flat = jnp.concatenate([flat, jnp.zeros(blocks * BLOCK - flat.size, jnp.float32)])
    flat = flat.reshape(blocks, BLOCK)
    scales = jnp.max(jnp.abs(flat), axis=1)
    safe = jnp.where(scales > 0, scales, 1)[:, None]
    normed = flat / safe
    # The nearest value: count the midpoints between neighbouring values below x.
    midpoints = (table[1:] + table[:-1]) / 2
    codes = jnp.searchsorted(midpoints, normed, side="left", method="scan_unrolled")
    return Quantized(codes.astype(jnp.uint8), scales)


def dequantize(q: Quantized, shape: tuple[int, ...], *, signed: bool) -> jax.Array:
    """Decodes to float32 of ``shape``."""
    table = jnp.asarray(dynamic_map(signed))
    values = table[q.codes.astype(jnp.int32)] * q.scales[:, None]
    size = int(np.prod(shape, dtype=np.int64))
    return values.reshape(-1)[:size].reshape(shape)
