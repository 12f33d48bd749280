"""AdaBelief (Zhuang et al., 2020): Adam whose second moment is the belief in the gradient, the
running variance of the gradient around its own moving average."""

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


class ScaleByBeliefState(NamedTuple):
    """State of :func:`adabelief`: ``count``; ``mu``, the first moment; ``nu``, the running
    average of the squared prediction error ``(g - mu)**2`` (plus ``eps_root``)."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdaBeliefRule(BiasCorrected):
    """Algorithm 2 of Zhuang et al., for one array."""

    state_type = ScaleByBeliefState

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        surprise = g - mu
        nu = ema(state["nu"], square(surprise), s.b2) + s.eps_root
        direction = (mu / s.bc1) / (jnp.sqrt(nu / s.bc2) + s.eps)
        return direction, {"mu": mu, "nu": nu}


def adabelief(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief: adapt the step to the belief in the observed gradient (Zhuang et al., 2020).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_t)^2 + \epsilon_{root} \\
        \theta_t &= \theta_{t-1} - \alpha\, \frac{m_t / (1 - \beta_1^t)}
            {\sqrt{s_t / (1 - \beta_2^t)} + \epsilon}

    A large step where the gradient agrees with its average (small :math:`s_t`), a small one
    where it keeps surprising.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root (the paper's implementation: 1e-16).
      eps_root: :math:`\epsilon_{root}` >= 0, added to :math:`s_t` each step, as in the paper's
        Algorithm 2.
      weight_decay: >= 0, decoupled (the paper's ``weight_decouple``), scaled by the rate.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByBeliefState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adabelief()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g - mu|^2``.

    Differences from other libraries: the same update and defaults as ``optax.adabelief``
    (which has no weight decay). torch.optim has no AdaBelief. The paper's optional
    rectification (as in RAdam) is not included.

    References:
      Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan, *AdaBelief Optimizer:
      Adapting Stepsizes by the Belief in Observed Gradients*, NeurIPS 2020,
      https://arxiv.org/abs/2010.07468.
    """
    return layout.alias("jadam.adabelief", scale_by_adabelief, locals(), decoupled=True)


def scale_by_adabelief(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief's direction, the bias-corrected momentum over the root of the belief, without
    learning rate, weight decay or sign: the building block of :func:`adabelief`, whose docstring
    has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByBeliefState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adabelief")
    hp = {
        **adam_hyperparams(fn, b1, b2, eps),
        "eps_root": hyperparams.scalar(fn, "eps_root", eps_root),
    }
    return layout.per_leaf(AdaBeliefRule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)
