"""Adafactor (Shazeer & Stern, 2018): Adam-like steps with a factored second moment (one value
per row and per column of each matrix), relative step sizes and update clipping, for
sublinear optimizer memory."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import abs_sq, saturate, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step


class ScaleByAdafactorState(NamedTuple):
    """State of :func:`adafactor`: ``count``; for arrays of two or more dimensions ``v_row``
    and ``v_col``, the running means of squared gradients over the last and the second-to-last
    axis; for the others ``v``, the running squared gradient. The unused fields of a leaf are
    a zero of shape ``(1,)``, as in optax (an array of size 0 would be simpler, but orbax
    refuses to save one)."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    v_row: optax.Updates
    v_col: optax.Updates
    v: optax.Updates


def _factored(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-1] if _factored(shape) else (1,)


def _col_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[:-2], shape[-1]) if _factored(shape) else (1,)


def _full_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1,) if _factored(shape) else shape


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(abs_sq(x))) / math.sqrt(max(x.size, 1))


@dataclasses.dataclass(frozen=True)
class AdafactorRule(Rule):
    """Algorithms 4 and 5 of Shazeer & Stern without first moment, in torch.optim's form, for
    one array. Its step is relative to the array's RMS, so it reads the parameters and the
    learning rate, and reduces over the array."""

    state_type = ScaleByAdafactorState
    needs_params = True
    elementwise = False
    takes_learning_rate = True

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        # 1 - beta2_t = t^c: 1 at the first step, which makes v the first squared gradient.
        one_minus_b2 = t ** hp.beta2_decay
        assert hp.learning_rate is not None
        return {"one_minus_b2": one_minus_b2,
                "rho": jnp.minimum(hp.learning_rate, 1 / jnp.sqrt(t))}, carry

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        assert p is not None
        eps1 = s.eps1 if "eps1" in s.values else jnp.finfo(g.dtype).eps
        w = s.one_minus_b2
        g2 = square(g)
        new = dict(state)
        if _factored(g.shape):
            # Means over rows and columns (over none: 0, not NaN, for an empty array).
            v_row = saturate((1 - w) * state["v_row"]
                             + w * jnp.sum(g2, axis=-1) / max(g.shape[-1], 1))
            v_col = saturate((1 - w) * state["v_col"]
                             + w * jnp.sum(g2, axis=-2) / max(g.shape[-2], 1))
            # (The sum saturates too: an inf row mean would make inf / inf.)
            row_mean = saturate(jnp.sum(v_row, axis=-1, keepdims=True)) / max(v_row.shape[-1], 1)
            variance = (v_row[..., :, None] * v_col[..., None, :]) / jnp.maximum(
                row_mean, eps1
            )[..., None]
            new.update(v_row=v_row, v_col=v_col)
        else:
            variance = saturate((1 - w) * state["v"] + w * g2)
            new["v"] = variance
        u = g / jnp.sqrt(jnp.maximum(variance, eps1 * eps1))
        step = jnp.maximum(s.eps2, _rms(p)) * s.rho
        clip = jnp.maximum(1, _rms(u) / s.d)
        return -(step / clip) * u, new


