"""RMSprop (Tieleman & Hinton, 2012), with Graves's centred form and momentum."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jadam import hyperparams, layout
from jadam.equations import abs_sq, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Moment, Moments, Rule, Scalars, Step


class ScaleByRMSpropState(NamedTuple):
    """State of :func:`rmsprop`.

    Attributes:
      count: number of updates made so far.
      nu: running average of squared gradients.
      mu: with ``centered``, the running average of gradients; otherwise ``None``.
      trace: with momentum (not the number 0), the momentum buffer; otherwise ``None``.
    """

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    nu: optax.Updates
    mu: optax.Updates | None = None
    trace: optax.Updates | None = None


@dataclasses.dataclass(frozen=True)
class RMSpropRule(Rule):
    """RMSprop's step for one array."""

    centered: bool = False
    eps_in_sqrt: bool = False
    state_type = ScaleByRMSpropState

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        nu = ema(state["nu"], square(g), s.decay)
        new = {"nu": nu}
        variance = nu
        if self.centered:
            mu = new["mu"] = ema(state["mu"], g, s.decay)
            variance = nu - abs_sq(mu)
        if self.eps_in_sqrt:
            direction = g / jnp.sqrt(variance + s.eps)
        else:
            direction = g / (jnp.sqrt(variance) + s.eps)
        if "trace" in state:
            direction = new["trace"] = s.momentum * state["trace"] + direction
        return direction, new


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    decay: Scalar = 0.99,
    eps: Scalar = 1e-8,
    *,
    centered: bool = False,
    momentum: Scalar | None = None,
    eps_in_sqrt: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop: divide the gradient by a running root mean square of recent gradients.

    .. math::

        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \bar g_t &= \rho \bar g_{t-1} + (1 - \rho) g_t \quad\text{(centered only;
            then } v_t \text{ below is } v_t - \bar g_t^2\text{)} \\
        d_t &= g_t / (\sqrt{v_t} + \epsilon)
            \quad\text{(or } g_t / \sqrt{v_t + \epsilon} \text{ with eps\_in\_sqrt)} \\
        b_t &= \mu b_{t-1} + d_t \quad\text{(momentum } \mu > 0\text{; then } d_t = b_t) \\
        \theta_t &= \theta_{t-1} - \alpha d_t

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      decay: :math:`\rho` in [0, 1), torch's ``alpha``.
      eps: :math:`\epsilon` >= 0.
      centered: subtract the squared mean gradient (Graves, 2013): a variance estimate.
      momentum: :math:`\mu` >= 0. ``None`` (the default) or the number 0 keeps no buffer;
        an array, even a zero one (as ``optax.inject_hyperparams`` passes), keeps one.
      eps_in_sqrt: put eps inside the root, as optax does.
      weight_decay: coupled L2 (added to the gradient), >= 0.
      maximize: ascend instead of descending.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByRMSpropState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.rmsprop(1e-2, centered=True, momentum=0.9)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` and ``trace`` are complex, ``nu`` the
    real average of ``|g|^2``, and the centred variance ``nu - |mu|^2``, as in optax.

    Differences from other libraries:
      - ``torch.optim.RMSprop``: the same update and defaults (``decay`` is torch's ``alpha``).
      - ``optax.rmsprop`` defaults to ``decay=0.9`` and ``eps_in_sqrt=True``, and applies its
        momentum after the learning rate (the same for a constant rate). To reproduce it:
        ``jadam.rmsprop(lr, decay=0.9, eps_in_sqrt=True)``.

    References:
      Tieleman & Hinton, *Lecture 6.5, rmsprop*, COURSERA: Neural Networks for Machine
      Learning, 2012, https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf.
      Graves, *Generating Sequences With Recurrent Neural Networks*, 2013, Section 4,
      https://arxiv.org/abs/1308.0850.
    """
    return layout.alias("jadam.rmsprop", scale_by_rmsprop, locals())


def scale_by_rmsprop(
    decay: Scalar = 0.99,
    eps: Scalar = 1e-8,
    *,
    centered: bool = False,
    momentum: Scalar | None = None,
    eps_in_sqrt: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """RMSprop's direction, the gradient over the running RMS (with momentum, its trace),
    without learning rate or sign. The math and arguments are :func:`rmsprop`'s; with
    ``momentum`` the trace accumulates the unscaled direction.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByRMSpropState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_rmsprop")
    hp = {
        "decay": hyperparams.decay_rate(fn, "decay", decay),
        "eps": hyperparams.scalar(fn, "eps", eps),
        "momentum": hyperparams.scalar(fn, "momentum", 0.0 if momentum is None else momentum),
    }
    moments: tuple[Moment, ...] = (Moment("nu", nonnegative=True),)
    if centered:
        moments += (Moment("mu"),)
    if not hyperparams.is_zero(hp["momentum"]):
        moments += (Moment("trace"),)
    rule = RMSpropRule(hp, moments, centered=bool(centered), eps_in_sqrt=bool(eps_in_sqrt))
    return layout.per_leaf(rule, fn=fn)
