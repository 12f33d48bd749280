"""LAMB (You et al., 2020): Adam's direction plus weight decay, rescaled per layer so that each
layer moves by the same fraction of its own norm, for training with very large batches."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import abs_sq, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import BiasCorrected, Moments, Scalars, Step, adam_hyperparams, mu_nu


class ScaleByLambState(NamedTuple):
    """State of :func:`lamb`: ``count``; ``mu`` and ``nu``, Adam's first and second moments."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


def trust_ratio(p: jax.Array, direction: jax.Array) -> jax.Array:
    """``||p|| / ||direction||``, the layer-wise scale of LAMB and LARS; 1 where either norm is
    zero (a layer at the origin, or no step), so that such a layer still moves."""
    p_norm = jnp.sqrt(jnp.sum(abs_sq(p)))
    d_norm = jnp.sqrt(jnp.sum(abs_sq(direction)))
    usable = (p_norm > 0) & (d_norm > 0)
    return jnp.where(usable, p_norm / jnp.where(usable, d_norm, 1), 1)


@dataclasses.dataclass(frozen=True)
class LambRule(BiasCorrected):
    """Algorithm 2 of You et al., for one array (one "layer"). The ratio reduces over the whole
    array, so the rule is not elementwise."""

    state_type = ScaleByLambState
    needs_params = True
    elementwise = False
    takes_weight_decay = True

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        assert p is not None
        mu = ema(state["mu"], g, s.b1)
        nu = ema(state["nu"], square(g), s.b2)
        r = (mu / s.bc1) / (jnp.sqrt(nu / s.bc2) + s.eps)
        if s.weight_decay is not None:
            r = r + s.weight_decay * p
        return trust_ratio(p, r) * r, {"mu": mu, "nu": nu}


def lamb(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    *,
    weight_decay: ScalarOrSchedule = 0.01,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2020).

    For each array :math:`x` of the tree (a "layer"):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            + \lambda x_{t-1} \\
        x_t &= x_{t-1} - \alpha\, \frac{\|x_{t-1}\|}{\|r_t\|}\, r_t

    The ratio :math:`\|x\| / \|r\|` (1 where either norm is 0) makes each layer's step
    :math:`\alpha` times its own norm, whatever the scale of its gradients. The paper's
    :math:`\phi` is the identity, as in its experiments.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule.
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root (the paper's 1e-6).
      weight_decay: :math:`\lambda` >= 0, added to the direction before the trust ratio (the
        paper's 0.01). A number or schedule.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLambState`;
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones((2, 3))}
      >>> tx = jadam.lamb()
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params), params)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` the real average of
    ``|g|^2``; the trust ratio's norms are ``sqrt(sum |x|^2)``, as in optax.

    Differences from other libraries: ``optax.lamb`` computes the same update; its default
    weight decay is 0 where the paper's (and jadam's) is 0.01, so ``optax.lamb(lr)`` is
    ``jadam.lamb(lr, weight_decay=0.0)``. torch.optim has no LAMB.

    References:
      You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer & Hsieh, *Large Batch
      Optimization for Deep Learning: Training BERT in 76 minutes*, ICLR 2020,
      https://arxiv.org/abs/1904.00962.
    """
    return layout.alias("jadam.lamb", scale_by_lamb, locals())


def scale_by_lamb(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LAMB's direction without weight decay, Adam's ratio scaled by each layer's trust
    ratio, without learning rate or sign: the building block of :func:`lamb`, whose docstring
    has the math and the arguments. ``update`` needs ``params``.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLambState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_lamb")
    hp = adam_hyperparams(fn, b1, b2, eps)
    return layout.per_leaf(LambRule(hp, mu_nu(fn, mu_dtype, nu_dtype)), fn=fn)
