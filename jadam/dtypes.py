"""Which dtype each array of a step has: the parameter's, the moments' (a state dtype sets a
precision, the parameter decides whether a moment is complex), and the compute dtype a leaf's
math runs in (float32, float64 where a float64 array is involved, and their complex forms)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jadam.rule import Moment

COMPLEX: dict[np.dtype, np.dtype] = {np.dtype(np.float32): np.dtype(np.complex64),
            np.dtype(np.float64): np.dtype(np.complex128)}


def is_wide(x: Any) -> bool:
    """Whether ``x`` is float64 or complex128 (computed in float64)."""
    return jnp.result_type(x) in (jnp.float64, jnp.complex128)


def compute_dtype(real: Any, complex_: bool) -> np.dtype:
    return COMPLEX[np.dtype(real)] if complex_ else np.dtype(real)


def moment_dtype(fn: str, path: Any, m: Moment, param_dtype: Any) -> np.dtype:
    """The dtype a moment is kept in, for a parameter of dtype ``param_dtype``: ``m.dtype`` (or
    the parameter's) gives its precision, the parameter whether it is complex, except that a
    magnitude (``m.nonnegative``: a second moment) is always real. So ``mu_dtype=float32``
    keeps a complex64 first moment for a complex parameter, and ``mu_dtype=complex64`` a
    float32 one for a real parameter."""
    real = np.dtype(jnp.finfo(np.dtype(m.dtype or param_dtype)).dtype)
    if m.nonnegative or not jnp.issubdtype(param_dtype, jnp.complexfloating):
        return real
    if real not in COMPLEX:
        raise TypeError(
            f"{fn}: parameter {where(path)} is complex ({np.dtype(param_dtype)}), but "
            f"state.{m.name} would be kept in {real}, which has no complex counterpart; pass "
            "a float32, float64, complex64 or complex128 state dtype (mu_dtype), or none."
        )
    return COMPLEX[real]


def init_moment(fn: str, path: Any, m: Moment, p: Any) -> jax.Array:
    dtype = moment_dtype(fn, path, m, jnp.result_type(p))
    if isinstance(m.init, str):  # "params"
        return jnp.array(p, dtype=dtype, copy=True)  # its own buffer, so both can be donated
    if m.shape is None:
        return jnp.full_like(p, m.init, dtype=dtype)
    return jnp.full(m.shape(jnp.shape(p)), m.init, dtype=dtype)


def store(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` cast to a moment's storage dtype, saturating where that dtype's range is smaller
    than the compute dtype's (float16: a squared gradient above 65504 would become inf, and an
    infinite second moment turns every later update of that entry into 0 or NaN; in the
    compute dtype itself the rules saturate, :func:`jadam.rule.saturate`)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).max < jnp.finfo(x.dtype).max:
        top = jnp.asarray(jnp.finfo(dtype).max, x.dtype)
        x = jnp.clip(x, -top, top)
    return x.astype(dtype)


def as_array(x: Any) -> Any:
    """A leaf as an array: optax accepts Python and NumPy numbers as parameters and gradients."""
    return x if isinstance(x, jax.Array) or x is None else jnp.asarray(x)


def where(path: Any) -> str:
    return jax.tree_util.keystr(path) or "the root"
