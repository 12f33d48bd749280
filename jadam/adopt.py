"""ADOPT (Taniguchi et al., 2024): Adam that normalises the gradient by the second moment of the
previous step, then averages, which converges for any beta2."""

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
from jadam.rule import Carry, Moments, Rule, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByAdoptState(NamedTuple):
    """State of :func:`adopt`: ``count``; ``mu``, the average of normalised gradients; ``nu``,
    the second moment (of the gradients up to the previous step)."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


@dataclasses.dataclass(frozen=True)
class AdoptRule(Rule):
    """Algorithm 2 of Taniguchi et al. (with clipping), for one array. The first step only
    initialises the second moment; it moves nothing."""

    nesterov: bool = False
    clipping: bool = True
    state_type = ScaleByAdoptState

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        first = t == 1
        return {
            "eps": hp.eps,
            # Step 1 sets nu = g^2 and leaves mu at 0: b1 -> 1, b2 -> 0.
            "b1": jnp.where(first, jnp.ones_like(hp.b1), hp.b1),
            "b2": jnp.where(first, jnp.zeros_like(hp.b2), hp.b2),
            "clip": (t - 1) ** 0.25,
        }, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        normalised = g / jnp.maximum(jnp.sqrt(state["nu"]), s.eps)
        if self.clipping:
            normalised = _clip(normalised, s.clip)
        mu = ema(state["mu"], normalised, s.b1)
        direction = ema(mu, normalised, s.b1) if self.nesterov else mu
        return direction, {"mu": mu, "nu": ema(state["nu"], square(g), s.b2)}


def _clip(x: jax.Array, bound: jax.Array) -> jax.Array:
    """``x`` clipped to ``[-bound, bound]``; a complex ``x`` has its modulus clipped to
    ``bound``, its phase kept."""
    if not jnp.iscomplexobj(x):
        return jnp.clip(x, -bound, bound)
    size = jnp.abs(x)
    over = size > bound
    return x * jnp.where(over, bound / jnp.where(over, size, 1), 1)


def adopt(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    nesterov: bool = False,
    use_clipping: bool = True,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""ADOPT: adaptive gradient method with the optimal convergence rate for any
    :math:`\beta_2` (Taniguchi et al., 2024).

    At the first step :math:`v_1 = g_1^2` and nothing moves. Then, for :math:`t \ge 2`:

    .. math::

        \tilde g_t &= \operatorname{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},
            (t-1)^{1/4}\right) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) \tilde g_t \\
        \theta_t &= \theta_{t-1} - \alpha (m_t + \lambda\theta_{t-1}) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

    The gradient is normalised by the second moment *before* it enters it, and before the
    momentum averages it: the two changes that remove Adam's dependence on :math:`\beta_2`.

    The paper's convergence for any :math:`\beta_2` is proven for Algorithm 1, without the
    clipping (``use_clipping=False``). The clipping, on by default as in the paper's
    experiments and optax, can break it: on the paper's own toy problem (:math:`f_t(x) = kx`
    with probability :math:`1/k`, else :math:`-x`, on :math:`[-1, 1]`, optimum :math:`-1`;
    :math:`k = 50`, lr 1e-2, 100,000 steps, measured here) the clipped version ends at +0.997
    for :math:`\beta_2 = 0.1` and +0.835 for 0.5, the unclipped one at -0.50 and -0.29, moving
    towards -1; with :math:`k = 10` or :math:`\beta_2 = 0.999` the two agree.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1); the paper's :math:`\beta_2` is 0.9999.
      eps: :math:`\epsilon` >= 0, the floor of :math:`\sqrt{v}`; the paper's 1e-6.
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate (as the authors'
        implementation).
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      nesterov: use :math:`\beta_1 m_t + (1 - \beta_1)\tilde g_t` as the direction.
      use_clipping: clip the normalised gradient at :math:`(t-1)^{1/4}` (the paper's
        Algorithm 2, for stability early on); ``False`` gives Algorithm 1.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdoptState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.adopt()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
      >>> updates["w"]  # the first step only measures the gradient
      Array([-0., -0.], dtype=float32)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``; the clipping bounds the modulus of the normalised gradient and keeps its phase
    (``optax.contrib.adopt`` raises on complex values when it clips).

    Differences from other libraries: the same update as ``optax.contrib.adopt`` (which has no
    weight decay). torch.optim has no ADOPT.

    References:
      Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
      *ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal Rate*, NeurIPS 2024,
      https://arxiv.org/abs/2411.02853.
    """
    return layout.alias("jadam.adopt", scale_by_adopt, locals(), decoupled=True)


def scale_by_adopt(
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""ADOPT's direction, the average of gradients normalised by the previous second moment,
    without learning rate, weight decay or sign: the building block of :func:`adopt`, whose
    docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdoptState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adopt")
    hp = adam_hyperparams(fn, b1, b2, eps)
    moments = mu_nu(fn, mu_dtype, nu_dtype)
    rule = AdoptRule(hp, moments, nesterov=bool(nesterov), clipping=bool(use_clipping))
    return layout.per_leaf(rule, fn=fn)
