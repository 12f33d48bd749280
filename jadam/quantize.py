r"""8-bit and 4-bit optimizer state: block-wise quantization (Dettmers et al., 2022; Li et al.,
2023).

A moment of ``n`` elements is stored as ``n`` uint8 codes in blocks of :data:`BLOCK` (256)
elements, with one float32 scale per block: about 1.016 bytes per element instead of 4, all in
one uint8 array of :data:`ROW` bytes per block (:func:`quantize`). To store a block ``x``:

.. math::

    s = \max_i |x_i|, \qquad c_i = \arg\min_k \left| \frac{x_i}{s} - q_k \right|,

and to read it back, :math:`\hat{x}_i = s\, q_{c_i}`, where :math:`q` is a sorted table of 256
values in :math:`[-1, 1]` (the *signed* map, for moments of either sign such as Adam's first
moment) or in :math:`[0, 1]` (the *unsigned* map, for moments that are never negative, such as
the second). The blocks keep an outlier from costing the rest of the tensor its precision; the
maps are *dynamic*: like a floating-point format, they spend codes on every decade from 1 down
to :math:`10^{-7}`, rather than spacing them evenly, because moments span many orders of
magnitude. A block's largest element is stored exactly (it maps to :math:`\pm 1`), and so
are zeros; in the unsigned map a positive value is never stored as zero (it rounds up to the
smallest code, :math:`3.25 \cdot 10^{-7}` of the scale), so that a second moment that divides
never becomes zero while the first moment it divides does not.

The maps are built as the paper describes its dynamic tree quantization: after the sign bit
(signed map only), the number of leading zero bits gives the decimal exponent :math:`e`, the
first one bit is an indicator, and the remaining bits split :math:`[0.1, 1]` into equal
intervals whose midpoints, times :math:`10^{-e}`, are the values.

Encoding finds the nearest code arithmetically, with no table lookups: the decade by
comparisons with the points halfway between decades, the interval within it by a multiply
and a floor, then that value against its neighbours in the decade by their float32 errors
(ties to the smaller magnitude). On a 2-core CPU it encodes 1-2.2x faster than the first
version, which evaluated three candidate codes with the decoder's formula (4M values: 4.5
against 9.8 ms signed), and gives the same codes (checked on 140M values, every code's
value and every point halfway between two, +-80 ulps around each, with FMA off: with FMA,
LLVM contracts the error's multiply-add differently in the two and 1 in a million of those
tie-breaking values takes the other code). Decoding evaluates the value formula, so the table
(:func:`dynamic_map`) and the encoder cannot disagree.

**4 bits** (:data:`FOUR`): blocks of 128, two codes a byte, about 0.53 bytes per element.
Both moments use the dynamic map built for 4 bits: a first moment (signed) zero and 8
magnitudes from :math:`5.5 \cdot 10^{-3}` to 1 of each sign (but the smallest negative); a
second moment stores :math:`\sqrt{v}` on the unsigned map (zero and 15 magnitudes from
:math:`3.25 \cdot 10^{-3}` to 1), squared when decoded, so that entries down to
:math:`10^{-5}` of their block's largest keep a code, and a positive value never becomes
zero (Li et al. found zero in the second moment's map was what broke 4-bit Adam: an entry
rounded to zero divides its first moment by eps). Of five maps for the second moment (the
dynamic or the linear map, of :math:`v` or of :math:`\sqrt{v}`, with or without zero), this
one measured best on both problems of ``bench/four_bit_maps.py``; the linear map without
zero of Li et al. and torchao was third (``bench/README.md`` has the figures).

A stored moment is one uint8 array of one row per block; its row length tells the format
(:func:`format_of`), so decoding needs no option.

The optimizer's math never sees codes: the layout decodes each quantized moment to float32,
runs the optimizer's rule, and encodes the new moment (:func:`jadam.quantized`).

References:
  Dettmers, Lewis, Shleifer & Zettlemoyer, *8-bit Optimizers via Block-wise Quantization*,
  ICLR 2022, https://arxiv.org/abs/2110.02861.

  Li, Chen & Zhu, *Memory Efficient Optimizers with 4-bit States*, NeurIPS 2023,
  https://arxiv.org/abs/2309.01507.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Format:
    """How a quantized moment is stored: ``bits`` per code (8 or 4), ``block`` elements per
    float32 scale; each block is a row of ``row`` bytes, its codes then its scale."""

    bits: int
    block: int

    @property
    def row(self) -> int:
        return self.block * self.bits // 8 + 4


#: 8 bits a code, blocks of 256 (Dettmers et al.): 1.016 bytes per element.
EIGHT = Format(8, 256)
#: 4 bits a code, blocks of 128 (Li et al.): 0.531 bytes per element.
FOUR = Format(4, 128)
FORMATS = {8: EIGHT, 4: FOUR}

#: Elements per block of the 8-bit format, each block with one float32 scale.
BLOCK = EIGHT.block
#: Default size (elements) below which a moment stays in its own dtype: for small arrays the
#: saving is negligible and the quantization error not worth it (as in the paper).
MIN_SIZE = 4096


def dynamic_map(signed: bool, fmt: Format = EIGHT) -> np.ndarray:
    """The ``2**fmt.bits`` sorted float32 values a code stands for (see the module
    docstring): the decoder applied to every code."""
    return np.asarray(_decode_unit(jnp.arange(2**fmt.bits, dtype=jnp.int32), signed, fmt))


def _bits(signed: bool, fmt: Format) -> int:
    return fmt.bits - 1 if signed else fmt.bits  # bits after the sign bit


def _magnitude(j: jax.Array, bits: int) -> jax.Array:
    """The ``j``-th smallest of the ``2**bits`` magnitudes (int32 ``j``): 1 for the last;
    otherwise ``L = floor(log2(j + 1))`` fraction bits, decade ``e = bits - 1 - L``, and the
    midpoint of interval ``k = j + 1 - 2**L`` of ``2**L`` equal ones over ``[0.1, 1]``, times
    ``10**-e``. Decade ``bits - 1`` holds 1 value, the next 2, ..., decade 0 holds half."""
    n = j + 1
    fraction_bits = 31 - jax.lax.clz(n)
    intervals = jnp.left_shift(1, fraction_bits)
    k = (n - intervals).astype(jnp.float32)
    value = (0.1 + 0.9 * (k + 0.5) / intervals.astype(jnp.float32)) * _power_of_ten(
        bits - 1 - fraction_bits, bits, negative=True)
    return jnp.where(j == 2**bits - 1, jnp.float32(1), value)


def _power_of_ten(e: jax.Array, bits: int, *, negative: bool) -> jax.Array:
    """``10**-e`` (or ``10**e``) for int32 ``e`` in [0, bits), by selection among constants:
    a chain of selects is much cheaper than ``pow`` on a CPU's vector units."""
    out = jnp.ones(jnp.shape(e), jnp.float32)
    for i in range(1, bits):
        out = jnp.where(e == i, jnp.float32(10.0 ** (-i if negative else i)), out)
    return out


