"""Schedule-Free AdamW (Defazio et al., 2024): no learning-rate schedule to tune; an online
average of the iterates does the annealing, and gradients are taken at an interpolation between
that average and the base sequence."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.codecs.packed import PackedState
from jadam.equations import bias_correction, ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import Carry, Moment, Moments, Rule, Scalars, Step, adam_hyperparams


class ScaleByScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free_adamw`: ``count``; ``z``, the base sequence (starts at the
    parameters); ``nu``, the second moment; ``lr_max``, the largest warmed-up rate so far;
    ``weight_sum``, the sum of the averaging weights; ``b1``, kept for
    :func:`schedule_free_eval_params`. The parameters themselves are the interpolation
    :math:`y`."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    z: optax.Updates
    nu: optax.Updates
    lr_max: jax.Array
    weight_sum: jax.Array
    b1: jax.Array


@dataclasses.dataclass(frozen=True)
class ScheduleFreeRule(Rule):
    """Algorithm 1 of Defazio et al. (Schedule-Free AdamW), for one array, with the iterate
    average kept implicit: the parameters are y, the state keeps z, and x = (y - (1 - b1) z) /
    b1."""

    state_type = ScaleByScheduleFreeState
    needs_params = True
    takes_learning_rate = True
    takes_weight_decay = True

    def carry_init(self) -> dict[str, Any]:
        return {"lr_max": 0.0, "weight_sum": 0.0, "b1": self.hyperparams["b1"]}

    def scalars(self, hp: Scalars, t: jax.Array, carry: Carry) -> tuple[Carry, Carry]:
        b2 = hp.b2
        # A hyperparameter like the others (optax.inject_hyperparams may trace it); 0: none.
        steps = hp.warmup_steps
        warmup = jnp.where(steps > 0, jnp.minimum(t / jnp.maximum(steps, 1), 1), 1)
        # gamma_t = lr * sqrt(1 - b2^t) * warmup: Adam's bias correction moved into the rate.
        assert hp.learning_rate is not None
        lr_t = hp.learning_rate * warmup * jnp.sqrt(bias_correction(b2, t))
        lr_max = jnp.maximum(carry["lr_max"], lr_t)
        weight = lr_max ** hp.weight_lr_power
        weight_sum = carry["weight_sum"] + weight
        c = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0)
        return {"lr_t": lr_t, "c": c}, {"lr_max": lr_max, "weight_sum": weight_sum, "b1": hp.b1}

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        assert p is not None
        z, c, lr_t = state["z"], s.c, s.lr_t
        nu = ema(state["nu"], square(g), s.b2)
        step = g / (jnp.sqrt(nu) + s.eps)
        if s.weight_decay is not None:
            step = step + s.weight_decay * p
        # y' = (1 - b1) z' + b1 x' with x' = (1 - c) x + c z' and z' = z - lr_t * step, in
        # terms of y and z: y' = y + c (z - y) - lr_t (1 - b1 (1 - c)) step.
        update = c * (z - p) - lr_t * (1 - s.b1 * (1 - c)) * step
        return update, {"z": z - lr_t * step, "nu": nu}


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 2.5e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    warmup_steps: int = 0,
    weight_lr_power: Scalar = 2.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    z_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-Free AdamW: training without a learning-rate schedule (Defazio et al., 2024).

    Three sequences: the base :math:`z`, its weighted average :math:`x` (what to evaluate),
    and the interpolation :math:`y` where gradients are taken (what the parameters hold
    during training):

    .. math::

        y_t &= (1 - \beta_1) z_t + \beta_1 x_t, \qquad g_t = \nabla f(y_t) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
        \gamma_t = \gamma \sqrt{1 - \beta_2^t} \min(1, t / T_{warmup}) \\
        z_{t+1} &= z_t - \gamma_t \Big(\frac{g_t}{\sqrt{v_t} + \epsilon}
            + \lambda y_t\Big) \\
        c_{t+1} &= \frac{\bar\gamma_t^{\,p}}{\sum_{i \le t} \bar\gamma_i^{\,p}}, \qquad
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

    with :math:`\bar\gamma_t = \max_{i \le t} \gamma_i` and :math:`p = 2` (the paper's
    :math:`c_{t+1} = \gamma_t^2 / \sum \gamma_i^2` for a rate that never falls, as here). The
    state keeps :math:`z`; :math:`x` is implicit. Evaluate (and save) the model at
    :math:`x`: ``schedule_free_eval_params(state, params)``.

    Args:
      learning_rate: :math:`\gamma`, a number (or a schedule, which the method makes
        unnecessary; a falling one is averaged with the largest rate so far).
      b1: :math:`\beta_1` in [0, 1), the interpolation between average and base sequence
        (momentum's role).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      warmup_steps: linear warmup of :math:`\gamma_t` over this many steps, an integer >= 0.
      weight_lr_power: :math:`p` >= 0, the power of the rate in the averaging weights.
      weight_decay: :math:`\lambda` >= 0, applied at :math:`y` inside the step of :math:`z`.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      z_dtype: dtype of the base sequence; default the parameter's.
      nu_dtype: dtype of the second moment; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state
      :class:`ScaleByScheduleFreeState`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.schedule_free_adamw(warmup_steps=100)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      >>> eval_params = jadam.schedule_free_eval_params(state, params)

    Complex parameters (see the README's table): ``z`` is complex, ``nu`` the real average of
    ``|g|^2``.

    Differences from other libraries: the same algorithm and defaults as the authors'
    ``AdamWScheduleFree`` (with ``r = 0``). ``optax.contrib.schedule_free_adamw`` (0.2.8)
    weighs its average by the plain learning rate rather than by :math:`\gamma_t`, which
    includes the bias correction :math:`\sqrt{1 - \beta_2^t}`: early iterates count as much
    as late ones, and after 200 steps at the defaults its parameters differ from the paper's
    by about 5%. torch.optim has no Schedule-Free optimizer.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, *The Road Less Scheduled*, NeurIPS
      2024, https://arxiv.org/abs/2405.15682.
    """
    fn = "jadam.schedule_free_adamw"
    hp = {
        **adam_hyperparams(fn, b1, b2, eps),
        "weight_lr_power": hyperparams.scalar(fn, "weight_lr_power", weight_lr_power),
        "warmup_steps": hyperparams.steps(fn, "warmup_steps", warmup_steps, minimum=0),
    }
    moments = (
        Moment("z", hyperparams.float_dtype(fn, "z_dtype", z_dtype), init="params"),
        Moment("nu", hyperparams.float_dtype(fn, "nu_dtype", nu_dtype), nonnegative=True),
    )
    return layout.optimizer(
        ScheduleFreeRule(hp, moments), fn=fn, learning_rate=learning_rate,
        weight_decay=weight_decay, mask=mask, maximize=maximize,
    )


