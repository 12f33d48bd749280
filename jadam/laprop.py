"""LaProp (Ziyin, Wang & Ueda, 2020): momentum over the gradient normalised by its RMS."""

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
from jadam.rule import BiasCorrected, Moments, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByLaPropState(NamedTuple):
    """State of :func:`laprop`: ``count``; ``mu``, the momentum of normalised gradients;
    ``nu``, the average of squared gradients."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class LaPropRule(BiasCorrected):
    """Algorithm 1 of Ziyin, Wang & Ueda, for one array: normalise, then average."""

    state_type = ScaleByLaPropState

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        nu = ema(state["nu"], square(g), s.b2)
        mu = ema(state["mu"], g / (jnp.sqrt(nu / s.bc2) + s.eps), s.b1)
        return mu / s.bc1, {"mu": mu, "nu": nu}


def laprop(
    learning_rate: ScalarOrSchedule = 4e-4,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-15,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LaProp: Adam with the momentum taken after the normalisation (Ziyin et al., 2020).

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)
            \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} \\
        \theta_t &= \theta_{t-1} - \alpha \left( \frac{m_t}{1 - \beta_1^t}
            + \lambda \theta_{t-1} \right)

    Adam averages gradients and divides the average by their RMS; LaProp divides each gradient
    by the RMS and averages the results, so momentum and adaptivity no longer interact: each
    step is at most about :math:`\alpha / \sqrt{1 - \beta_2}` however :math:`\beta_1` and
    :math:`\beta_2` are set, and :math:`\beta_1 > \beta_2` is stable.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule; the authors' default 4e-4.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root (the authors' 1e-15).
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate as in
        :func:`jadam.adamw`.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLaPropState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.laprop()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``.

    Differences from other libraries: neither optax nor torch.optim has LaProp. The authors'
    code folds the learning rate into the momentum (a changed rate weighs only new gradients)
    and decays by ``weight_decay * theta`` unscaled by the rate; with a constant rate and no
    decay it is this update. Here the rate multiplies the bias-corrected momentum, as in the
    paper's algorithm, and the decay is AdamW's.

    References:
      Ziyin, Wang & Ueda, *LaProp: Separating Momentum and Adaptivity in Adam*, 2020,
      https://arxiv.org/abs/2002.04839.
    """
    return layout.alias("jadam.laprop", scale_by_laprop, locals(), decoupled=True)


def scale_by_laprop(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-15,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LaProp's direction, the bias-corrected momentum of normalised gradients, without
    learning rate, weight decay or sign: the building block of :func:`laprop`, whose
    docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLaPropState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_laprop")
    rule = LaPropRule(adam_hyperparams(fn, b1, b2, eps), mu_nu(fn, mu_dtype, nu_dtype))
    return layout.per_leaf(rule, fn=fn)