def _decode_unit(code: jax.Array, signed: bool, fmt: Format = EIGHT) -> jax.Array:
    """The value in [-1, 1] (signed) or [0, 1] of each int32 code."""
    bits = _bits(signed, fmt)
    if not signed:  # code 0 is zero, code j > 0 the j-th magnitude
        return jnp.where(code == 0, jnp.float32(0), _magnitude(jnp.maximum(code, 1), bits))
    # With h = 2**bits (128 for 8 bits): codes below h - 1 are -magnitude[h - 1 - code],
    # h - 1 is zero, h and above magnitude[code - h].
    h = 2**bits
    j = jnp.where(code >= h, code - h, jnp.maximum(h - 1 - code, 0))
    value = _magnitude(j, bits)
    return jnp.where(code == h - 1, jnp.float32(0), jnp.where(code >= h, value, -value))


def _encode_unit(
    x: jax.Array, signed: bool, before: jax.Array | None = None, fmt: Format = EIGHT
) -> jax.Array:
    """The code of the nearest value to each ``x`` in [-1, 1], as int32, ties to the smaller
    magnitude. Within a decade the values are the midpoints of equal intervals, so the nearest
    is the interval holding ``|x|``: one multiply and a floor. Which decade is nearest is
    decided by comparisons with the points halfway between decades (:func:`_thresholds`), as
    is the choice between zero and the smallest magnitude, and between 1 and the magnitude
    below it. With ``before`` (signed map only), the magnitudes ``x`` was computed from: where
    ``|x|`` is below it but the nearest magnitude is not, the next one towards zero (see
    :func:`quantize`)."""
    bits = _bits(signed, fmt)
    mag = jnp.abs(x)
    decades, top, zero_below = _thresholds(bits)
    decade = sum(((mag <= t).astype(jnp.int32) for t in decades),
                 jnp.zeros(jnp.shape(mag), jnp.int32))  # 0 to bits - 1
    fraction_bits = bits - 1 - decade
    intervals = jnp.left_shift(1, fraction_bits)
    count = intervals.astype(jnp.float32)
    scaled = (mag * _power_of_ten(decade, bits, negative=False) - 0.1) / 0.9
    k = jnp.clip(jnp.floor(scaled * count), 0, count - 1)
    # Near an interval's edge, the float32 errors (which a tie in exact arithmetic, or the
    # rounding of ``scaled``, may tip) decide between the interval's value and its neighbours
    # in the decade, each computed as the decoder computes it; the first of the smallest wins.
    unit = _power_of_ten(decade, bits, negative=True)
    value = lambda k: (0.1 + 0.9 * (k + 0.5) / count) * unit  # noqa: E731
    err = jnp.abs(value(k) - mag)
    below = jnp.abs(value(k - 1) - mag)
    above = jnp.abs(value(k + 1) - mag)
    k = jnp.where((k >= 1) & (below <= err), k - 1,
                  jnp.where((k <= count - 2) & (above < err), k + 1, k))
    j = jnp.where(mag > top, 2**bits - 1, intervals - 1 + k.astype(jnp.int32))
    if not signed:
        # A positive value never becomes zero: these moments divide (Adam's second moment),
        # and an entry whose gradient died keeps a first moment that a zero second moment
        # would turn into a step of m / eps. Rounded up to the smallest code, the step shrinks.
        return jnp.where(mag == 0, 0, jnp.maximum(j, 1))
    negative = x < 0
    lowest = jnp.where(negative, 1, 0)  # magnitude 0 has no negative code
    j = jnp.maximum(j, lowest)
    zero = mag <= jnp.where(negative, zero_below[1], zero_below[0])
    if before is not None:
        stuck = (mag < before) & (_magnitude(j, bits) >= before) & ~zero
        zero = zero | (stuck & (j - 1 < lowest))
        j = jnp.where(stuck, j - 1, j)
    h = 2**bits
    return jnp.where(zero, h - 1, jnp.where(negative, h - 1 - j, h + j))