def adafactor(
    learning_rate: ScalarOrSchedule = 1e-2,
    beta2_decay: Scalar = -0.8,
    eps1: Scalar | None = None,
    eps2: Scalar = 1e-3,
    d: Scalar = 1.0,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor: adaptive steps with sublinear memory (Shazeer & Stern, 2018).

    For a matrix :math:`X` of shape :math:`n \times m` (arrays of more dimensions are batches
    of matrices over their last two axes), with :math:`\hat\beta_{2t} = 1 - t^{c}`:

    .. math::

        R_t &= \hat\beta_{2t} R_{t-1} + (1 - \hat\beta_{2t})\,
            \mathrm{mean}_{\text{cols}}(G_t^2), \qquad
        C_t = \hat\beta_{2t} C_{t-1} + (1 - \hat\beta_{2t})\,
            \mathrm{mean}_{\text{rows}}(G_t^2) \\
        \hat V_t &= R_t C_t / \max(\mathrm{mean}(R_t), \epsilon_1), \qquad
        U_t = G_t / \sqrt{\max(\hat V_t, \epsilon_1^2)} \\
        \rho_t &= \min(\alpha, 1/\sqrt{t}), \qquad
        a_t = \max(\epsilon_2, \mathrm{RMS}(X_{t-1}))\, \rho_t \\
        X_t &= X_{t-1} - a_t\, U_t / \max(1, \mathrm{RMS}(U_t) / d)

    Vectors and scalars keep the full :math:`V_t = \hat\beta_{2t} V_{t-1} + (1 -
    \hat\beta_{2t}) G_t^2` instead. A matrix costs :math:`n + m` numbers of state rather than
    :math:`2nm`; there is no first moment (the paper's :math:`\beta_1 = 0`). The step is
    relative to the parameter's RMS, so the learning rate :math:`\alpha` caps a relative step,
    not an absolute one.

    Args:
      learning_rate: :math:`\alpha`, the largest relative step, a number or schedule.
      beta2_decay: :math:`c` <= 0, the exponent of the second moment's decay schedule.
      eps1: :math:`\epsilon_1` >= 0, the floor of the second moment's root; ``None`` (the
        default) takes the machine epsilon of the dtype the update is computed in.
      eps2: :math:`\epsilon_2` >= 0, the smallest parameter RMS a step is relative to.
      d: :math:`d` > 0, the RMS an update is clipped to.
      weight_decay: >= 0, decoupled: :math:`X \leftarrow X (1 - \alpha\lambda)` before the
        step, as torch.optim.Adafactor.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      nu_dtype: the dtype of the second moments; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdafactorState`;
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones((3, 4))}
      >>> tx = jadam.adafactor()
      >>> state = tx.init(params)
      >>> state.v_row["w"].shape, state.v_col["w"].shape
      ((3,), (4,))
      >>> updates, state = tx.update({"w": jnp.ones((3, 4))}, state, params)

    Complex parameters (see the README's table): the factored moments are real means of
    ``|g|^2``; the RMS of the parameter and of the update use ``|x|^2``.

    Differences from other libraries: the same algorithm and defaults as
    ``torch.optim.Adafactor``, whose ``eps=(eps1, eps2)`` are jadam's ``eps1`` and ``eps2``; for
    float16 and bfloat16 parameters torch's default :math:`\epsilon_1` is that dtype's epsilon,
    jadam's is float32's (the dtype it computes in). The paper adds :math:`\epsilon_1 = 10^{-30}`
    to :math:`G^2` instead of flooring. ``optax.adafactor`` differs more: it factors only
    dimensions of 128 or more, takes its learning rate as an absolute step by default
    (``multiply_by_parameter_scale`` aside), adds ``1e-30`` to :math:`G^2`, and offers a first
    moment.

    References:
      Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, ICML
      2018, https://arxiv.org/abs/1804.04235.
    """
    fn = "jadam.adafactor"
    hp = {
        "beta2_decay": hyperparams.scalar(fn, "beta2_decay", beta2_decay, low=-math.inf, high=0.0),
        "eps2": hyperparams.scalar(fn, "eps2", eps2),
        "d": hyperparams.scalar(fn, "d", d, low_open=True),
    }
    if eps1 is not None:
        hp["eps1"] = hyperparams.scalar(fn, "eps1", eps1)
    dtype = hyperparams.float_dtype(fn, "nu_dtype", nu_dtype)
    moments = (
        Moment("v_row", dtype, shape=_row_shape, nonnegative=True),
        Moment("v_col", dtype, shape=_col_shape, nonnegative=True),
        Moment("v", dtype, shape=_full_shape, nonnegative=True),
    )
    return layout.optimizer(
        AdafactorRule(hp, moments), fn=fn, learning_rate=learning_rate,
        weight_decay=weight_decay, decoupled=True, mask=mask, maximize=maximize,
    )
