"""Hyperparameters: validated once, held as float32, opaque to the compiler.

Every hyperparameter of every jadam optimizer goes through this module:

* At construction, :func:`scalar` checks a concrete value (a Python number, a NumPy scalar or a
  concrete ``jax.Array``) and raises ``ValueError`` naming the call and the argument, for example
  ``jadam.adam(b1=1.5): b1 must be in [0, 1), got 1.5``. A traced value (under ``jit``, ``vmap``
  or ``grad``) cannot be inspected and is accepted as it is, so sweeps keep working.
* Every value becomes a float32 scalar. Quantities derived from it, such as ``1 - b1``, are
  computed from that float32 value inside the step, never in Python float64.
* At update time, :func:`opaque` turns the values into runtime values: it adds ``0 * count``,
  where ``count`` is the step count from the optimizer state, and passes them through
  ``lax.optimization_barrier``. XLA then cannot treat a fixed hyperparameter as a compile-time
  constant. Without this, a division ``x / b`` by a constant ``b`` is rewritten into
  ``x * (1 / b)``, a multiplication by 1 disappears, and multiply-adds are contracted into FMAs
  in other places: each rounds differently. With it, the compiled step is the same whether the
  value was a Python float or a traced array, so the results are bit-identical (tested with
  arbitrary values, 0, 0.5 and 1 among them). That is what makes a ``jax.vmap`` over
  hyperparameters an honest sweep. (It needs the count to be a runtime value, as it is whenever
  the state is passed into the jitted step or carried through a loop.)
* One exception is structural, like ``amsgrad=False``: a weight decay given as the number 0 drops
  the decay term from the program. Its updates are still bit-identical to those of a traced 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Scalar: TypeAlias = float | int | np.floating | np.integer | jax.Array | np.ndarray
"""A hyperparameter value: a Python or NumPy number, or a scalar array (possibly traced)."""

Schedule: TypeAlias = Callable[[jax.Array], Any]
"""A function of the step count (0 for the first update), such as an optax schedule."""

ScalarOrSchedule: TypeAlias = Scalar | Schedule

F32: TypeAlias = np.float32 | jax.Array
"""A validated hyperparameter: a NumPy float32 for fixed values, a float32 ``jax.Array`` else."""


def is_traced(value: Any) -> bool:
    """Whether ``value`` is an abstract value inside a transformation, which we cannot inspect."""
    return isinstance(value, jax.core.Tracer)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf:
        return f"{'>' if low_open else '>='} {low:g}"
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f"in {left}{low:g}, {high:g}{right}"


def scalar(
    fn: str,
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> F32:
    """Validates a scalar hyperparameter and returns it as float32.

    Args:
      fn: the public name of the call, for the message, e.g. ``"jadam.adam"``.
      name: the argument's name.
      value: what the user passed.
      low, high: the allowed interval; ``low_open`` and ``high_open`` exclude its ends.

    Returns:
      ``np.float32`` for a concrete number, a float32 ``jax.Array`` for an array or tracer.

    Raises:
      ValueError: naming ``fn`` and ``name``, if the value is not a real number, is not a scalar,
        is not finite, or lies outside the interval.
    """

    def fail(why: str) -> ValueError:
        return ValueError(f"{fn}({name}={value!r}): {name} {why}")

    if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        raise fail(f"must be a real number, got {type(value).__name__}")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        if np.shape(value) != ():
            raise fail(
                f"must be a scalar, got an array of shape {np.shape(value)}; "
                "to sweep values, jax.vmap over a function that builds the optimizer"
            )
        dtype = jnp.dtype(value.dtype)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise fail(f"must be a real number, got an array of dtype {dtype}")
        if is_traced(value):
            return jnp.asarray(value).astype(jnp.float32)
        concrete = float(np.asarray(value, dtype=np.float64))
    elif isinstance(value, (int, float, np.number)):
        concrete = float(value)
    else:
        raise fail(f"must be a real number, got {type(value).__name__}")

    if not math.isfinite(concrete):
        raise fail(f"must be finite, got {concrete}")
    inside_low = concrete > low if low_open else concrete >= low
    inside_high = concrete < high if high_open else concrete <= high
    if not (inside_low and inside_high):
        raise fail(f"must be {_interval(low, high, low_open, high_open)}, got {concrete:g}")
    if isinstance(value, jax.Array):
        return value.astype(jnp.float32)
    return np.float32(concrete)


def scalar_or_schedule(
    fn: str, name: str, value: Any, **interval: Any
) -> F32 | Schedule:
    """Like :func:`scalar`, but a callable is taken as a schedule of the step count.

    A schedule cannot be checked before it is called; its values are converted to float32 at
    each step by :func:`value_at`.
    """
    if _is_schedule(value):
        return value
    return scalar(fn, name, value, **interval)


def value_at(value: F32 | Schedule, count: jax.Array) -> jax.Array:
    """The float32 value of a fixed hyperparameter or of a schedule at ``count``.

    A schedule's value cannot be checked when the optimizer is built, and an error cannot be
    raised from inside a compiled step. A value that is negative or NaN (all schedulable
    hyperparameters, the learning rate and the weight decay, must be >= 0) becomes NaN: the
    updates of that step are NaN, which any loss curve shows, rather than a silent step
    uphill. An infinite value is passed on as it is.
    """
    if _is_schedule(value):
        v = jnp.asarray(value(count)).astype(jnp.float32)
        if jnp.shape(v) != ():
            raise ValueError(
                f"a schedule must return a scalar, got an array of shape {jnp.shape(v)}"
            )
        return jnp.where(v >= 0, v, jnp.float32(jnp.nan))
    return jnp.asarray(value, dtype=jnp.float32)


def opaque(tree: Any, count: jax.Array) -> Any:
    """Makes float32 hyperparameters runtime values that XLA cannot fold (module docstring).

    Each value has ``0 * count`` added: zero, but only known at run time, because ``count`` is
    the optimizer state's step count. IEEE arithmetic forbids XLA to rewrite ``0 * x`` as 0
    (``x`` could be infinite), so a fixed value is no longer a constant. The optimization
    barrier also keeps XLA from merging the values into their uses before that.
    """
    zero = jnp.float32(0) * count.astype(jnp.float32)
    return lax.optimization_barrier(jax.tree.map(lambda v: jnp.asarray(v) + zero, tree))


def is_zero(value: F32 | Schedule) -> bool:
    """Whether a hyperparameter was given as the number 0, which may drop a term or a state
    array from the program (a zero array keeps them, like a traced one)."""
    return isinstance(value, np.floating) and float(value) == 0.0


def known(value: F32 | Schedule) -> float | None:
    """The value of a validated hyperparameter if it is known before tracing, else ``None``
    (a tracer or a schedule). For checks of combinations, such as Nesterov without momentum."""
    if _is_schedule(value) or is_traced(value):
        return None
    return float(value)


def _is_schedule(value: Any) -> bool:
    return callable(value) and not isinstance(value, (jax.Array, np.ndarray))



def decay_rate(fn: str, name: str, value: Any) -> F32:
    """Validates a decay rate of a moving average (``b1``, ``b2``, ``decay``): in [0, 1)."""
    return scalar(fn, name, value, high=1.0, high_open=True)


def learning_rate(fn: str, value: Any) -> F32 | Schedule:
    """Validates a learning rate: a finite number >= 0, a scalar array, or a schedule.

    ``None`` is refused (optax's ``adam(None)`` silently ascends); so is a negative rate, which
    would train uphill.
    """
    if value is None:
        raise ValueError(
            f"{fn}(learning_rate=None): learning_rate must be a number >= 0 or a schedule "
            "(a function of the step count)"
        )
    return scalar_or_schedule(fn, "learning_rate", value)


def float_dtype(fn: str, name: str, value: Any) -> np.dtype | None:
    """Validates an optional state dtype such as ``mu_dtype``: ``None`` or a floating dtype."""
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError as e:
        raise ValueError(f"{fn}({name}={value!r}): {name} is not a dtype") from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{fn}({name}={value!r}): {name} must be a floating dtype, got {dtype}")
    return dtype