@functools.cache
def _thresholds(bits: int) -> tuple[tuple[np.float32, ...], np.float32, tuple[np.float32, ...]]:
    """For the ``2**bits`` magnitudes (float32, computed by the decoder), the float32 points
    where the nearest one changes decade: ``decades[e]`` is the largest value nearer (or as
    near) to decade ``e + 1``'s largest magnitude than to decade ``e``'s smallest; ``top``, the
    largest nearer to the magnitude below 1 than to 1; ``zero_below[j]``, the largest nearer
    to zero than to magnitude ``j`` (0 and 1). Found by bisection on float32 values with the
    same float32 errors :func:`_decode_unit` would give, so that ties go as a comparison of
    errors sends them: to the smaller magnitude."""
    with jax.ensure_compile_time_eval():
        table = np.asarray(_magnitude(jnp.arange(2**bits, dtype=jnp.int32), bits), np.float32)

    def last_nearer_low(low: np.float32, high: np.float32) -> np.float32:
        # The largest float32 v in [low, high] with |v - low| <= |high - v| in float32.
        a, b = np.float32(low).view(np.int32), np.float32(high).view(np.int32)
        while b - a > 1:
            mid = (a + b) // 2
            v = np.int32(mid).view(np.float32)
            if np.abs(v - low) <= np.abs(high - v):
                a = mid
            else:
                b = mid
        return np.int32(a).view(np.float32)

    decades = tuple(last_nearer_low(table[2 ** (bits - 1 - e) - 2], table[2 ** (bits - 1 - e) - 1])
                    for e in range(bits - 1))
    top = last_nearer_low(table[-2], table[-1])
    zero_below = tuple(last_nearer_low(np.float32(0), table[j]) for j in (0, 1))
    return decades, top, zero_below


#: Bytes per block of a stored 8-bit moment: its :data:`BLOCK` codes, then its float32 scale.
ROW = EIGHT.row


