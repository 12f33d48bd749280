"""NAdam (Dozat, 2016): Adam with Nesterov momentum and torch.optim.NAdam's momentum schedule."""

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


class ScaleByNAdamState(NamedTuple):
    """State of :func:`nadam` and :func:`nadamw`: ``count``; ``mu`` and ``nu``, Adam's moments;
    ``mu_product``, the product of the momentum schedule so far (float32 scalar)."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates
    mu_product: jax.Array


@dataclasses.dataclass(frozen=True)
class NAdamRule(Rule):
    """NAdam's step for one array, with the momentum schedule computed once per step."""

    state_type = ScaleByNAdamState

    def carry_init(self) -> dict[str, float]:
        return {"mu_product": 1.0}

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        b1, psi = hp.b1, hp.momentum_decay

        def momentum(step: jax.Array) -> jax.Array:
            # 0 switches the schedule off (a constant b1), as in optax's nadam.
            scheduled = b1 * (1 - 0.5 * jnp.asarray(0.96, b1.dtype) ** (step * psi))
            return jnp.where(psi == 0, b1, scheduled)

        mu_t, mu_next = momentum(t), momentum(t + 1)
        product = carry["mu_product"] * mu_t
        return {
            "g_weight": (1 - mu_t) / (1 - product),
            "m_weight": mu_next / (1 - product * mu_next),
            "bc2": bias_correction(hp.b2, t),
        }, {"mu_product": product}

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], square(g), s.b2)
        denom = jnp.sqrt(nu / s.bc2) + s.eps
        return (s.g_weight * g + s.m_weight * mu) / denom, {"mu": mu, "nu": nu}


def scale_by_nadam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    momentum_decay: Scalar = 4e-3,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam's direction, Nesterov's look-ahead momentum over Adam's root, without learning
    rate, weight decay or sign: the building block of :func:`nadam`, whose docstring has the
    math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByNAdamState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_nadam")
    hp = {
        **adam_hyperparams(fn, b1, b2, eps),
        "momentum_decay": hyperparams.scalar(fn, "momentum_decay", momentum_decay),
    }
    return layout.per_leaf(NAdamRule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    momentum_decay: Scalar = 4e-3,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam: Adam with Nesterov momentum and a warming momentum schedule (Dozat, 2016).

    With :math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})` (the schedule of Dozat's
    paper and ``torch.optim.NAdam``; :math:`\mu_t = \beta_1` when :math:`\psi = 0`):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \alpha \left(
            \frac{1 - \mu_t}{1 - \prod_{i \le t} \mu_i} g_t
            + \frac{\mu_{t+1}}{1 - \prod_{i \le t+1} \mu_i} m_t \right)
            \Big/ \left(\sqrt{v_t / (1 - \beta_2^t)} + \epsilon\right)

    Args:
      learning_rate: :math:`\alpha`; the paper's and torch's default 2e-3.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      momentum_decay: :math:`\psi` >= 0 (torch's default 4e-3). 0 turns the schedule off:
        :math:`\mu_t = \beta_1`, which is exactly ``optax.nadam``.
      weight_decay: coupled L2 (added to the gradient); see :func:`nadamw` for decoupled.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: dtypes of the moments; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByNAdamState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.nadam()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``, as in optax.

    Differences from other libraries:
      - ``torch.optim.NAdam``: the same update and defaults.
      - ``optax.nadam`` has no momentum schedule: pass ``momentum_decay=0`` (and its
        learning rate) to reproduce it. (torch's formula at ``momentum_decay=0`` would use
        :math:`\beta_1 / 2`; jadam reads 0 as "no schedule".)

    References:
      Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop,
      https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.
    """
    return layout.alias("jadam.nadam", scale_by_nadam, locals())


def nadamw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    momentum_decay: Scalar = 4e-3,
    weight_decay: ScalarOrSchedule = 1e-2,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW: :func:`nadam` with decoupled weight decay (Loshchilov & Hutter, 2019).

    The update of :func:`nadam` plus :math:`-\alpha\lambda\theta_{t-1}`, with the decay applied
    where ``mask`` is ``True`` (as in :func:`jadam.adamw`).

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.nadamw(weight_decay=0.1)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Differences from other libraries: ``torch.optim.NAdam(decoupled_weight_decay=True)`` and
    ``optax.nadamw`` (with ``momentum_decay=0``) are the same update.

    References:
      Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop,
      https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
      https://arxiv.org/abs/1711.05101.
    """
    return layout.alias("jadam.nadamw", scale_by_nadam, locals(), decoupled=True)
