"""Rules: an optimizer's math as elementwise functions of arrays.

A rule says which per-element state an optimizer keeps (its :class:`Moment` s) and how one
gradient array, its state arrays and its parameter array give the update direction and the new
state. It knows nothing of pytrees, dtypes or learning rates: a layout (see :mod:`jadam.layout`)
applies it to every leaf of a tree, casts to and from the compute dtype, and handles the step
count, the learning rate, weight decay and ``maximize``, which are the same for every optimizer.

A rule works in two stages, so that per-step scalars are computed once per step rather than once
per leaf:

1. ``scalars(hp, t, carry)`` takes the hyperparameters, the 1-based step number ``t`` and any
   scalar state the rule carries between steps, all scalars of one dtype (float32, or float64
   for float64 leaves; the code must not fix it), and returns the
   scalars the step needs, such as bias corrections, and the new carry.
2. ``apply(s, g, state, p)`` takes those scalars, the gradient, a mapping from moment name to
   array and the parameter (or ``None``), all in one compute dtype, and returns the direction and
   the new moments. It is pure ``jnp`` with no branches on values, so it works on any shape, under
   ``vmap`` and on any backend.

Complex parameters follow optax's convention: the gradient, the parameter and the moments that
average gradients are complex (complex64 for float32 precision); the moments that are magnitudes
(``Moment.nonnegative``: second moments, accumulators) are real and average ``|g|^2``
(:func:`abs_sq`, through :func:`square`), and norms are ``sqrt(sum |x|^2)``. The scalars stay
real. A rule written with these helpers works unchanged on complex arrays (the layout runs it
with jnp's standard dtype promotion, real times complex being what the math means); a rule with
no complex meaning says why in ``refuses_complex``.

The small helpers below are the equations several optimizers share, written as in the papers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jadam import hyperparams
from jadam.hyperparams import F32

#: Key of the learning rate in the per-step scalars ``apply`` gets, for rules that read it.
LEARNING_RATE = "layout/learning_rate"
#: Key of the weight decay in the per-step scalars of a rule with ``takes_weight_decay``; present
#: only for the leaves the mask selects.
WEIGHT_DECAY = "layout/weight_decay"


class Moment(NamedTuple):
    """One named state array of a rule, one per parameter.

    Attributes:
      name: the field of the optimizer's state that holds it, e.g. ``"mu"``.
      dtype: its dtype; ``None`` means the dtype of the parameter it belongs to.
      init: its initial value (Adagrad starts its sum at ``initial_accumulator_value``), a
        number or a scalar array (``optax.inject_hyperparams`` passes one), or ``"params"``
        for a copy of the parameter (Schedule-Free's base sequence).
      shape: a function from the parameter's shape to the moment's (Adafactor keeps factored
        row and column moments); ``None`` means the parameter's shape.
      nonnegative: whether the moment is never negative (second moments, accumulators), which
        lets 8-bit storage (:func:`jadam.quantized`) use all its codes for magnitudes; such a
        moment is real for complex parameters too.
    """

    name: str
    dtype: DTypeLike | None = None
    init: float | jax.Array | str = 0.0
    shape: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None
    nonnegative: bool = False


@dataclasses.dataclass(frozen=True)
class Rule:
    """The math of one optimizer; see the module docstring. Subclasses set the class attributes
    and implement :meth:`apply` (and :meth:`scalars` where a step needs per-step scalars).

    Attributes:
      hyperparams: the validated hyperparameters the math reads.
      moments: the per-parameter state, in the order the state type lists it.
    """

    hyperparams: Mapping[str, F32]
    moments: tuple[Moment, ...]

    #: The NamedTuple type of the state: ``count``, then one field per moment and per carry.
    state_type: ClassVar[type[Any]]
    #: Whether ``apply`` reads the parameter.
    needs_params: ClassVar[bool] = False
    #: Whether ``apply`` is elementwise; ``False`` if it reduces over the whole array (LAMB's
    #: trust ratio, Adafactor's factored moments), which a packed layout must know.
    elementwise: ClassVar[bool] = True
    #: Whether ``apply`` applies the weight decay itself (LAMB decays inside its trust ratio,
    #: Adan proximally), reading ``s[WEIGHT_DECAY]``, rather than the layout adding it.
    takes_weight_decay: ClassVar[bool] = False
    #: Whether ``apply`` returns the update itself, with the learning rate ``s[LEARNING_RATE]``
    #: already in it (Adafactor's relative step, Schedule-Free's averaging), rather than a
    #: direction the layout multiplies by ``-learning_rate``.
    takes_learning_rate: ClassVar[bool] = False
    #: Why the math has no complex form (Lion's sign), for the error a complex parameter gets;
    #: empty if it has one (see the module docstring).
    refuses_complex: ClassVar[str] = ""

    def for_leaf(self, path: Any, shape: tuple[int, ...]) -> Rule:
        """The rule for the leaf at key path ``path`` with shape ``shape``: itself, unless an
        optimizer's math depends on where a leaf sits in the tree (Adam-mini's blocks)."""
        del path, shape
        return self

    def carry_init(self) -> dict[str, float]:
        """Scalar state carried from step to step (beside the count), with initial values."""
        return {}

    def scalars(
        self, hp: Mapping[str, jax.Array], t: jax.Array, carry: Mapping[str, jax.Array]
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """The per-step scalars and the new carry, from the hyperparameters, the 1-based step
        number ``t`` (float32) and the carry. By default, the hyperparameters themselves."""
        return dict(hp), dict(carry)

    def apply(
        self,
        s: Mapping[str, jax.Array],
        g: jax.Array,
        state: Mapping[str, jax.Array],
        p: jax.Array | None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The update direction and the new moments for one array."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class BiasCorrected(Rule):
    """A rule whose step reads Adam's two bias corrections, ``s["bc1"]`` :math:`= 1 - b_1^t`
    and ``s["bc2"]`` :math:`= 1 - b_2^t`, beside its hyperparameters."""

    def scalars(
        self, hp: Mapping[str, jax.Array], t: jax.Array, carry: Mapping[str, jax.Array]
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        bias = {"bc1": bias_correction(hp["b1"], t), "bc2": bias_correction(hp["b2"], t)}
        return {**hp, **bias}, dict(carry)


def adam_hyperparams(fn: str, b1: Any, b2: Any, eps: Any) -> dict[str, F32]:
    """Adam's ``b1`` and ``b2`` (each in [0, 1)) and ``eps`` (>= 0), validated for ``fn``."""
    return {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }


def mu_nu(
    fn: str, mu_dtype: Any, nu_dtype: Any, *, nu_init: float = 0.0
) -> tuple[Moment, Moment]:
    """Adam's pair of moments, ``mu`` and ``nu``, with their dtypes validated for ``fn``."""
    return (Moment("mu", hyperparams.float_dtype(fn, "mu_dtype", mu_dtype)),
            Moment("nu", hyperparams.float_dtype(fn, "nu_dtype", nu_dtype), init=nu_init,
                   nonnegative=True))


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
