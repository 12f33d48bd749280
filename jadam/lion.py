"""Lion (Chen et al., 2023): the sign of an interpolated momentum, found by program search."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import ema
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Moment, Moments, Rule, Scalars, Step


class ScaleByLionState(NamedTuple):
    """State of :func:`lion`: ``count``, and ``mu``, the momentum (Lion's only moment)."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates


@dataclasses.dataclass(frozen=True)
class LionRule(Rule):
    """Program 1 of Chen et al., for one array."""

    state_type = ScaleByLionState
    refuses_complex = (
        "its update is the sign of each entry, and a complex number has none. Optimize the "
        "real and imaginary parts as two real parameters (jnp.stack([z.real, z.imag]))")

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        direction = jnp.sign(ema(state["mu"], g, s.b1))
        return direction, {"mu": ema(state["mu"], g, s.b2)}


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Lion: EvoLved Sign Momentum (Chen et al., 2023).

    .. math::

        c_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        \theta_t &= \theta_{t-1} - \alpha \left( \operatorname{sign}(c_t)
            + \lambda \theta_{t-1} \right) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2) g_t

    Every coordinate moves by exactly :math:`\alpha` (or 0), so Lion wants a learning rate
    3-10x smaller than AdamW's and a decay 3-10x larger, as the paper advises.

    Args:
      learning_rate: :math:`\alpha`; the paper's default 1e-4.
      b1: :math:`\beta_1` in [0, 1), the interpolation for the update's sign.
      b2: :math:`\beta_2` in [0, 1), the decay of the momentum.
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate, as in the paper.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype: the momentum's dtype; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLionState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(3)}
      >>> tx = jadam.lion(1e-4)
      >>> updates, _ = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
      >>> updates["w"]
      Array([-0.0001,  0.0001, -0.    ], dtype=float32)

    Complex parameters (see the README's table): refused with a ``TypeError``: the update is the
    sign of each entry, which a complex number does not have. Optimize the real and imaginary
    parts as two real parameters.

    Differences from other libraries: the same update as ``optax.lion``, whose default
    ``weight_decay`` is 1e-3 (the paper's and jadam's is 0). torch.optim has no Lion.

    References:
      Chen, Liang, Huang, Real, Wang, Liu, Pham, Dong, Luong, Hsieh, Lu & Le, *Symbolic
      Discovery of Optimization Algorithms*, NeurIPS 2023, https://arxiv.org/abs/2302.06675.
    """
    return layout.alias("jadam.lion", scale_by_lion, locals(), decoupled=True)


def scale_by_lion(
    b1: Scalar = 0.9, b2: Scalar = 0.99, *, mu_dtype: DTypeLike | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Lion's direction, the sign of the interpolated momentum, without learning rate, weight decay
    or sign: the building block of :func:`lion`, whose docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByLionState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_lion")
    hp = {
        "b1": hyperparams.decay_rate(fn, "b1", b1),
        "b2": hyperparams.decay_rate(fn, "b2", b2),
    }
    rule = LionRule(hp, (Moment("mu", hyperparams.float_dtype(fn, "mu_dtype", mu_dtype)),))
    return layout.per_leaf(rule, fn=fn)
