"""AdEMAMix (Pagliardini et al., 2024): Adam plus a second, much slower moving average of the
gradients, so that gradients thousands of steps old still count."""

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
from jadam.rule import Carry, Moments, Rule, Scalars, Step, mu_nu


class ScaleByAdEMAMixState(NamedTuple):
    """State of :func:`ademamix`: ``count``; ``mu``, the fast average of gradients; ``mu_slow``,
    the slow one; ``nu``, the second moment."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    mu_slow: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdEMAMixRule(Rule):
    """Algorithm 1 of Pagliardini et al., for one array, with the optional warmups of alpha and
    b3 (``None``: none)."""

    alpha_warmup: bool = False  # whether hyperparams has "alpha_warmup", a number of steps
    b3_warmup: bool = False  # ... and "b3_warmup"
    state_type = ScaleByAdEMAMixState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        alpha, b1, b3 = hp.alpha, hp.b1, hp.b3
        if self.alpha_warmup:
            alpha = alpha * jnp.minimum(t / hp.alpha_warmup, 1)
        b3_t, one_minus_b3_t = b3, 1 - b3
        if self.b3_warmup:
            # beta3(t) = exp(ln b1 ln b3 / ((1 - s) ln b3 + s ln b1)), s = t / T, which rises
            # from b1 to b3 with a constant-rate growth of its half-life. Computed in log
            # space, and 1 - beta3(t) as -expm1, because b3 is so close to 1 that its float32
            # rounding would be 1e-3 of 1 - b3.
            s = t / hp.b3_warmup
            log1, log3 = jnp.log1p(-(1 - b1)), jnp.log1p(-(1 - b3))
            x = jnp.minimum(log1 * log3 / ((1 - s) * log3 + s * log1), log3)
            warming = t < hp.b3_warmup
            b3_t = jnp.where(warming, jnp.exp(x), b3)
            one_minus_b3_t = jnp.where(warming, -jnp.expm1(x), 1 - b3)
        return {
            "b1": b1, "b2": hp.b2, "eps": hp.eps, "alpha": alpha,
            "b3": b3_t, "one_minus_b3": one_minus_b3_t,
            "bc1": bias_correction(b1, t), "bc2": bias_correction(hp.b2, t),
        }, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        mu_slow = s.b3 * state["mu_slow"] + s.one_minus_b3 * g
        nu = ema(state["nu"], square(g), s.b2)
        direction = (mu / s.bc1 + s.alpha * mu_slow) / (
            jnp.sqrt(nu / s.bc2) + s.eps
        )
        return direction, {"mu": mu, "mu_slow": mu_slow, "nu": nu}


def ademamix(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: Scalar = 0.9999,
    alpha: Scalar = 5.0,
    eps: Scalar = 1e-8,
    *,
    alpha_warmup: int | None = None,
    b3_warmup: int | None = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdEMAMix: a mixture of a fast and a slow moving average of gradients (Pagliardini et
    al., 2024).

    .. math::

        m^{(1)}_t &= \beta_1 m^{(1)}_{t-1} + (1 - \beta_1) g_t, \qquad
        m^{(2)}_t = \beta_3(t) m^{(2)}_{t-1} + (1 - \beta_3(t)) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \eta \Big(\frac{m^{(1)}_t / (1 - \beta_1^t)
            + \alpha(t)\, m^{(2)}_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            + \lambda \theta_{t-1}\Big)

    The slow average is not bias-corrected: it starts small on purpose. With warmups
    :math:`T_\alpha, T_{\beta_3}`, :math:`\alpha(t) = \alpha \min(t / T_\alpha, 1)` and
    :math:`\beta_3(t) = \min\big(\exp\frac{\ln\beta_1 \ln\beta_3}{(1 - t/T)\ln\beta_3 +
    (t/T)\ln\beta_1}, \beta_3\big)`, which the paper recommends for long slow averages.

    Args:
      learning_rate: :math:`\eta`, a number or schedule.
      b1, b2, b3: in [0, 1): the fast average's, the second moment's, and the slow average's
        decays.
      alpha: :math:`\alpha` >= 0, the weight of the slow average (the paper uses 5 to 10).
      eps: :math:`\epsilon` >= 0, outside the root.
      alpha_warmup, b3_warmup: steps over which :math:`\alpha` and :math:`\beta_3` warm up,
        positive integers, or ``None`` for none (the paper sets both to the run's length).
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype: dtype of both averages of gradients; default the parameter's. In float16 or
        bfloat16 the slow average loses increments of :math:`1 - \beta_3 = 10^{-4}` relative:
        keep it in float32.
      nu_dtype: dtype of the second moment; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdEMAMixState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.ademamix(b3_warmup=10_000, alpha_warmup=10_000)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` and ``mu_slow`` are complex, ``nu`` the
    real average of ``|g|^2``.

    Differences from other libraries: ``optax.contrib.ademamix`` takes the warmups as
    schedules of the step and computes :math:`\beta_3(t)` directly, which in float32 loses
    about 1e-3 of :math:`1 - \beta_3(t)` near the end of the warmup. torch.optim has no
    AdEMAMix.

    References:
      Pagliardini, Ablin & Grangier, *The AdEMAMix Optimizer: Better, Faster, Older*, ICLR
      2025, https://arxiv.org/abs/2409.03137.
    """
    return layout.alias("jadam.ademamix", scale_by_ademamix, locals(), decoupled=True)


def scale_by_ademamix(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: Scalar = 0.9999,
    alpha: Scalar = 5.0,
    eps: Scalar = 1e-8,
    *,
    alpha_warmup: int | None = None,
    b3_warmup: int | None = None,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdEMAMix's direction, the fast and slow averages over Adam's root, without learning
    rate, weight decay or sign: the building block of :func:`ademamix`, whose docstring has the
    math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdEMAMixState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_ademamix")
    hp = {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
        "b3": hyperparams.decay_rate(fn, "b3", b3),
        "alpha": hyperparams.scalar(fn, "alpha", alpha),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }
    for name, value in (("alpha_warmup", alpha_warmup), ("b3_warmup", b3_warmup)):
        if value is not None:
            hp[name] = hyperparams.steps(fn, name, value, minimum=1)
    mu, nu = mu_nu(fn, mu_dtype, nu_dtype)
    moments = (mu, mu._replace(name="mu_slow"), nu)
    rule = AdEMAMixRule(
        hp, moments,
        alpha_warmup=alpha_warmup is not None, b3_warmup=b3_warmup is not None,
    )
    return layout.per_leaf(rule, fn=fn)
