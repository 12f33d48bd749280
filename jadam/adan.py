"""Adan (Xie et al., 2022): adaptive Nesterov momentum, estimated from the difference of
successive gradients so that no gradient at an extrapolated point is needed."""

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
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step, mu_nu


class ScaleByAdanState(NamedTuple):
    """State of :func:`adan`: ``count``; ``mu``, the average gradient; ``mu_diff``, the average
    difference of successive gradients; ``nu``, the average squared Nesterov-corrected
    gradient; ``prev_grad``, the last gradient."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    mu_diff: optax.Updates
    nu: optax.Updates
    prev_grad: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdanRule(Rule):
    """Algorithm 1 of Xie et al., with the bias corrections of the authors' implementation, for
    one array. With ``proximal``, the weight decay is the paper's proximal step, applied here."""

    proximal: bool = True
    state_type = ScaleByAdanState

    @property
    def takes_weight_decay(self) -> bool:  # type: ignore[override]
        return self.proximal

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        return {
            "bc1": bias_correction(hp.b1, t),
            "bc2": bias_correction(hp.b2, t),
            "bc3": bias_correction(hp.b3, t),
            # The first step has no previous gradient: its difference is 0.
            "has_prev": (t > 1).astype(t.dtype),
        }, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        diff = (g - state["prev_grad"]) * s.has_prev
        mu = ema(state["mu"], g, s.b1)
        mu_diff = ema(state["mu_diff"], diff, s.b2)
        corrected = g + s.b2 * diff
        nu = ema(state["nu"], square(corrected), s.b3)
        direction = (mu / s.bc1 + s.b2 * (mu_diff / s.bc2)) / (
            jnp.sqrt(nu / s.bc3) + s.eps
        )
        if s.weight_decay is not None:
            # theta <- (theta - lr * u) / (1 + lr * wd), as -lr * (u + wd * theta) / (1 + lr wd).
            # Multiplied by the reciprocal: XLA rewrites an array divided by a scalar that way
            # but divides a 0-d array exactly, so a division would round differently for
            # scalar leaves than for the same numbers in a larger (or packed) array.
            assert p is not None
            assert s.learning_rate is not None
            wd = s.weight_decay
            direction = (direction + wd * p) * (1 / (1 + s.learning_rate * wd))
        return direction, {"mu": mu, "mu_diff": mu_diff, "nu": nu, "prev_grad": g}


def adan(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 0.02,
    proximal: bool = True,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adan: adaptive Nesterov momentum (Xie et al., 2022).

    With :math:`\Delta_t = g_t - g_{t-1}` (0 at the first step):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        d_t &= \beta_2 d_{t-1} + (1 - \beta_2) \Delta_t \\
        n_t &= \beta_3 n_{t-1} + (1 - \beta_3) (g_t + \beta_2 \Delta_t)^2 \\
        u_t &= \frac{m_t / (1 - \beta_1^t) + \beta_2\, d_t / (1 - \beta_2^t)}
            {\sqrt{n_t / (1 - \beta_3^t)} + \epsilon} \\
        \theta_t &= \frac{\theta_{t-1} - \alpha u_t}{1 + \alpha \lambda}

    The betas are written as in the authors' code (momentum coefficients near 1); the paper's
    :math:`\beta_k` are :math:`1 - \beta_k` here (its 0.02, 0.08, 0.01). The bias corrections
    are the authors' code's; the paper's Algorithm 1 initialises the averages instead.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2, b3: in [0, 1): the decays of the gradient, gradient-difference and squared
        averages.
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0 (the paper's 0.02), a number or schedule.
      proximal: the paper's proximal decay :math:`\theta / (1 + \alpha\lambda)`; ``False``
        gives the decoupled :math:`\theta (1 - \alpha\lambda)` of AdamW (the authors'
        ``no_prox=True``).
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype: dtype of the two averages of gradients; default the parameter's.
      nu_dtype: dtype of the squared average; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdanState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adan()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu``, ``mu_diff`` and ``prev_grad`` are
    complex, ``nu`` the real average of ``|g + b2 (g - g_prev)|^2``.

    Differences from other libraries: ``optax.adan`` (0.2.8) weighs the gradient difference by
    ``1 - b2`` where the paper and the authors' code weigh it by ``b2`` (0.08 instead of 0.92
    at the defaults), so from the second step its trajectory differs from jadam's and the
    paper's; its weight decay is AdamW's (``proximal=False``) and its default 0.
    torch.optim has no Adan.

    References:
      Xie, Zhou, Li, Lin & Yan, *Adan: Adaptive Nesterov Momentum Algorithm for Faster
      Optimizing Deep Models*, IEEE TPAMI 2024, https://arxiv.org/abs/2208.06677.
    """
    return layout.alias("jadam.adan", scale_by_adan, locals(), decoupled=True)


def scale_by_adan(
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    *,
    proximal: bool = True,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adan's direction :math:`u_t`, without learning rate, weight decay or sign: the building
    block of :func:`adan`, whose docstring has the math and the arguments. (``proximal`` says
    how :func:`adan` applies its decay; the block alone has none.)

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdanState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adan")
    hp = {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
        "b3": hyperparams.decay_rate(fn, "b3", b3),
        "eps": hyperparams.scalar(fn, "eps", eps),
    }
    mu, nu = mu_nu(fn, mu_dtype, nu_dtype)
    moments = (mu, mu._replace(name="mu_diff"), nu, Moment("prev_grad"))
    return layout.per_leaf(AdanRule(hp, moments, proximal=bool(proximal)), fn=fn)
