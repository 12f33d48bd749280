"""Packed state (:func:`jadam.packed`): each named moment of all small leaves in one flat
buffer per group, across steps, so that the rule runs once per buffer rather than once per
leaf (:mod:`jadam.packing` has the buffers themselves)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jadam import checks, dtypes, packing
from jadam.packing import Packed, PackIndex
from jadam.rule import Rule


class PackedState(NamedTuple):
    """The state of a packed optimizer (:func:`jadam.packed`).

    Attributes:
      inner: the optimizer's own state type, whose moments are :class:`jadam.packing.Packed`:
        one flat buffer per group of small leaves, and the large leaves as they are.
      index: where each leaf lives (offsets as int32 scalars, see
        :class:`jadam.packing.PackIndex`).
    """

    inner: Any
    index: PackIndex  # type: ignore[assignment]  # over tuple.index

    def unpacked(self) -> Any:
        """The optimizer's own state with every moment as a tree shaped like the parameters,
        as the unpacked optimizer would hold it (for reading; update() takes the packed one).
        """
        treedef = self.index.plan.treedef
        return self.inner._replace(**{
            name: treedef.unflatten(packing.unpack_leaves(self.index, value))
            for name, value in self.inner._asdict().items() if isinstance(value, Packed)
        })


def open_state(fn: str, state: Any) -> tuple[Any, PackIndex]:
    """The inner state and the index of a :class:`PackedState` that ``update`` got."""
    if not isinstance(state, PackedState):
        raise TypeError(
            f"{fn}: update() got a state of type {type(state).__name__}, not the "
            "PackedState that this packed optimizer's init() returns"
        )
    return state.inner, state.index


def init(
    params: Any, moments: dict[str, Any], decay_leaf: list[bool], min_size: int,
) -> tuple[dict[str, packing.Packed], PackIndex]:
    """The moments (trees shaped like ``params``) packed, and where each leaf lives."""
    leaves, treedef_ = jax.tree.flatten(params)
    treedef: Any = treedef_
    flat_moments = {k: treedef.flatten_up_to(v) for k, v in moments.items()}

    def group(i: int) -> Any:
        # Leaves share a buffer when they are computed alike: same moment dtypes, same decay,
        # both real or both complex.
        return (tuple(jnp.result_type(v[i]) for v in flat_moments.values()), decay_leaf[i],
                jnp.iscomplexobj(leaves[i]))

    plan = packing.make_plan(leaves, treedef, min_size=min_size, key=group)
    return ({k: packing.pack_leaves(plan, v) for k, v in flat_moments.items()},
            PackIndex.of(plan))


def update_buffers(
    rule: Rule,
    leaf_update: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    index: PackIndex,
    grads: Sequence[jax.Array],
    params: Sequence[Any],
    state: Any,
    decay_leaf: list[bool] | None,
    updates: list[Any],
) -> dict[str, tuple[jax.Array, ...]]:
    """The rule on each buffer of packed leaves at once: gradients (and parameters) are
    concatenated, the moments are already packed, and each leaf's update is sliced out into
    ``updates``. Returns each moment's new buffers."""
    plan = index.plan
    new: dict[str, list[jax.Array]] = {m.name: [] for m in rule.moments}
    for group in range(len(plan.sizes)):
        members = plan.members(group)
        buffers = {m.name: getattr(state, m.name).buffers[group] for m in rule.moments}
        wide = any(x is not None and dtypes.is_wide(x) for x in buffers.values()) or any(
            dtypes.is_wide(x) for i in members for x in (grads[i], params[i]) if x is not None
        )
        dtype = dtypes.compute_dtype(jnp.float64 if wide else jnp.float32,
                                     jnp.iscomplexobj(grads[members[0]]))
        decay = decay_leaf is not None and decay_leaf[members[0]]
        g = packing.pack_group(plan, grads, group, dtype)
        p = None
        if params[members[0]] is not None and (rule.needs_params or decay):
            p = packing.pack_group(plan, params, group, dtype)
        u, moments = leaf_update(rule, g=g, state=buffers, p=p, decay=decay)
        for name, value in moments.items():
            new[name].append(value)
        for i, leaf in zip(members, packing.slice_group(index, u, group), strict=True):
            out_dtype = jnp.result_type(grads[i] if params[i] is None else params[i])
            updates[i] = leaf.astype(out_dtype)
    return {k: tuple(v) for k, v in new.items()}


def packed(tx: Any, *, min_size: int = packing.MIN_SIZE) -> Any:
    """The optimizer ``tx`` with its state packed: each named moment of all leaves smaller than
    ``min_size`` elements is kept in one flat buffer per group, across steps, and the update
    runs once per buffer instead of once per leaf. The updates are the same: bit for bit on a
    CPU without fused multiply-add, to 2 ulps with it (a buffer and a leaf are loops of other
    lengths, which LLVM may contract differently).

    Works for every elementwise jadam optimizer (all but LAMB, MARS, Adafactor, Adam-mini and
    StableAdamW, whose math reduces over each array, and cautious variants, which rescale each
    array; these raise ``ValueError``). The state is a :class:`jadam.PackedState`;
    ``state.unpacked()`` gives it back as trees shaped like the parameters.

    Leaves are grouped by the dtypes of their moments and by whether weight decay applies to
    them; leaves sharded over several devices stay unpacked.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {f"layer{i}": jnp.ones(10) for i in range(100)}
      >>> tx = jadam.packed(jadam.adam(1e-3))
      >>> state = tx.init(params)
      >>> state.inner.mu.buffers[0].shape  # 1,000 elements padded to a multiple of 128
      (1024,)

    Args:
      tx: a jadam optimizer, such as ``jadam.adamw(1e-3)`` or ``jadam.scale_by_adam()``.
      min_size: leaves with at least this many elements keep their own state arrays.

    Returns:
      The packed optimizer, an optax ``GradientTransformationExtraArgs``.
    """
    return checks.layout_option(
        "jadam.packed", tx, min_size, "packing_min_size",
        hint=" For other transformations, pack the parameters themselves with jadam.pack, and "
             "optimize the packed tree.",
    )
