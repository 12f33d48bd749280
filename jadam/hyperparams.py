"""Hyperparameters: validated once, computed in the leaves' precision, opaque to the compiler.

Every hyperparameter of every jadam optimizer goes through this module:

* At construction, :func:`scalar` checks a concrete value (a Python number, a NumPy scalar or a
  concrete ``jax.Array``) and raises ``ValueError`` naming the call and the argument, for example
  ``jadam.adam(b1=1.5): b1 must be in [0, 1), got 1.5``. A traced value (under ``jit``, ``vmap``
  or ``grad``) cannot be inspected and is accepted as it is, so sweeps keep working.
* Every value is kept as given (a NumPy float64 for a number) and, in each step, becomes a
  float32 scalar for the float32 (and narrower) leaves and, with x64 enabled, a float64 one
  for float64 leaves. Quantities derived from it, such as ``1 - b1``, are computed from that
  scalar inside the step, in its dtype, never in Python: so a float32 ``b2 = 0.999`` is the
  float32 0.99900001287 and ``1 - b2`` its exact complement, and a float64 leaf gets a float64
  step.
* At update time, :func:`opaque` turns the values into runtime values: it adds ``0 * count``,
  where ``count`` is the step count from the optimizer state, and passes them through
  ``lax.optimization_barrier``. XLA then cannot treat a fixed hyperparameter as a compile-time
  constant. Without this, a division ``x / b`` by a constant ``b`` is rewritten into
  ``x * (1 / b)``, a multiplication by 1 disappears, and multiply-adds are contracted into FMAs
  in other places: each rounds differently. With it, the compiled step is the same whether the
  value was a Python float or a traced array, so the results are bit-identical (tested with
  arbitrary values, 0, 0.5 and 1 among them). That is what makes a ``jax.vmap`` over
  hyperparameters an honest sweep. (It needs the count to be a runtime value, as it is whenever
  the state is passed into the jitted step or carried through a loop.) On a CPU with fused
  multiply-add, a fixed value is ``constant + 0 * count`` in the step's scalar arithmetic where
  a traced one is an argument, and LLVM may contract a multiply-add in one and not the other:
  there the results agree to a few ulps, and are bit for bit with the instruction set capped
  below FMA (``tests/test_without_fma.py``).
* The step's scalars, once computed, go through :func:`per_step`, so that each leaf's loop
  receives them as arguments rather than recomputing them.
* One exception is structural, like ``amsgrad=False``: a weight decay given as the number 0 drops
  the decay term from the program. Its updates are still bit-identical to those of a traced 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, TypeGuard, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Scalar: TypeAlias = float | int | np.floating | np.integer | jax.Array | np.ndarray
"""A hyperparameter value: a Python or NumPy number, or a scalar array (possibly traced)."""

Schedule: TypeAlias = Callable[[jax.Array], Any]
"""A function of the step count (0 for the first update), such as an optax schedule."""

ScalarOrSchedule: TypeAlias = Scalar | Schedule

F32: TypeAlias = np.float64 | jax.Array
"""A validated hyperparameter: a NumPy float64 for fixed values (rounded to float32 for float32
leaves), a float32 or float64 ``jax.Array`` for an array or tracer."""


_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar("jadam_call", default=None)


@contextlib.contextmanager
def call(fn: str) -> Iterator[None]:
    """Within it, :func:`call_name` is ``fn``: a full optimizer (``"jadam.adam"``) building its
    ``scale_by_*`` block has the block's errors name the call the user made."""
    token = _CALL.set(fn)
    try:
        yield
    finally:
        _CALL.reset(token)


