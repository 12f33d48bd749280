"""Adagrad (Duchi, Hazan & Singer, 2011): steps scaled by the root of all past squared gradients."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jadam import hyperparams, layout
from jadam.equations import square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step


class ScaleByAdagradState(NamedTuple):
    """State of :func:`adagrad`: ``count``; ``sum``, the running sum of squared gradients."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    sum: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdagradRule(Rule):
    """The diagonal Adagrad step, with torch's learning-rate decay, for one array."""

    state_type = ScaleByAdagradState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        return {"eps": hp.eps, "decay": 1 / (1 + (t - 1) * hp.lr_decay)}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        # (The old sum capped at half the largest float: the new one stays finite.)
        total = jnp.minimum(state["sum"], jnp.finfo(g.dtype).max / 2) + square(g)
        return s.decay * g / (jnp.sqrt(total) + s.eps), {"sum": total}


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    *,
    lr_decay: Scalar = 0.0,
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-10,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adagrad: per-coordinate steps shrinking with the sum of squared gradients.

    .. math::

        G_t &= G_{t-1} + g_t^2, \qquad G_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \frac{\alpha}{1 + (t - 1)\,\text{lr\_decay}}
            \cdot \frac{g_t}{\sqrt{G_t} + \epsilon}

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      lr_decay: >= 0, torch's extra decay of the rate with the step count.
      initial_accumulator_value: :math:`G_0` >= 0 (a number or a scalar array).
      eps: :math:`\epsilon` >= 0, added outside the root.
      weight_decay: coupled L2 (added to the gradient), >= 0.
      maximize: ascend instead of descending.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdagradState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adagrad(0.1)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): the sum is real, of ``|g|^2``.

    Differences from other libraries:
      - ``torch.optim.Adagrad``: the same update, arguments and defaults.
      - ``optax.adagrad`` starts the sum at 0.1, puts eps (1e-7) inside the root, and has no
        ``lr_decay``. With ``eps=0`` the two agree: ``jadam.adagrad(lr,
        initial_accumulator_value=0.1, eps=0.0)`` equals ``optax.adagrad(lr, eps=0.0)``.

    References:
      Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online Learning and Stochastic
      Optimization*, JMLR 12, 2011, https://jmlr.org/papers/v12/duchi11a.html.
    """
    return layout.alias("jadam.adagrad", scale_by_adagrad, locals())


def scale_by_adagrad(
    *, lr_decay: Scalar = 0.0, initial_accumulator_value: Scalar = 0.0, eps: Scalar = 1e-10
) -> optax.GradientTransformationExtraArgs:
    """Adagrad's direction :math:`g_t / (\\sqrt{G_t} + \\epsilon)` (divided by
    :math:`1 + (t - 1)\\,\text{lr\\_decay}`), without learning rate or sign. The math and
    arguments are :func:`adagrad`'s.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdagradState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adagrad")
    hp = {
        "lr_decay": hyperparams.scalar(fn, "lr_decay", lr_decay),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }
    initial = hyperparams.scalar(fn, "initial_accumulator_value", initial_accumulator_value)
    return layout.per_leaf(AdagradRule(hp, (Moment("sum", init=initial, nonnegative=True),)), fn=fn)
