"""Adam-atan2 (Everett et al., 2024): Adam's ratio replaced by an arctangent, without eps."""

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
from jadam.rule import BiasCorrected, Moments, Scalars, Step, mu_nu


class ScaleByAdamAtan2State(NamedTuple):
    """State of :func:`adam_atan2`: ``count``; ``mu`` and ``nu``, Adam's two moments."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdamAtan2Rule(BiasCorrected):
    """Adam with ``a * atan2(m_hat, b * sqrt(v_hat))`` as its direction, for one array."""

    state_type = ScaleByAdamAtan2State

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], square(g), s.b2)
        m_hat, root = mu / s.bc1, s.b * jnp.sqrt(nu / s.bc2)
        if jnp.iscomplexobj(m_hat):  # the modulus through atan2, the phase kept
            size = jnp.abs(m_hat)
            phase = m_hat / jnp.where(size > 0, size, 1)
            return s.a * phase * jnp.arctan2(size, root), {"mu": mu, "nu": nu}
        return s.a * jnp.arctan2(m_hat, root), {"mu": mu, "nu": nu}


def adam_atan2(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    a: Scalar = 1.27,
    b: Scalar = 1.0,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-atan2: Adam without eps, scale-invariant (Everett et al., 2024).

    With Adam's bias-corrected moments :math:`\hat m_t, \hat v_t` (see :func:`jadam.adam`):

    .. math::

        \theta_t = \theta_{t-1} - \alpha \left( a \operatorname{atan2}\big(\hat m_t,
            b \sqrt{\hat v_t}\big) + \lambda \theta_{t-1} \right)

    ``atan2`` is Adam's ratio :math:`\hat m / \sqrt{\hat v}` where that is small and bounded
    by :math:`a \pi / 2` where it is large; it is defined at :math:`\hat v = 0`, so there is no
    :math:`\epsilon` to tune or to scale with the width, and multiplying every gradient by a
    constant leaves the steps unchanged.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      a, b: the constants of the arctangent, >= 0. The defaults, 1.27 and 1, are those of the
        common implementations: :math:`1.27 \arctan(1) \approx 1`, so a step with
        :math:`\hat m = \sqrt{\hat v}` has Adam's size.
      weight_decay: :math:`\lambda` >= 0, decoupled as in :func:`jadam.adamw`.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamAtan2State`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adam_atan2(1e-3)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``; the arctangent takes :math:`|\hat m|`, and the step keeps :math:`\hat m`'s phase.

    Differences from other libraries: neither optax nor torch.optim has Adam-atan2.

    References:
      Everett, Xiao, Wortsman, Alemi, Novak, Liu, Gur, Sohl-Dickstein, Kaelbling, Lee &
      Pennington, *Scaling Exponents Across Parameterizations and Optimizers*, ICML 2024,
      https://arxiv.org/abs/2407.05872.
    """
    return layout.alias("jadam.adam_atan2", scale_by_adam_atan2, locals(), decoupled=True)


def scale_by_adam_atan2(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    a: Scalar = 1.27,
    b: Scalar = 1.0,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-atan2's direction ``a * atan2(m_hat, b * sqrt(v_hat))``, without learning rate,
    weight decay or sign: the building block of :func:`adam_atan2`, whose docstring has the
    math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamAtan2State`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adam_atan2")
    hp = {"b1": hyperparams.decay_rate(fn, "b1", b1), "b2": hyperparams.decay_rate(fn, "b2", b2),
          "a": hyperparams.scalar(fn, "a", a), "b": hyperparams.scalar(fn, "b", b)}
    return layout.per_leaf(AdamAtan2Rule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)