def quantize(
    x: jax.Array, *, signed: bool, previous: jax.Array | None = None, fmt: Format = EIGHT
) -> jax.Array:
    """Encodes ``x`` (any shape) block by block (see the module docstring) into one uint8
    array of shape ``(blocks, fmt.row)``: each row is a block's codes (the last block padded
    with zeros; 4-bit codes two a byte, the first in the low half), then its scale, the
    block's largest magnitude, as the 4 bytes of a float32.

    One array rather than a pair: containers that wrap each leaf of a state (``flax.nnx``'s
    ``Optimizer``), save it (orbax) or split it over devices then treat a quantized moment as
    they treat any other.

    ``previous``, for the signed map: the decoded values ``x`` was computed from. Where
    ``|x|`` fell below ``|previous|`` but its nearest code would not, the code one step
    towards zero is taken instead. Without this a decaying moment sticks: ``0.9 m`` rounds back
    to ``m`` wherever codes are more than 20% apart (the low decades), and an entry whose
    gradient died would step by ``m / sqrt(v)`` for ever.

    A 4-bit unsigned moment stores its square root (see the module docstring): the scale
    and the codes are of ``sqrt(x)``."""
    flat = _blocks(x, fmt)
    if _of_root(signed, fmt):
        flat = jnp.sqrt(flat)
    scales = jnp.max(jnp.abs(flat), axis=1)
    safe = jnp.where(scales > 0, scales, 1)[:, None]
    before = (None if previous is None or not signed
              else jnp.abs(_blocks(previous, fmt)) / safe)
    codes = _encode_unit(flat / safe, signed, before, fmt).astype(jnp.uint8)
    if fmt.bits == 4:
        pairs = codes.reshape(codes.shape[0], -1, 2)
        codes = pairs[..., 0] | (pairs[..., 1] << 4)
    return jnp.concatenate([codes, jax.lax.bitcast_convert_type(scales, jnp.uint8)], axis=1)


def zeros(shape: tuple[int, ...], *, signed: bool, fmt: Format = EIGHT) -> jax.Array:
    """``quantize(jnp.zeros(shape), ...)``, written out rather than computed: the code of
    zero in every place and scales of 0. (Under ``jit``, XLA would fold the encoding of a
    constant at compile time, seconds for a large moment.)"""
    zero = (2 ** _bits(True, fmt) - 1) if signed else 0
    code_byte = zero | (zero << 4) if fmt.bits == 4 else zero
    blocks, row = stored_shape(shape, fmt)
    codes = jnp.full((blocks, row - 4), code_byte, jnp.uint8)
    return jnp.concatenate([codes, jnp.zeros((blocks, 4), jnp.uint8)], axis=1)


def _of_root(signed: bool, fmt: Format) -> bool:
    """Whether the codes are of the square root of the moment: 4-bit unsigned ones."""
    return fmt.bits == 4 and not signed


def _blocks(x: jax.Array, fmt: Format) -> jax.Array:
    """``x`` flattened, as float32, zero-padded to whole blocks, one block a row."""
    flat = jnp.ravel(x).astype(jnp.float32)
    blocks = -(-flat.size // fmt.block)
    flat = jnp.concatenate([flat, jnp.zeros(blocks * fmt.block - flat.size, jnp.float32)])
    return flat.reshape(blocks, fmt.block)


#: The formats by the row length that names them.
BY_ROW = {fmt.row: fmt for fmt in FORMATS.values()}


def format_of(q: jax.Array) -> Format:
    """The format of a quantized moment, from its row length."""
    if q.shape[-1] not in BY_ROW:
        raise ValueError(f"not a quantized moment: rows of {q.shape[-1]} bytes")
    return BY_ROW[q.shape[-1]]


def split(q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The codes (int32, ``(blocks, block)``) and scales (float32, ``(blocks,)``) of a
    quantized moment."""
    fmt = format_of(q)
    code_bytes = fmt.block * fmt.bits // 8
    codes = q[:, :code_bytes].astype(jnp.int32)
    if fmt.bits == 4:
        codes = jnp.stack([codes & 15, codes >> 4], axis=-1).reshape(q.shape[0], fmt.block)
    return codes, jax.lax.bitcast_convert_type(q[:, code_bytes:], jnp.float32)


def dequantize(q: jax.Array, shape: tuple[int, ...], *, signed: bool) -> jax.Array:
    """Decodes a quantized moment (of either format) to float32 of ``shape``."""
    codes, scales = split(q)
    fmt = format_of(q)
    values = _decode_unit(codes, signed, fmt) * scales[:, None]
    if _of_root(signed, fmt):
        values = values * values
    size = int(np.prod(shape, dtype=np.int64))
    return values.reshape(-1)[:size].reshape(shape)


def is_quantized(x: Any) -> bool:
    """Whether a moment's array is stored quantized: uint8, where moments are floats."""
    return x is not None and jnp.result_type(x) == jnp.uint8


def stored_shape(shape: tuple[int, ...], fmt: Format = EIGHT) -> tuple[int, int]:
    """The shape of the quantized form of an array of ``shape``."""
    return -(-int(np.prod(shape, dtype=np.int64)) // fmt.block), fmt.row
