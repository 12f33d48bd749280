"""The equations several optimizers share, each written as in the papers, on arrays.

Complex arrays follow optax's convention (see :mod:`jadam.rule`): magnitudes are real, ``|x|^2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema(previous: jax.Array, value: jax.Array, decay: jax.Array) -> jax.Array:
    """An exponential moving average: ``decay * previous + (1 - decay) * value``."""
    return decay * previous + (1 - decay) * value


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2``, real: ``x * x`` for a real array, ``re(x)^2 + im(x)^2`` for a complex one."""
    if jnp.iscomplexobj(x):
        return x.real * x.real + x.imag * x.imag
    return x * x


def square(x: jax.Array) -> jax.Array:
    """:func:`abs_sq` (``x * x`` for real ``x``), saturating at half the largest value of its
    dtype: a float32 gradient of 1e20 squares to inf, and an infinite second moment would
    freeze its entry for ever (every later step divides by it). An average of such squares, or
    of them and a moment so kept, stays below that bound and finite, and decays again.
    (Saturating the new moment instead, after the average, made XLA compute it twice and copy
    the old moment: one more pass over memory.) NaN stays NaN."""
    return jnp.minimum(abs_sq(x), jnp.finfo(x.dtype).max / 2)


def saturate(x: jax.Array) -> jax.Array:
    """``x`` with values above its dtype's largest (``inf`` among them) replaced by the largest;
    for sums of :func:`square` s, which may exceed it (Adafactor's row sums). NaN stays NaN."""
    return jnp.minimum(x, jnp.finfo(x.dtype).max)


def bias_correction(decay: jax.Array, t: jax.Array) -> jax.Array:
    """``1 - decay**t``: the weight an average started at zero has gathered after ``t`` steps.

    Computed as ``-expm1(t * log1p(-(1 - decay)))``. For ``decay`` near 1 and small ``t`` the
    plain formula subtracts two nearly equal numbers: in float32, one rounding of ``0.999**t``
    moves ``1 - 0.999**t`` by 6e-5 relative at ``t = 1``. This form keeps every step to a few
    units in the last place (``1 - decay`` is exact for ``decay`` in [0.5, 1]). It gives 1 for
    ``decay = 0``, as it should.
    """
    return -jnp.expm1(t * jnp.log1p(-(1 - decay)))
