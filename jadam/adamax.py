"""Adamax (Kingma & Ba, 2015, Section 7.1): Adam with the infinity norm."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import bias_correction, ema
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByAdamaxState(NamedTuple):
    """State of :func:`adamax`: ``count``; ``mu``, the first moment; ``nu``, the exponentially
    weighted infinity norm of the gradients."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdamaxRule(Rule):
    """Algorithm 2 of Kingma & Ba, for one array."""

    state_type = ScaleByAdamaxState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        return {"bc1": bias_correction(hp.b1, t)}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        nu = jnp.maximum(s.b2 * state["nu"], jnp.abs(g) + s.eps)
        return mu / s.bc1 / nu, {"mu": mu, "nu": nu}


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax: Adam with the infinity norm in place of the second moment.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\alpha}{1 - \beta_1^t} \frac{m_t}{u_t}

    Args:
      learning_rate: :math:`\alpha`; the paper's and torch's default 2e-3.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside the maximum (the paper has none; torch and optax do,
        so that :math:`u_t` is never 0).
      weight_decay: coupled L2 (added to the gradient), >= 0.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: dtypes of :math:`m` and :math:`u`; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamaxState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adamax()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real maximum of
    ``|g| + eps``, the modulus, as in optax.

    Differences from other libraries: the same update as ``torch.optim.Adamax`` and
    ``optax.adamax`` (whose default rate is 1e-3).

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, Section 7.1,
      https://arxiv.org/abs/1412.6980.
    """
    return layout.alias("jadam.adamax", scale_by_adamax, locals())


def scale_by_adamax(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax's direction, the bias-corrected momentum over the infinity norm, without learning
    rate, weight decay or sign: the building block of :func:`adamax`, whose docstring has the math
    and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamaxState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adamax")
    hp = adam_hyperparams(fn, b1, b2, eps)
    return layout.per_leaf(AdamaxRule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)