def call_name(default: str) -> str:
    """The public name for messages: that of the enclosing :func:`call`, else ``default``."""
    return _CALL.get() or default


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
    """Validates a scalar hyperparameter.

    Args:
      fn: the public name of the call, for the message, e.g. ``"jadam.adam"``.
      name: the argument's name.
      value: what the user passed.
      low, high: the allowed interval; ``low_open`` and ``high_open`` exclude its ends.

    Returns:
      ``np.float64`` for a concrete number (a concrete array's value), a ``jax.Array`` for a
      tracer: float64 if it is float64, else float32.

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
        if jnp.issubdtype(dtype, jnp.complexfloating):
            # optax.inject_hyperparams gives the hyperparameters the parameters' dtype, complex
            # for complex parameters: the real part is the value (a concrete value must have
            # no imaginary part; a traced one cannot be checked).
            if not is_traced(value) and np.imag(np.asarray(value)) != 0:
                raise fail(f"must be a real number, got {complex(np.asarray(value))}")
            value = jnp.real(value) if isinstance(value, jax.Array) else np.real(value)
            dtype = jnp.dtype(value.dtype)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise fail(f"must be a real number, got an array of dtype {dtype}")
        if is_traced(value):  # float64 stays float64 (for float64 leaves); the rest float32
            return jnp.asarray(value).astype(jnp.float64 if dtype == jnp.float64 else jnp.float32)
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
    return np.float64(concrete)


def scalar_or_schedule(
    fn: str, name: str, value: Any, **interval: Any
) -> F32 | Schedule:
    """Like :func:`scalar`, but a callable is taken as a schedule of the step count.

    A schedule cannot be checked before it is called; its values are converted to the leaves'
    dtype at each step by :func:`value_at`.
    """
    if _is_schedule(value):
        return value
    return scalar(fn, name, value, **interval)


def value_at(value: F32 | Schedule, count: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """The value of a fixed hyperparameter or of a schedule at ``count``, in ``dtype``.

    A schedule's value cannot be checked when the optimizer is built, and an error cannot be
    raised from inside a compiled step. A value that is negative or NaN (all schedulable
    hyperparameters, the learning rate and the weight decay, must be >= 0) becomes NaN: the
    updates of that step are NaN, which any loss curve shows, rather than a silent step
    uphill. An infinite value is passed on as it is.
    """
    if _is_schedule(value):
        v = jnp.asarray(value(count))
        v = (jnp.real(v) if jnp.iscomplexobj(v) else v).astype(dtype)  # (see scalar)
        if jnp.shape(v) != ():
            raise ValueError(
                f"a schedule must return a scalar, got an array of shape {jnp.shape(v)}"
            )
        return jnp.where(v >= 0, v, jnp.asarray(jnp.nan, dtype))
    return _cast(value, dtype)


def _cast(value: Any, dtype: Any) -> jax.Array:
    """A validated value as an array of ``dtype``: a fixed value is rounded from its Python
    (float64) value once, to float32 or not at all."""
    if isinstance(value, np.generic):
        return jnp.asarray(np.asarray(value).astype(dtype))
    return jnp.asarray(value).astype(dtype)


def opaque(tree: Any, count: jax.Array, dtype: Any = jnp.float32) -> Any:
    """Makes hyperparameters runtime values of ``dtype`` that XLA cannot fold (module
    docstring).

    Each value has ``0 * count`` added: zero, but only known at run time, because ``count`` is
    the optimizer state's step count. IEEE arithmetic forbids XLA to rewrite ``0 * x`` as 0
    (``x`` could be infinite), so a fixed value is no longer a constant. The optimization
    barrier also keeps XLA from merging the values into their uses before that.
    """
    zero = jnp.zeros((), dtype) * count.astype(dtype)
    return lax.optimization_barrier(jax.tree.map(lambda v: _cast(v, dtype) + zero, tree))


def per_step(values: dict[str, Any], count: jax.Array) -> dict[str, Any]:
    """The step's scalars as values computed once, that each leaf's loop reads.

    XLA copies cheap scalar arithmetic into every loop that uses it: without this, each leaf's
    loop recomputes ``0 * count + value`` for each hyperparameter, so the compiled step grows
    by a few instructions per scalar per leaf (for Adam's update of 1,000 leaves, 79,000 lines
    of optimized HLO against optax's 56,000, and more compile time). Here the float scalars of
    each dtype are stacked into one vector and divided by a vector of ones known only at run
    time (``1 + 0 * (count + i)``): exact (``x / 1`` is ``x`` in IEEE arithmetic, for every
    ``x``), and a division is an operation XLA does not copy into the loops that use its
    result, so it runs once per step and each loop reads its scalars from the vector. (Dividing
    by a broadcast scalar would not do: XLA rewrites that into a multiplication by the
    reciprocal, cheap again, and copies it into every loop.)

    One vector rather than one division per scalar matters for speed too: every leaf's loops
    then wait on the same value, and XLA:CPU schedules each leaf's moment loops side by side
    (the gradient read by the first is still in cache for the second). With one division per
    scalar it ran all second-moment loops, then all first-moment ones: on a 40M-parameter,
    195-leaf tree, 5-14% slower than optax (``bench/README.md``). A fixed value and a traced
    one take the same path, so they stay bit-identical.
    """
    groups: dict[Any, list[str]] = {}
    for k, v in values.items():
        if isinstance(v, jax.Array) and v.ndim == 0 and jnp.issubdtype(v.dtype, jnp.floating):
            groups.setdefault(v.dtype, []).append(k)
    out = dict(values)
    for dtype, keys in groups.items():
        ones = 1 + 0 * (count.astype(dtype) + jnp.arange(len(keys), dtype=dtype))
        vector = jnp.stack([values[k] for k in keys]) / ones
        out.update({k: vector[i] for i, k in enumerate(keys)})
    return out


def is_zero(value: F32 | Schedule) -> bool:
    """Whether a hyperparameter was given as the number 0, which may drop a term or a state
    array from the program (a zero array keeps them, like a traced one)."""
    return isinstance(value, np.floating) and float(value) == 0.0


def known(value: F32 | Schedule) -> float | None:
    """The value of a validated hyperparameter if it is known before tracing, else ``None``
    (a tracer or a schedule). For checks of combinations, such as Nesterov without momentum."""
    if _is_schedule(value) or is_traced(value):
        return None
    return float(cast(Any, value))


def _is_schedule(value: Any) -> TypeGuard[Schedule]:
    return callable(value) and not isinstance(value, (jax.Array, np.ndarray))



def steps(fn: str, name: str, value: Any, *, minimum: int) -> F32:
    """Validates a number of steps (a warmup's length): an integer >= ``minimum``, or a traced
    value (``optax.inject_hyperparams`` passes one), kept like every hyperparameter."""
    if not is_traced(value):
        try:
            count = operator.index(value)
        except TypeError:
            count = None
        if count is None or isinstance(value, bool) or count < minimum:
            raise ValueError(f"{fn}({name}={value!r}): {name} must be an integer >= {minimum}")
    return scalar(fn, name, value)


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
    """Validates an optional state dtype such as ``mu_dtype``: ``None``, a floating or a complex
    dtype (which sets a precision: a moment is complex where its parameter is, see
    :func:`jadam.dtypes.moment_dtype`)."""
    if value is None:
        return None
    if isinstance(value, (jax.Array, np.ndarray)):
        # optax.inject_hyperparams takes a dtype given as a scalar type (jnp.float32) for a
        # schedule and passes its value at the count: an array of that dtype.
        return float_dtype(fn, name, value.dtype)
    try:
        dtype = jnp.dtype(value)
    except TypeError as e:
        raise ValueError(f"{fn}({name}={value!r}): {name} is not a dtype") from e
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(
            f"{fn}({name}={value!r}): {name} must be a floating or complex dtype, got {dtype}")
    return dtype
