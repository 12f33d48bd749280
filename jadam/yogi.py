"""Yogi (Zaheer et al., 2018): Adam whose second moment moves additively, so it cannot forget
past gradients as fast as Adam's."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByYogiState(NamedTuple):
    """State of :func:`yogi`: ``count``; ``mu``, the first moment; ``nu``, Yogi's second
    moment."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class YogiRule(Rule):
    """Algorithm 2 of Zaheer et al., for one array."""

    state_type = ScaleByYogiState

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        g2 = square(g)
        nu = state["nu"] - (1 - s.b2) * jnp.sign(state["nu"] - g2) * g2
        return mu / (jnp.sqrt(nu) + s.eps), {"mu": mu, "nu": nu}


def yogi(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-3,
    *,
    initial_accumulator_value: Scalar = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Yogi: additive, sign-controlled updates of the second moment (Zaheer et al., 2018).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= v_{t-1} - (1 - \beta_2)\, \operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
        \theta_t &= \theta_{t-1} - \alpha\, m_t / (\sqrt{v_t} + \epsilon)

    with :math:`m_0 = 0` and :math:`v_0` = ``initial_accumulator_value``; no bias correction,
    as in the paper.

    Args:
      learning_rate: :math:`\alpha`; the paper's default 1e-2.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0; the paper's default 1e-3.
      initial_accumulator_value: :math:`v_0` >= 0 (a number or a scalar array).
      weight_decay: coupled L2 (added to the gradient), >= 0.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByYogiState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.yogi()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` real, updated with
    ``|g|^2`` as in optax.

    Differences from other libraries: ``optax.yogi`` divides both moments by Adam's bias
    corrections, which the paper does not, and starts the first moment at
    ``initial_accumulator_value`` too (the paper at 0), so the two differ in every step; there
    is no setting that makes them equal. torch.optim has no Yogi.

    References:
      Zaheer, Reddi, Sachan, Kale & Kumar, *Adaptive Methods for Nonconvex Optimization*,
      NeurIPS 2018, https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.
    """
    return layout.alias("jadam.yogi", scale_by_yogi, locals())


def scale_by_yogi(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-3,
    *,
    initial_accumulator_value: Scalar = 1e-6,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Yogi's direction, the momentum over the root of the additively updated second moment,
    without learning rate, weight decay or sign: the building block of :func:`yogi`, whose docstring
    has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByYogiState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_yogi")
    hp = adam_hyperparams(fn, b1, b2, eps)
    initial = hyperparams.scalar(fn, "initial_accumulator_value", initial_accumulator_value)
    return layout.per_leaf(YogiRule(hp, mu_nu(fn, mu_dtype, nu_dtype, nu_init=initial)), fn=fn)
