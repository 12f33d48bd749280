"""Stochastic gradient descent, with momentum and Nesterov momentum, as torch.optim.SGD."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step


class ScaleBySGDState(NamedTuple):
    """State of :func:`sgd`.

    Attributes:
      count: number of updates made so far.
      trace: the momentum buffer; ``None`` when ``momentum`` is the number 0.
    """

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    trace: optax.Updates | None = None


@dataclasses.dataclass(frozen=True)
class SGDRule(Rule):
    """The momentum buffer and its Nesterov look-ahead, for one array."""

    nesterov: bool = False
    state_type = ScaleBySGDState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        if not self.moments:
            return {}, carry
        # torch starts the buffer at the first gradient itself, undamped.
        take = jnp.where(t == 1, jnp.ones_like(t), 1 - hp.dampening)
        return {"take": take}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        if not self.moments:
            return g, {}
        trace = s.momentum * state["trace"] + s.take * g
        direction = g + s.momentum * trace if self.nesterov else trace
        return direction, {"trace": trace}


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar | None = None,
    *,
    dampening: Scalar = 0.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
    accumulator_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent with optional momentum (Polyak) or Nesterov momentum.

    With gradient :math:`g_t` (plus :math:`\lambda\theta_{t-1}` if ``weight_decay`` is set):

    .. math::

        b_1 &= g_1, \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t \\
        d_t &= g_t + \mu b_t \ \text{(nesterov)}, \quad\text{else } d_t = b_t \\
        \theta_t &= \theta_{t-1} - \alpha d_t

    and :math:`d_t = g_t` without momentum.

    Args:
      learning_rate: :math:`\alpha`, a number or an optax schedule; required, as in torch.
      momentum: :math:`\mu` >= 0. ``None`` (the default) or the number 0 keeps no buffer;
        an array, even a zero one (as ``optax.inject_hyperparams`` passes), keeps one.
      dampening: :math:`\tau` in [0, 1], damps the gradient's share of the buffer.
      nesterov: Nesterov momentum (Sutskever et al., 2013); needs momentum > 0 and no
        dampening.
      weight_decay: :math:`\lambda` >= 0, coupled L2 (added to the gradient).
      maximize: ascend instead of descending.
      accumulator_dtype: the momentum buffer's dtype (optax's name); default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleBySGDState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> tx = jadam.sgd(0.1, momentum=0.9)
      >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
      >>> updates["w"]
      Array([-0.1,  0.1], dtype=float32)

    Complex parameters (see the README's table): the momentum buffer is complex, as in optax.

    Differences from other libraries:
      - ``torch.optim.SGD``: the same, with the same arguments.
      - ``optax.sgd``: the same for ``dampening=0``; its buffer also starts at the first
        gradient. optax has no ``dampening``, ``weight_decay`` or ``maximize`` in ``sgd``.

    References:
      Robbins & Monro, *A Stochastic Approximation Method*, Ann. Math. Statist. 1951,
      https://doi.org/10.1214/aoms/1177729586.
      Polyak, *Some methods of speeding up the convergence of iteration methods*, 1964.
      Sutskever, Martens, Dahl & Hinton, *On the importance of initialization and momentum in
      deep learning*, ICML 2013, https://proceedings.mlr.press/v28/sutskever13.html.
    """
    return layout.alias("jadam.sgd", scale_by_sgd, locals())


def scale_by_sgd(
    momentum: Scalar | None = None, *, dampening: Scalar = 0.0, nesterov: bool = False,
    accumulator_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    """SGD's direction: the gradient, or its momentum trace (Nesterov's look-ahead with
    ``nesterov``), without learning rate or sign. The math and arguments are :func:`sgd`'s.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleBySGDState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_sgd")
    hp = {
        "momentum": hyperparams.scalar(fn, "momentum", 0.0 if momentum is None else momentum),
        "dampening": hyperparams.scalar(fn, "dampening", dampening, high=1.0),
    }
    momentum_, dampening_ = hyperparams.known(hp["momentum"]), hyperparams.known(hp["dampening"])
    if nesterov and (momentum_ == 0 or dampening_ not in (None, 0)):
        raise ValueError(
            f"{fn}(nesterov=True): Nesterov momentum needs momentum > 0 and dampening = 0, got "
            f"momentum={momentum}, dampening={dampening}"
        )
    dtype = hyperparams.float_dtype(fn, "accumulator_dtype", accumulator_dtype)
    moments = () if hyperparams.is_zero(hp["momentum"]) else (Moment("trace", dtype),)
    return layout.per_leaf(SGDRule(hp, moments, nesterov=bool(nesterov)), fn=fn)
