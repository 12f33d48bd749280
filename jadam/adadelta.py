"""Adadelta (Zeiler, 2012): step sizes from running averages of squared gradients and updates."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jadam import hyperparams, layout
from jadam.equations import ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Moment, Moments, Rule, Scalars, Step


class ScaleByAdadeltaState(NamedTuple):
    """State of :func:`adadelta`: ``count``; ``square_avg``, the running average of squared
    gradients; ``acc_delta``, the running average of squared updates."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    square_avg: optax.Updates
    acc_delta: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdadeltaRule(Rule):
    """Algorithm 1 of Zeiler (2012), for one array."""

    state_type = ScaleByAdadeltaState

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        square_avg = ema(state["square_avg"], square(g), s.rho)
        delta = jnp.sqrt(state["acc_delta"] + s.eps) / jnp.sqrt(square_avg + s.eps) * g
        acc_delta = ema(state["acc_delta"], square(delta), s.rho)
        return delta, {"square_avg": square_avg, "acc_delta": acc_delta}


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adadelta: per-coordinate steps in the units of the parameters (Zeiler, 2012).

    .. math::

        E[g^2]_t &= \rho E[g^2]_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{E[\Delta^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}} g_t \\
        E[\Delta^2]_t &= \rho E[\Delta^2]_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \alpha \Delta_t

    Args:
      learning_rate: :math:`\alpha`, a factor on the paper's step (which has none: 1.0).
      rho: :math:`\rho` in (0, 1), decay of both averages. The paper tried 0.9 and 0.95.
      eps: :math:`\epsilon` >= 0, inside both roots, as in the paper.
      weight_decay: coupled L2 (added to the gradient), >= 0.
      maximize: ascend instead of descending.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdadeltaState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adadelta()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): both averages are real, of ``|g|^2`` and
    ``|Δ|^2`` (``optax.adadelta`` squares a complex ``g`` itself).

    Differences from other libraries: the same update and defaults as ``torch.optim.Adadelta``
    and ``optax.adadelta`` (whose learning rate must be given; pass 1.0 to match).

    References:
      Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012,
      https://arxiv.org/abs/1212.5701.
    """
    return layout.alias("jadam.adadelta", scale_by_adadelta, locals())


def scale_by_adadelta(
    rho: Scalar = 0.9, eps: Scalar = 1e-6
) -> optax.GradientTransformationExtraArgs:
    r"""Adadelta's step :math:`\Delta_t`, without learning rate or sign. The math and arguments
    are :func:`adadelta`'s.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdadeltaState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adadelta")
    hp = {
        "rho": hyperparams.scalar(fn, "rho", rho, high=1.0, low_open=True, high_open=True),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }
    moments = (Moment("square_avg", nonnegative=True), Moment("acc_delta", nonnegative=True))
    return layout.per_leaf(AdadeltaRule(hp, moments), fn=fn)