def schedule_free_eval_params(
    state: ScaleByScheduleFreeState, params: optax.Params
) -> optax.Params:
    r"""The parameters to evaluate, test and save a Schedule-Free model at: the average
    :math:`x = (y - (1 - \beta_1) z) / \beta_1`, from the training parameters :math:`y` and
    the state of :func:`schedule_free_adamw`.

    Args:
      state: the optimizer's state, or a state of ``optax.chain``/``optax.MultiSteps`` etc.
        that holds exactly one :class:`ScaleByScheduleFreeState`.
      params: the parameters being trained (:math:`y`).

    Returns:
      A tree like ``params``, in the parameters' dtypes.

    Raises:
      ValueError: if ``b1`` is 0 (then :math:`y = z` and the average is not recoverable).
    """
    def is_ours(x: Any) -> bool:
        return isinstance(x, ScaleByScheduleFreeState | PackedState)

    found = [s for s in jax.tree.leaves(state, is_leaf=is_ours) if is_ours(s)]
    found = [s.unpacked() if isinstance(s, PackedState) else s for s in found]
    found = [s for s in found if isinstance(s, ScaleByScheduleFreeState)]
    if len(found) != 1:
        raise ValueError(
            "jadam.schedule_free_eval_params: expected a state holding one "
            f"ScaleByScheduleFreeState, found {len(found)}"
        )
    sf = found[0]
    b1 = sf.b1
    if not hyperparams.is_traced(b1) and float(np.asarray(b1)) == 0:
        raise ValueError(
            "jadam.schedule_free_eval_params: b1 is 0, so the parameters are the base sequence "
            "and the average is not kept; train with b1 > 0 to evaluate at the average"
        )

    def average(y: jax.Array, z: jax.Array) -> jax.Array:
        dtype = jnp.promote_types(jnp.result_type(y), jnp.float32)
        yc, zc, b = y.astype(dtype), z.astype(dtype), b1.astype(dtype)
        return ((yc - (1 - b) * zc) / b).astype(y.dtype)

    return jax.tree.map(average, params, sf.z)
