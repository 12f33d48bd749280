"""Prodigy (Mishchenko & Defazio, 2024): Adam whose step size is learned, from an estimate of
the distance to the solution that grows until the steps fit it; no learning rate to tune."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import bias_correction, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step


class ProdigyState(NamedTuple):
    """State of :func:`prodigy`.

    Attributes:
      count: number of updates made so far.
      mu, nu: Adam's moments of :math:`d_k g_k` (the paper's :math:`m` and :math:`v`).
      s: the weighted sum of gradients whose norm the estimate divides by.
      x0: the initial parameters.
      d: the current estimate :math:`d_k` (a scalar for the whole tree).
      r: the weighted sum of :math:`\\langle g_k, x_0 - x_k \\rangle` (a scalar).
    """

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates
    s: optax.Updates
    x0: optax.Updates
    d: jax.Array
    r: jax.Array


@dataclasses.dataclass(frozen=True)
class ProdigyRule(Rule):
    """Algorithm 4 of Mishchenko & Defazio (the Adam version), for one array; the two sums
    the estimate of :math:`d` needs run over the whole tree (:meth:`after`)."""

    bias_correction: bool = False
    b3_from_b2: bool = True
    state_type = ProdigyState
    needs_params = True
    elementwise = False
    takes_learning_rate = True
    takes_weight_decay = True
    tree_sums = ("numerator", "s_norm")

    def carry_init(self) -> dict[str, Any]:
        return {"d": self.hyperparams["d0"], "r": 0.0}

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        assert hp.learning_rate is not None
        rate = hp.learning_rate  # the paper's gamma_k, the schedule
        if self.bias_correction:  # Adam's corrections folded into the rate, as optax does
            rate = rate * jnp.sqrt(bias_correction(hp.b2, t)) / bias_correction(hp.b1, t)
        # b3 = sqrt(b2) by default; 1 - b3 as (1 - b2) / (1 + b3), which keeps its float32
        # digits where 1 - sqrt(b2) would cancel (1 - b3 is 5e-4 for b2 = 0.999).
        b3 = jnp.sqrt(hp.b2) if self.b3_from_b2 else hp.b3
        one_minus_b3 = (1 - hp.b2) / (1 + b3) if self.b3_from_b2 else 1 - b3
        return {"d": carry["d"], "rate": rate, "b3": b3, "one_minus_b3": one_minus_b3}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        assert p is not None
        d, rate = s.d, s.rate
        mu = ema(state["mu"], d * g, s.b1)
        nu = ema(state["nu"], (d * d) * square(g), s.b2)
        acc = s.b3 * state["s"] + s.one_minus_b3 * ((rate * d * d) * g)
        update = -(rate * d) * mu / (jnp.sqrt(nu) + d * s.eps)
        if s.weight_decay is not None:
            update = update - (rate * d * s.weight_decay) * p
        x0 = state["x0"]
        numerator = jnp.sum((jnp.conj(g) * (x0 - p)).real)  # <g, x0 - x>
        s_norm = jnp.sum(jnp.abs(acc))
        return update, {"mu": mu, "nu": nu, "s": acc, "x0": x0,
                        "numerator": numerator, "s_norm": s_norm}

    def after(self, s: Scalars, carry: Carry, sums: Carry) -> Carry:
        d = carry["d"]
        r = s.b3 * carry["r"] + s.one_minus_b3 * ((s.rate * d * d) * sums["numerator"])
        # The estimate r / ||s||_1, 0 while every gradient has been 0 (no step to fit).
        positive = sums["s_norm"] > 0
        d_hat = s.d_coef * r / jnp.where(positive, sums["s_norm"], 1)
        return {"d": jnp.maximum(d, jnp.where(positive, d_hat, 0)), "r": r}


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: Scalar | None = None,
    eps: Scalar = 1e-8,
    *,
    d0: Scalar = 1e-6,
    d_coef: Scalar = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    bias_correction: bool = False,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Prodigy: Adam with a learned step size (Mishchenko & Defazio, 2024).

    The step size is :math:`\gamma_k d_k`, where :math:`\gamma_k` is a schedule around 1 (the
    learning rate, 1 by default) and :math:`d_k` an estimate of the distance from the initial
    parameters :math:`x_0` to a solution, which only grows. With :math:`d_0` small and
    :math:`m_0 = v_0 = s_0 = 0`, :math:`r_0 = 0`, over the whole tree:

    .. math::

        m_{k+1} &= \beta_1 m_k + (1 - \beta_1)\, d_k g_k, \qquad
        v_{k+1} = \beta_2 v_k + (1 - \beta_2)\, d_k^2 g_k^2 \\
        r_{k+1} &= \beta_3 r_k + (1 - \beta_3)\, \gamma_k d_k^2 \langle g_k, x_0 - x_k\rangle,
            \qquad s_{k+1} = \beta_3 s_k + (1 - \beta_3)\, \gamma_k d_k^2 g_k \\
        d_{k+1} &= \max\big(d_k,\; c\, r_{k+1} / \|s_{k+1}\|_1\big) \\
        x_{k+1} &= x_k - \gamma_k d_k \big(m_{k+1} / (\sqrt{v_{k+1}} + d_k \epsilon)
            + \lambda x_k\big)

    with :math:`\beta_3 = \sqrt{\beta_2}` by default and :math:`c` the ``d_coef``. The inner
    product and the norm run over every array of the tree: one estimate for the model.

    Args:
      learning_rate: :math:`\gamma_k`, a number or schedule; keep it near 1 (the authors
        advise a cosine or linear decay from 1, with warmup for large models).
      b1, b2: Adam's :math:`\beta_1, \beta_2` in [0, 1).
      b3: :math:`\beta_3` in [0, 1), the decay of the estimate's sums; ``None`` for
        :math:`\sqrt{\beta_2}`.
      eps: :math:`\epsilon` >= 0, scaled by :math:`d_k` in the denominator.
      d0: :math:`d_0` > 0, the initial under-estimate of the distance.
      d_coef: :math:`c` > 0, scales every estimate (below 1 for smaller steps).
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the step size.
      bias_correction: multiply :math:`\gamma_k` by Adam's
        :math:`\sqrt{1 - \beta_2^{k+1}} / (1 - \beta_1^{k+1})`, as ``optax.contrib.prodigy``
        does (the authors' ``use_bias_correction``; off in their code and in the paper).
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes (``s`` takes ``mu``'s); default the
        parameter's. ``x0`` keeps the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ProdigyState`;
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(3)}
      >>> tx = jadam.prodigy()
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(state.d), 12)  # x has not moved from x0 yet: still d0
      1e-06

    float16 parameters are not advised: the first steps are about :math:`d_0` (1e-6), below
    float16's normal range, and keep few bits; bfloat16 and float32 work.

    The state holds four arrays per parameter (AdamW's two, ``s`` and ``x0``) and two scalars.
    The sums over the tree make Prodigy's step reduce over the whole model: it cannot be
    packed, and split over devices its two sums are all-reduced.

    Complex parameters (see the README's table): ``mu``, ``s`` and ``x0`` are complex, ``nu``
    the real average of :math:`|g|^2`; the inner product is
    :math:`\mathrm{Re}\,\langle g, x_0 - x\rangle` and :math:`\|s\|_1` sums moduli.

    Differences from other libraries: ``optax.contrib.prodigy`` always folds Adam's bias
    corrections into the rate (``bias_correction=True`` here), leaves out the
    :math:`1 - \beta_3` of both sums (their ratio is the same) and divides both by
    :math:`d_0` (the same again), and puts :math:`d_{k+1}` rather than :math:`d_k` in the
    :math:`\epsilon` term; with ``bias_correction=True`` the two agree up to that
    :math:`\epsilon`. Its ``betas=(b1, b2)``, ``beta3``, ``estim_lr0`` and
    ``estim_lr_coef`` are ``b1``, ``b2``, ``b3``, ``d0`` and ``d_coef``.

    References:
      Mishchenko & Defazio, *Prodigy: An Expeditiously Adaptive Parameter-Free Learner*,
      ICML 2024, https://arxiv.org/abs/2306.06101.
    """
    fn = "jadam.prodigy"
    hp = {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
        "eps": hyperparams.scalar(fn, "eps", eps),
        "d0": hyperparams.scalar(fn, "d0", d0, low_open=True),
        "d_coef": hyperparams.scalar(fn, "d_coef", d_coef, low_open=True),
    }
    if b3 is not None:
        hp["b3"] = hyperparams.decay_rate(fn, "b3", b3)
    mu_dtype = hyperparams.float_dtype(fn, "mu_dtype", mu_dtype)
    moments = (
        Moment("mu", mu_dtype),
        Moment("nu", hyperparams.float_dtype(fn, "nu_dtype", nu_dtype), nonnegative=True),
        Moment("s", mu_dtype),
        Moment("x0", None, init="params"),
    )
    return layout.optimizer(
        ProdigyRule(hp, moments, bias_correction=bool(bias_correction), b3_from_b2=b3 is None),
        fn=fn,
        learning_rate=learning_rate, weight_decay=weight_decay, decoupled=True, mask=mask,
        maximize=maximize,
    )
