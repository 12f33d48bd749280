"""Adam (Kingma & Ba, 2015), with AMSGrad, Nesterov momentum and decoupled weight decay.

The whole update rule is :meth:`AdamRule.apply`; the math is written out on :func:`adam`. What
every optimizer shares around it (``maximize``, weight decay, the cautious mask, the learning
rate) are the stages of :mod:`jadam.stages`.
"""

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
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`, :func:`adam` and :func:`adamw`.

    Attributes:
      count: number of updates made so far (int32, saturating at its maximum).
      mu: first moment, the moving average of gradients, one array per parameter.
      nu: second moment, the moving average of squared gradients.
      nu_max: with ``amsgrad``, the elementwise maximum of ``nu`` so far; otherwise ``None``.
    """

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None = None


@dataclasses.dataclass(frozen=True)
class AdamRule(Rule):
    """Adam's elementwise math (Algorithm 1 of Kingma & Ba), for one array."""

    amsgrad: bool = False
    nesterov: bool = False
    state_type = ScaleByAdamState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        bias = {
            "bc1": bias_correction(hp.b1, t),
            "bc2": bias_correction(hp.b2, t),
            "bc1_next": bias_correction(hp.b1, t + 1),
        }
        return bias, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], square(g), s.b2)
        new = {"mu": mu, "nu": nu}
        if self.amsgrad:
            nu = new["nu_max"] = jnp.maximum(state["nu_max"], nu)
        if self.nesterov:  # noqa: SIM108 (the two forms of the paper)
            mu_hat = s.b1 * mu / s.bc1_next + (1 - s.b1) * g / s.bc1
        else:
            mu_hat = mu / s.bc1
        nu_hat = nu / s.bc2
        return mu_hat / (jnp.sqrt(nu_hat + s.eps_root) + s.eps), new


def scale_by_adam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    *,
    amsgrad: bool = False,
    nesterov: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Rescales updates by Adam's rule: the direction ``m̂ / (sqrt(v̂ + eps_root) + eps)``.

    This is the building block without learning rate or sign: chain it with
    ``optax.scale_by_learning_rate`` (or use :func:`adam`). The math and the arguments are those
    of :func:`adam`.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adam")
    hp = {**adam_hyperparams(fn, b1, b2, eps),
          "eps_root": hyperparams.scalar(fn, "eps_root", eps_root)}
    moments: tuple[Moment, ...] = mu_nu(fn, mu_dtype, nu_dtype)
    if amsgrad:
        moments += (moments[1]._replace(name="nu_max"),)
    rule = AdamRule(hp, moments, amsgrad=bool(amsgrad), nesterov=bool(nesterov))
    return layout.per_leaf(rule, fn=fn)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    amsgrad: bool = False,
    nesterov: bool = False,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam: adaptive moment estimation (Kingma & Ba, 2015).

    With gradient :math:`g_t` at step :math:`t = 1, 2, \dots` and :math:`m_0 = v_0 = 0`:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1}
            \quad\text{(only if weight_decay } \lambda > 0\text{: coupled L2)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t) \\
        \hat v_t &= v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1}
            - \alpha\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

    With ``amsgrad`` (Reddi et al., 2018), :math:`\hat v_t` is computed from
    :math:`\max(v_1, \dots, v_t)` instead of :math:`v_t`. With ``nesterov`` (Dozat, 2016, in the
    simplified form of optax's ``nadam``),
    :math:`\hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    With ``maximize``, :math:`g_t` is negated first.

    Args:
      learning_rate: :math:`\alpha`: a number, a scalar array, or an optax schedule of the step
        count (0 on the first update).
      b1: :math:`\beta_1`, decay of the first moment, in [0, 1).
      b2: :math:`\beta_2`, decay of the second moment, in [0, 1).
      eps: :math:`\epsilon`, added to the root of the second moment, >= 0.
      eps_root: :math:`\epsilon_{root}`, added inside the root, >= 0. Set it > 0 to
        differentiate through the update (the root of 0 has no finite derivative).
      weight_decay: :math:`\lambda`, the coupled L2 term of the paper and ``torch.optim.Adam``,
        added to the gradient before the moments see it. For decoupled decay use :func:`adamw`.
      amsgrad: keep the maximum of the second moment (Reddi et al., 2018).
      nesterov: use Nesterov momentum (NAdam, Dozat 2016).
      maximize: ascend the objective instead of descending it.
      mu_dtype: dtype of the first moment; default the parameter's dtype.
      nu_dtype: dtype of the second moment (and of its maximum); default the parameter's dtype.

    Returns:
      An optax ``GradientTransformationExtraArgs``, whose updates are added to the parameters
      with ``optax.apply_updates``. Its state is :class:`ScaleByAdamState`.

    Example:
      >>> import jax.numpy as jnp, optax, jadam
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> tx = jadam.adam(learning_rate=0.1)
      >>> state = tx.init(params)
      >>> grads = {"w": jnp.array([0.5, -0.5])}
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([ 0.9, -1.9], dtype=float32)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` (and ``nu_max``) the
    real average of ``|g|^2``, as in optax.

    Differences from other libraries:
      - ``torch.optim.Adam``: the same update, with ``eps`` outside the root and the same coupled
        ``weight_decay``, ``amsgrad`` (maximum of the raw :math:`v_t`) and ``maximize``.
        ``eps_root`` and ``nesterov`` have no torch equivalent.
      - ``optax.adam``: the same update for the same arguments, but optax has no weight decay in
        ``adam``, and its ``amsgrad`` keeps the maximum of the bias-corrected :math:`\hat v_t`
        rather than of :math:`v_t` (the two agree only when :math:`\beta_2 = 0`). To reproduce
        optax's ``amsgrad``, use ``optax.amsgrad``.
      - Each leaf is computed in float32 (float64 if it is float64, hyperparameters included),
        so bfloat16 parameters get float32 math.

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015,
      https://arxiv.org/abs/1412.6980.
      Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018,
      https://openreview.net/forum?id=ryQu7f-RZ.
      Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop,
      https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.
    """
    return layout.alias("jadam.adam", scale_by_adam, locals())


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    *,
    weight_decay: ScalarOrSchedule = 1e-2,
    mask: layout.Mask | None = None,
    amsgrad: bool = False,
    nesterov: bool = False,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Adam's moments see the raw gradient; the decay acts on the parameters directly, scaled by the
    learning rate as in ``torch.optim.AdamW`` and ``optax.adamw``:

    .. math::

        \theta_t = \theta_{t-1} - \alpha \left( \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
            + \epsilon) + \lambda \theta_{t-1} \right)

    with :math:`m_t, v_t, \hat m_t, \hat v_t` as in :func:`adam` (including its ``amsgrad``,
    ``nesterov`` and ``maximize``; ``maximize`` does not flip the decay).

    Args:
      learning_rate, b1, b2, eps, eps_root, amsgrad, nesterov, maximize, mu_dtype, nu_dtype: as
        in :func:`adam`.
      weight_decay: :math:`\lambda`, >= 0, a number or schedule. torch's default (1e-2); optax's
        is 1e-4.
      mask: where to apply the decay: a tree of booleans with the parameters' structure (or a
        prefix of it), or a function of the parameters returning one. Typically ``False`` for
        biases and normalisation scales. Default: everywhere.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(3), "b": jnp.zeros(3)}
      >>> tx = jadam.adamw(1e-3, weight_decay=0.1, mask={"w": True, "b": False})
      >>> updates, state = tx.update(params, tx.init(params), params)

    Differences from other libraries:
      - The decay is :math:`\alpha\lambda\theta`, as in torch and optax; in the paper's
        Algorithm 2 it is scaled by a schedule multiplier :math:`\eta_t` only, not by
        :math:`\alpha`. To decay by :math:`\lambda` alone, pass ``weight_decay=lam / lr``.
      - torch applies the decay to the parameters before the Adam step
        (:math:`\theta (1 - \alpha\lambda)`); the sum is the same up to rounding.

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019,
      https://arxiv.org/abs/1711.05101.
    """
    return layout.alias("jadam.adamw", scale_by_adam, locals(), decoupled=True)


def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad: Adam that never lets its second moment shrink (Reddi et al., 2018).

    :func:`adam` with ``amsgrad=True``: :math:`\hat v_t` is computed from
    :math:`\max(v_1, \dots, v_t)`, bias-corrected by :math:`1 - \beta_2^t` as in
    ``torch.optim.Adam(amsgrad=True)``. Arguments as in :func:`adam`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.amsgrad(1e-3)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    Differences from other libraries: ``optax.amsgrad`` keeps the maximum of the bias-corrected
    :math:`\hat v_t`; the two agree when :math:`\beta_2 = 0` (see :func:`adam`).

    References:
      Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018,
      https://openreview.net/forum?id=ryQu7f-RZ.
    """
    return layout.alias("jadam.amsgrad", scale_by_adam, {**locals(), "amsgrad": True})
