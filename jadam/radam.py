"""RAdam (Liu et al., 2020): Adam whose adaptive step is switched on once its variance is
tractable, and rectified until the variance settles."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import bias_correction, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByRAdamState(NamedTuple):
    """State of :func:`radam`: ``count``, and Adam's moments ``mu`` and ``nu``."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class RAdamRule(Rule):
    """Algorithm 2 of Liu et al., for one array; the switch and rectification are scalars."""

    state_type = ScaleByRAdamState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        bc2 = bias_correction(hp.b2, t)
        rho_inf = 2 / (1 - hp.b2) - 1
        rho_t = rho_inf - 2 * t * (1 - bc2) / bc2
        ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        adaptive = rho_t > 5
        return {
            "bc1": bias_correction(hp.b1, t),
            "sqrt_bc2": jnp.sqrt(bc2),
            "adaptive": adaptive,
            "rect": jnp.sqrt(jnp.where(adaptive, ratio, jnp.ones_like(ratio))),
        }, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], square(g), s.b2)
        mu_hat = mu / s.bc1
        rectified = mu_hat * s.rect * s.sqrt_bc2 / (jnp.sqrt(nu) + s.eps)
        return jnp.where(s.adaptive, rectified, mu_hat), {"mu": mu, "nu": nu}


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam: rectified Adam (Liu et al., 2020).

    With :math:`m_t, v_t` as in :func:`jadam.adam`, :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`:

    .. math::

        \hat m_t &= m_t / (1 - \beta_1^t) \\
        \theta_t &= \theta_{t-1} - \alpha\, r_t\, \hat m_t
            \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}, \quad
            r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                              {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}
            \quad\text{if } \rho_t > 5 \\
        \theta_t &= \theta_{t-1} - \alpha \hat m_t \quad\text{otherwise (SGD with momentum).}

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, added to :math:`\sqrt{v_t}`.
      weight_decay: >= 0; coupled L2, or decoupled with ``decoupled_weight_decay``.
      decoupled_weight_decay: AdamW-style decay :math:`-\alpha\lambda\theta` (torch's flag).
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: dtypes of the moments; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByRAdamState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.radam()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``, as in optax.

    Differences from other libraries:
      - ``torch.optim.RAdam``: the same update, arguments and defaults.
      - ``optax.radam`` adds eps to the root of the bias-corrected :math:`\hat v_t` (jadam and
        torch add it to :math:`\sqrt{v_t}`); otherwise the same, and equal for ``eps=0``.

    References:
      Liu, Jiang, He, Chen, Liu, Gao & Han, *On the Variance of the Adaptive Learning Rate and
      Beyond*, ICLR 2020, https://arxiv.org/abs/1908.03265.
    """
    return layout.alias("jadam.radam", scale_by_radam, locals())


def scale_by_radam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam's direction (the rectified Adam ratio, or the bias-corrected momentum while the
    variance is intractable), without learning rate, weight decay or sign: the building block of
    :func:`radam`, whose docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByRAdamState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_radam")
    hp = adam_hyperparams(fn, b1, b2, eps)
    return layout.per_leaf(RAdamRule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)
