"""MARS-AdamW (Yuan et al., 2024): AdamW on a variance-reduced gradient, the gradient plus a
scaled difference from the previous one, clipped to unit norm."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import abs_sq, bias_correction, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByMarsState(NamedTuple):
    """State of :func:`mars`: ``count``; ``mu`` and ``nu``, Adam's moments of the corrected
    gradient; ``prev_grad``, the last gradient."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates
    prev_grad: optax.Updates


@dataclasses.dataclass(frozen=True)
class MarsRule(Rule):
    """Algorithm 2 of Yuan et al. (MARS-AdamW, with the previous step's gradient, "MARS-approx"),
    for one array. The clipping takes the norm of the whole array: not elementwise."""

    state_type = ScaleByMarsState
    elementwise = False

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        b1 = hp.b1
        # gamma * b1 / (1 - b1), and 0 at the first step, which has no previous gradient.
        weight = jnp.where(t > 1, hp.gamma * b1 / (1 - b1), 0)
        return {
            "b1": b1, "b2": hp.b2, "eps": hp.eps, "correction": weight,
            "bc1": bias_correction(b1, t), "bc2": bias_correction(hp.b2, t),
        }, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        c = g + s.correction * (g - state["prev_grad"])
        norm = jnp.sqrt(jnp.sum(abs_sq(c)))
        c = c / jnp.maximum(norm, 1)  # to unit norm where it is longer
        mu = ema(state["mu"], c, s.b1)
        nu = ema(state["nu"], square(c), s.b2)
        direction = (mu / s.bc1) / (jnp.sqrt(nu / s.bc2) + s.eps)
        return direction, {"mu": mu, "nu": nu, "prev_grad": g}


def mars(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: Scalar = 0.95,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    gamma: Scalar = 0.025,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""MARS-AdamW: AdamW on a variance-reduced gradient (Yuan et al., 2024).

    .. math::

        c_t &= g_t + \gamma \frac{\beta_1}{1 - \beta_1} (g_t - g_{t-1}), \qquad
        c_t \leftarrow c_t / \|c_t\| \text{ if } \|c_t\| > 1 \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) c_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) c_t^2 \\
        \theta_t &= \theta_{t-1} - \alpha \Big(\frac{m_t / (1 - \beta_1^t)}
            {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda \theta_{t-1}\Big)

    The correction uses the previous step's gradient (the paper's approximate MARS, as in its
    experiments), so one gradient per step suffices; it is 0 at the first step. The norm is
    that of each array.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      gamma: :math:`\gamma` >= 0, the weight of the variance reduction; 0 gives AdamW on the
        clipped gradient.
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate, a number or
        schedule.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByMarsState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.mars()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` and ``prev_grad`` are complex, ``nu``
    the real average of ``|c|^2``; the clipping norm is ``sqrt(sum |c|^2)``.

    Differences from other libraries: neither optax nor torch.optim has MARS. The authors' code
    starts from a previous gradient of 0 (a first correction of :math:`\gamma\beta_1/(1-\beta_1)
    g_1`, which the normalisation mostly removes) and by default trains 1-D parameters with
    plain AdamW; jadam applies MARS to every array (use ``optax.partition`` to mix).

    References:
      Yuan, Liu, Wu, Zhou & Gu, *MARS: Unleashing the Power of Variance Reduction for Training
      Large Models*, ICML 2025, https://arxiv.org/abs/2411.10438.
    """
    return layout.alias("jadam.mars", scale_by_mars, locals(), decoupled=True)


def scale_by_mars(
    b1: Scalar = 0.95,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    gamma: Scalar = 0.025,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""MARS-AdamW's direction, Adam's ratio of the corrected gradient, without learning rate,
    weight decay or sign: the building block of :func:`mars`, whose docstring has the math and
    the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByMarsState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_mars")
    hp = {
        **adam_hyperparams(fn, b1, b2, eps),
        "gamma": hyperparams.scalar(fn, "gamma", gamma),
    }
    rule = MarsRule(hp, (*mu_nu(fn, mu_dtype, nu_dtype), Moment("prev_grad")))
    return layout.per_leaf(rule, fn=fn)
