"""Rules: an optimizer's math as elementwise functions of arrays.

A rule says which per-element state an optimizer keeps (its :class:`Moment` s) and how one
gradient array, its state arrays and its parameter array give the update direction and the new
state. It knows nothing of pytrees, dtypes or learning rates: a layout (see :mod:`jadam.layout`)
applies it to every leaf of a tree, casts to and from the compute dtype, and handles the step
count, the learning rate, weight decay and ``maximize``, which are the same for every optimizer.

A rule works in two stages, so that per-step scalars are computed once per step rather than once
per leaf:

1. ``scalars(hp, t, carry)`` takes the hyperparameters (a :class:`Scalars`: ``hp.b1``), the
   1-based step number ``t`` and any scalar state the rule carries between steps, all scalars
   of one dtype (float32, or float64 for float64 leaves; the code must not fix it), and returns
   the scalars the step needs beside the hyperparameters, such as bias corrections, and the new
   carry.
2. ``apply(s, g, state, p)`` (the signature :data:`Apply`) takes those scalars and the
   hyperparameters as one :class:`Scalars` (``s.b1``, ``s.bc1``), the gradient, a mapping from
   moment name to array and the parameter (or ``None``), all in one compute dtype, and returns
   the direction and the new moments. It is pure ``jnp`` with no branches on values, so it
   works on any shape, under ``vmap`` and on any backend.

Complex parameters follow optax's convention: the gradient, the parameter and the moments that
average gradients are complex (complex64 for float32 precision); the moments that are magnitudes
(``Moment.nonnegative``: second moments, accumulators) are real and average ``|g|^2``
(:func:`abs_sq`, through :func:`square`), and norms are ``sqrt(sum |x|^2)``. The scalars stay
real. A rule written with these helpers works unchanged on complex arrays (the layout runs it
with jnp's standard dtype promotion, real times complex being what the math means); a rule with
no complex meaning says why in ``refuses_complex``.

The equations several optimizers share (moving averages, bias corrections, saturating squares)
are in :mod:`jadam.equations`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TypeAlias

import jax
from jax.typing import DTypeLike

from jadam import hyperparams
from jadam.equations import bias_correction
from jadam.hyperparams import F32


@dataclasses.dataclass(frozen=True)
class Scalars:
    """One step's scalars, as :meth:`Rule.apply` reads them: real, of one dtype, computed once
    per step (not per leaf).

    The hyperparameters and what :meth:`Rule.scalars` added are attributes by their names
    (``s.b1``, ``s.bc1``); the layout gives two more, typed, to the rules that declare they apply
    them (:attr:`Rule.takes_learning_rate`, :attr:`Rule.takes_weight_decay`).

    Attributes:
      values: the hyperparameters and the rule's own per-step scalars, by name.
      learning_rate: this step's learning rate, for a rule that applies it; otherwise ``None``.
      weight_decay: this step's weight decay, for a rule that applies it and a leaf the mask
        selects; otherwise ``None``.
    """

    values: Mapping[str, jax.Array]
    learning_rate: jax.Array | None = None
    weight_decay: jax.Array | None = None

    def __getattr__(self, name: str) -> jax.Array:
        if name.startswith("__") or name == "values":  # (copy and pickle probe for these)
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            have = sorted(self.values)
            raise AttributeError(f"no per-step scalar {name!r}; there are {have}") from None


#: The state arrays of one parameter, by moment name, as ``apply`` gets and returns them.
Moments: TypeAlias = Mapping[str, jax.Array]
#: Scalars by name: the scalar state a rule carries between steps, its per-step scalars.
Carry: TypeAlias = Mapping[str, jax.Array]
#: What ``apply`` returns: the direction (or the update, for a rule that applies the learning
#: rate) and the new moments.
Step: TypeAlias = tuple[jax.Array, dict[str, jax.Array]]
#: The signature every rule's :meth:`Rule.apply` has: ``apply(s, g, state, p)``.
Apply: TypeAlias = Callable[[Scalars, jax.Array, Moments, jax.Array | None], Step]


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
    #: Adan proximally), reading ``s.weight_decay``, rather than the layout adding it.
    takes_weight_decay: ClassVar[bool] = False
    #: Whether ``apply`` returns the update itself, with the learning rate ``s.learning_rate``
    #: already in it (Adafactor's relative step, Schedule-Free's averaging), rather than a
    #: direction the layout multiplies by ``-learning_rate``.
    takes_learning_rate: ClassVar[bool] = False
    #: Whether the math depends on where a leaf sits in the tree (Adam-mini's blocks): then
    #: :meth:`for_leaf` gives each leaf its own rule, and packing cannot merge leaves.
    per_path: ClassVar[bool] = False
    #: Why the math has no complex form (Lion's sign), for the error a complex parameter gets;
    #: empty if it has one (see the module docstring).
    refuses_complex: ClassVar[str] = ""

    #: Names of per-array sums that ``apply`` returns beside its new moments (in the same
    #: mapping), which the layout adds up over every array of the tree and passes to
    #: :meth:`after`: a step that reduces over the whole model (Prodigy's estimate of the
    #: distance to the solution). Such a rule is not :attr:`elementwise`.
    tree_sums: ClassVar[tuple[str, ...]] = ()

    def for_leaf(self, path: Any, shape: tuple[int, ...]) -> Rule:
        """The rule for the leaf at key path ``path`` with shape ``shape``: itself, unless the
        rule is :attr:`per_path`."""
        del path, shape
        return self

    def carry_init(self) -> dict[str, float]:
        """Scalar state carried from step to step (beside the count), with initial values."""
        return {}

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        """The rule's own per-step scalars (``apply`` reads them beside the hyperparameters,
        which they may replace) and the new carry, from the hyperparameters, the 1-based step
        number ``t`` and the carry, all of one real dtype. By default, none."""
        del hp, t
        return {}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        """The update direction and the new moments for one array."""
        raise NotImplementedError

    def after(self, s: Scalars, carry: Carry, sums: Carry) -> Carry:
        """The carry for the next step, from this step's scalars, the carry :meth:`scalars`
        returned and the totals over the tree of :attr:`tree_sums`, all in the carry's dtype.
        By default, that carry."""
        del s, sums
        return carry


@dataclasses.dataclass(frozen=True)
class BiasCorrected(Rule):
    """A rule whose step reads Adam's two bias corrections, ``s.bc1`` :math:`= 1 - b_1^t`
    and ``s.bc2`` :math:`= 1 - b_2^t`, beside its hyperparameters."""

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        return {"bc1": bias_correction(hp.b1, t), "bc2": bias_correction(hp.b2, t)}, carry


def adam_hyperparams(fn: str, b1: Any, b2: Any, eps: Any) -> dict[str, F32]:
    """Adam's ``b1`` and ``b2`` (each in [0, 1)) and ``eps`` (>= 0), validated for ``fn``."""
    return {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }


def mu_nu(
    fn: str, mu_dtype: Any, nu_dtype: Any, *, nu_init: float | F32 = 0.0
) -> tuple[Moment, Moment]:
    """Adam's pair of moments, ``mu`` and ``nu``, with their dtypes validated for ``fn``."""
    return (Moment("mu", hyperparams.float_dtype(fn, "mu_dtype", mu_dtype)),
            Moment("nu", hyperparams.float_dtype(fn, "nu_dtype", nu_dtype), init=nu_init,
                   nonnegative=True))
