"""Adam-mini (Zhang et al., 2024): AdamW with one second-moment value per block of parameters
(an attention head, an output neuron, a token's embedding) instead of one per parameter, which
halves the optimizer's memory."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import BiasCorrected, Moments, Scalars, Step, adam_hyperparams, mu_nu

#: A partition rule: from a leaf's key path and shape to the axes one block spans (the axes
#: the second moment averages over); ``()`` gives Adam's one value per parameter.
Partition = Callable[[Sequence[Any], tuple[int, ...]], Sequence[int]]


class ScaleByAdamMiniState(NamedTuple):
    """State of :func:`adam_mini`: ``count``; ``mu``, the first moment (one per parameter);
    ``nu``, the second moment, one per block: the parameter's shape with the block's axes
    reduced to size 1."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


def _names(path: Sequence[Any]) -> list[str]:
    """The names along a key path, without the ``.value`` of a ``flax.nnx`` Variable."""
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    names = []
    for k in keys:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
    return names


def adam_mini_partition(path: Sequence[Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The paper's partition (Section 3 of Zhang et al.), for Flax parameter trees.

    Reads the names Flax gives parameters (``flax.nnx`` and Linen: ``kernel``, ``bias``,
    ``embedding``, ``scale``; ``query``/``key``/``value`` for ``MultiHeadAttention``) and falls
    back to shapes for other names:

    ========================================  ==============================  =============
    leaf                                      one block per                   axes averaged
    ========================================  ==============================  =============
    ``embedding`` (vocab, features)           token                           last
    ``query``/``key`` ``kernel`` (in, heads,  attention head                  0 and 2
    head_dim)
    ``value`` ``kernel`` (in, heads,          output neuron                   0
    head_dim)
    ``bias``                                  parameter (as Adam)             none
    other arrays of 2+ dimensions (Dense,     output neuron or channel        all but last
    Conv, attention ``out`` kernels)
    vectors and scalars (norm ``scale``)      array                           all
    ========================================  ==============================  =============

    Args:
      path: the leaf's key path, as ``jax.tree_util`` gives it.
      shape: the leaf's shape.

    Returns:
      The axes one block spans.
    """
    names = _names(path)
    leaf = names[-1] if names else ""
    module = names[-2] if len(names) > 1 else ""
    ndim = len(shape)
    if leaf == "bias":
        return ()
    if leaf == "embedding" and ndim == 2:
        return (1,)
    if leaf == "kernel" and ndim == 3 and module in ("query", "key"):
        return (0, 2)
    if leaf == "kernel" and ndim == 3 and module == "value":
        return (0,)
    if ndim >= 2:
        return tuple(range(ndim - 1))
    return tuple(range(ndim))


@dataclasses.dataclass(frozen=True)
class AdamMiniRule(BiasCorrected):
    """Algorithm 1 of Zhang et al., for one array: Adam's first moment, and the mean of the
    squared gradient over each block as the block's second moment. The blocks come from
    ``partition``; :meth:`for_leaf` fixes them per leaf."""

    partition: Partition = adam_mini_partition
    axes: tuple[int, ...] = ()
    fn: str = "jadam.adam_mini"
    state_type = ScaleByAdamMiniState
    elementwise = False

    def for_leaf(self, path: Any, shape: tuple[int, ...]) -> AdamMiniRule:
        axes = _checked_axes(self.fn, path, shape, self.partition(path, shape))

        def block_shape(s: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(1 if i in axes else n for i, n in enumerate(s))

        mu, nu = self.moments
        return dataclasses.replace(
            self, axes=axes, moments=(mu, nu._replace(shape=block_shape))
        )

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        mu = ema(state["mu"], g, s.b1)
        g2 = square(g)
        if self.axes:
            # The mean over each block (of an empty block: 0, not NaN), its sum capped as the
            # squares are (jadam.rule.square), so that it stays finite.
            size = math.prod(g.shape[a] for a in self.axes)
            total = jnp.sum(g2, axis=self.axes, keepdims=True)
            g2 = jnp.minimum(total, jnp.finfo(g.dtype).max / 2) / max(size, 1)
        nu = ema(state["nu"], g2, s.b2)
        direction = (mu / s.bc1) / (jnp.sqrt(nu / s.bc2) + s.eps)
        return direction, {"mu": mu, "nu": nu}


def _checked_axes(fn: str, path: Any, shape: tuple[int, ...], axes: Any) -> tuple[int, ...]:
    """The partition's axes for one leaf, as sorted non-negative ints, or a clear error."""
    ndim = len(shape)
    try:
        raw = [operator.index(a) for a in axes]
    except TypeError:
        raw = [ndim]  # not axes: as invalid as an axis out of range
    if not all(-ndim <= a < ndim for a in raw) or len({a % ndim for a in raw}) < len(raw):
        where = jax.tree_util.keystr(tuple(path)) or "the root"
        raise ValueError(
            f"{fn}: the partition gave {axes!r} for the parameter at {where} of shape {shape}; "
            "it must give distinct axes of that shape"
        )
    return tuple(sorted(a % ndim for a in raw))


def adam_mini(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 1e-2,
    partition: Partition | None = None,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-mini: Adam with one learning rate per block of parameters (Zhang et al., 2024).

    For each block :math:`b` of parameters (see :func:`adam_mini_partition`):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_{t,b} &= \beta_2 v_{t-1,b} + (1 - \beta_2)\, \mathrm{mean}_{i \in b}(g_{t,i}^2) \\
        \theta_{t,i} &= \theta_{t-1,i} - \alpha \Big(\frac{m_{t,i} / (1 - \beta_1^t)}
            {\sqrt{v_{t,b(i)} / (1 - \beta_2^t)} + \epsilon} + \lambda \theta_{t-1,i}\Big)

    The paper partitions by the Hessian's block structure: a head of the query and key
    projections, a neuron of the other layers, a token of the embeddings. With one value per
    block, :math:`v` is a small fraction of the parameters and the state is about half of
    AdamW's.

    Args:
      learning_rate: :math:`\alpha`, a number or schedule (the paper: as for AdamW).
      b1, b2: :math:`\beta_1, \beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate, as
        :func:`jadam.adamw` (and with its default).
      partition: the blocks: a function of a leaf's key path and shape giving the axes one
        block spans. ``None`` (the default) is :func:`adam_mini_partition`, the paper's rule
        for Flax trees; ``lambda path, shape: ()`` gives AdamW. (Under
        ``optax.inject_hyperparams``, which takes every function for a schedule, name a
        function given here in ``static_args=("partition",)``.)
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamMiniState`.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"dense": {"kernel": jnp.ones((784, 256)), "bias": jnp.zeros(256)}}
      >>> state = jadam.adam_mini().init(params)
      >>> state.nu["dense"]["kernel"].shape  # one value per output neuron
      (1, 256)

    Complex parameters (see the README's table): ``mu`` is complex, ``nu`` each block's real
    mean of ``|g|^2``.

    Differences from other libraries: neither optax nor torch.optim has Adam-mini. The
    authors' PyTorch code finds blocks by module names and needs the model's head count; here
    the heads are axes of Flax's attention kernels, so none is needed.

    References:
      Zhang, Chen, Li, Qian, Zhao, Li, Ding, Ye, Sun & Luo, *Adam-mini: Use Fewer Learning
      Rates To Gain More*, ICLR 2025, https://arxiv.org/abs/2406.16793.
    """
    return layout.alias("jadam.adam_mini", scale_by_adam_mini, locals(), decoupled=True)


def scale_by_adam_mini(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    partition: Partition | None = None,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-mini's direction, the momentum over each block's root mean square, without
    learning rate, weight decay or sign: the building block of :func:`adam_mini`, whose
    docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByAdamMiniState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_adam_mini")
    hp = adam_hyperparams(fn, b1, b2, eps)
    if partition is None:
        partition = adam_mini_partition
    if not callable(partition):
        raise ValueError(
            f"{fn}(partition={partition!r}): partition must be a function of a key path and "
            "a shape, such as jadam.adam_mini_partition"
        )
    rule = AdamMiniRule(hp, mu_nu(fn, mu_dtype, nu_dtype), partition=partition, fn=fn)
    return layout.per_leaf(rule, fn=fn)
