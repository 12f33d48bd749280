"""StableAdamW (Wortsman et al., 2023): AdamW with its step clipped per tensor by the RMS of
``g^2 / v``, which keeps a stale second moment from letting an update blow up."""

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


class ScaleByStableAdamWState(NamedTuple):
    """State of :func:`stable_adamw`: ``count``; ``mu`` and ``nu``, Adam's two moments."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class StableAdamWRule(BiasCorrected):
    """Algorithm 2 of Wortsman et al., for one array. The clipping factor reduces over the
    whole array, and it scales the weight decay too, so the rule applies the decay itself."""

    state_type = ScaleByStableAdamWState
    elementwise = False
    takes_weight_decay = True

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        g2 = square(g)
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], g2, s.b2)
        nu_hat = nu / s.bc2
        direction = (mu / s.bc1) / (jnp.sqrt(nu_hat) + s.eps)
        if s.weight_decay is not None:
            assert p is not None
            direction = direction + s.weight_decay * p
        # RMS of g^2 / max(v_hat, eps^2) over the array (of an empty one: 0, no clipping).
        ratio = jnp.sum(g2 / jnp.maximum(nu_hat, s.eps * s.eps)) / max(g.size, 1)
        return direction / jnp.maximum(1, jnp.sqrt(ratio)), {"mu": mu, "nu": nu}


def stable_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-6,
    *,
    weight_decay: ScalarOrSchedule = 1e-2,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""StableAdamW: AdamW with per-tensor update clipping (Wortsman et al., 2023).

    With Adam's bias-corrected moments :math:`\hat m_t, \hat v_t` (see :func:`jadam.adam`),
    for each array of the tree:

    .. math::

        \mathrm{RMS}_t &= \sqrt{\operatorname{mean}\big(g_t^2 / \max(\hat v_t,
            \epsilon^2)\big)}, \qquad
        \eta_t = \frac{\alpha}{\max(1, \mathrm{RMS}_t)} \\
        \theta_t &= \theta_{t-1} - \eta_t \left( \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
            + \lambda \theta_{t-1} \right)

    Where the second moment lags behind a sudden rise of the gradients (the loss spikes the
    paper traces to it), :math:`\mathrm{RMS}_t > 1` and the array's step, decay included,
    shrinks by that factor, as Adafactor's update clipping does; otherwise this is AdamW.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1); the paper's 0.9 and 0.99.
      eps: :math:`\epsilon` >= 0, outside the root and, squared, the floor of
        :math:`\hat v` in the RMS (the paper's 1e-6).
      weight_decay: :math:`\lambda` >= 0, decoupled as in :func:`jadam.adamw` and clipped with
        the step.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state
      :class:`ScaleByStableAdamWState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.stable_adamw()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``, and the RMS is of ``|g|^2 / v``.

    Differences from other libraries: neither optax nor torch.optim has StableAdamW. The paper
    writes the moments with bias-corrected decay rates
    :math:`\hat\beta_t = \beta (1 - \beta^{t-1}) / (1 - \beta^t)`, which gives exactly
    :math:`\hat m_t` and :math:`\hat v_t`; jadam keeps Adam's uncorrected moments in its state
    and divides by :math:`1 - \beta^t`, so its state is Adam's.

    References:
      Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt, *Stable and low-precision
      training for large-scale vision-language models*, NeurIPS 2023,
      https://arxiv.org/abs/2304.13013.
    """
    return layout.alias("jadam.stable_adamw", scale_by_stable_adamw, locals())


def scale_by_stable_adamw(
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-6,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""StableAdamW's direction without weight decay, Adam's ratio divided by
    :math:`\max(1, \mathrm{RMS}_t)`, without learning rate or sign: the building block of
    :func:`stable_adamw`, whose docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state
      :class:`ScaleByStableAdamWState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_stable_adamw")
    rule = StableAdamWRule(adam_hyperparams(fn, b1, b2, eps), mu_nu(fn, mu_dtype, nu_dtype))
    return layout.per_leaf(rule, fn=fn)
