"""Packing: many small arrays kept as a few flat buffers, so they cost one operation, not many.

On XLA, every leaf of a pytree costs at least one kernel per operation, and on CPU each kernel
launch costs several microseconds, and each distinct kernel about 13 ms of compile time
(``bench/README.md``). A tree of 1,000 small leaves therefore spends most of an optimizer
step in launches and most of its compile in code generation. This module keeps the small
leaves of a tree in one flat buffer per group (leaves that share a dtype and are treated
alike), padded to a multiple of 128 elements, and the large leaves as they are.

Two details matter for speed, and both are measured in ``bench/``:

* Splitting a buffer back into leaves uses ``lax.dynamic_slice`` at offsets held as *runtime*
  int32 scalars (the leaves of :class:`PackIndex`), not at compile-time constants. Slices at
  constant offsets are distinct kernels that XLA compiles one by one; with runtime offsets,
  every leaf of one shape shares a kernel. On the 1,000-leaf residual MLP of ``bench/`` this
  cut compile time from 50 s to 9 s.
* The buffers are built with one ``concatenate`` (one kernel, however many leaves).

Leaves placed on devices with a sharding other than a single device or full replication are
never packed: a concatenation across shards would gather them.

:func:`pack` and :func:`unpack` let a model keep its *parameters* packed (opt-in), and
:func:`jadam.packed` keeps an optimizer's *state* packed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Buffers are padded to a multiple of this many elements: XLA:CPU runs a flat buffer of odd
#: length several times slower than a padded one, and 128 suits the vector units of TPUs.
ALIGN = 128
#: Default size (in elements) from which a leaf is left as it is rather than packed. Below it,
#: a leaf's launch costs more than copying it into a buffer.
MIN_SIZE = 1 << 16


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where each leaf of a tree lives: static, hashable, the same for every step.

    Attributes:
      treedef: the tree's structure.
      shapes: each leaf's shape.
      slots: for each leaf, ``(group, start)`` if it is packed, else ``None``.
      sizes: each group's padded buffer length.
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    slots: tuple[tuple[int, int] | None, ...]
    sizes: tuple[int, ...]

    def members(self, group: int) -> list[int]:
        """The leaves packed in ``group``, in buffer order."""
        return [i for i, s in enumerate(self.slots) if s is not None and s[0] == group]

    @property
    def packed(self) -> list[int]:
        """The packed leaves, in the order of :attr:`PackIndex.offsets`."""
        return [i for i, s in enumerate(self.slots) if s is not None]


@jax.tree_util.register_pytree_node_class
class PackIndex:
    """A :class:`Plan` with the packed leaves' offsets as runtime int32 scalars (its pytree
    leaves), so that passing it into a jitted function keeps them out of the compiled code."""

    def __init__(self, plan: Plan, offsets: Sequence[Any]):
        self.plan = plan
        self.offsets = tuple(offsets)

    @classmethod
    def of(cls, plan: Plan) -> PackIndex:
        offsets = [cast(tuple[int, int], plan.slots[i])[1] for i in plan.packed]
        return cls(plan, [jnp.asarray(o, jnp.int32) for o in offsets])

    def tree_flatten(self) -> tuple[tuple[Any, ...], Plan]:
        return self.offsets, self.plan

    @classmethod
    def tree_unflatten(cls, plan: Plan, offsets: Sequence[Any]) -> PackIndex:
        return cls(plan, offsets)

    def __repr__(self) -> str:
        plan = self.plan
        return (f"PackIndex({len(plan.shapes)} leaves, {len(plan.packed)} packed into "
                f"{len(plan.sizes)} buffers of {list(plan.sizes)} elements)")


class Packed(NamedTuple):
    """A tree kept packed: ``buffers`` (one flat array per group) and ``leaves`` (the leaves
    that are not packed, with ``None`` where a leaf lives in a buffer)."""

    buffers: tuple[jax.Array, ...]
    leaves: tuple[jax.Array | None, ...]


def make_plan(
    leaves: Sequence[Any],
    treedef: Any,
    *,
    min_size: int = MIN_SIZE,
    key: Callable[[int], Any] = lambda i: None,
) -> Plan:
    """Packs each leaf smaller than ``min_size`` elements into the buffer of its group: leaves
    with equal ``(dtype, key(i))``. Leaves sharded across several devices stay unpacked."""
    groups: dict[Any, int] = {}
    fill: list[int] = []
    slots: list[tuple[int, int] | None] = []
    for i, leaf in enumerate(leaves):
        size = _size(jnp.shape(leaf))
        if size >= min_size or is_split_across_devices(leaf):
            slots.append(None)
            continue
        g = groups.setdefault((jnp.result_type(leaf), key(i)), len(groups))
        if g == len(fill):
            fill.append(0)
        slots.append((g, fill[g]))
        fill[g] += size
    return Plan(
        treedef=treedef,
        shapes=tuple(tuple(jnp.shape(x)) for x in leaves),
        slots=tuple(slots),
        sizes=tuple(max(ALIGN, -(-n // ALIGN) * ALIGN) for n in fill),
    )


def pack_leaves(plan: Plan, leaves: Sequence[Any]) -> Packed:
    """``leaves`` (in the plan's order) as buffers, each in the dtype of its first leaf."""
    buffers = tuple(
        pack_group(plan, leaves, g, jnp.result_type(leaves[plan.members(g)[0]]))
        for g in range(len(plan.sizes))
    )
    return Packed(buffers, tuple(None if s else x for s, x in zip(plan.slots, leaves, strict=True)))


def pack_group(plan: Plan, leaves: Sequence[Any], group: int, dtype: Any) -> jax.Array:
    """The buffer of ``group``: its leaves cast to ``dtype``, concatenated, zero-padded."""
    members = plan.members(group)
    parts = [jnp.ravel(leaves[i]).astype(dtype) for i in members]
    pad = plan.sizes[group] - sum(_size(plan.shapes[i]) for i in members)
    return jnp.concatenate([*parts, jnp.zeros(pad, dtype)])


def slice_group(index: PackIndex, buffer: jax.Array, group: int) -> list[jax.Array]:
    """The leaves of ``group`` (in buffer order) sliced from ``buffer``, each at its runtime
    offset."""
    plan = index.plan
    offset = dict(zip(plan.packed, index.offsets, strict=True))
    return [lax.dynamic_slice(buffer, (offset[i],), (_size(plan.shapes[i]),))
            .reshape(plan.shapes[i]) for i in plan.members(group)]


def unpack_leaves(index: PackIndex, packed: Packed) -> list[jax.Array]:
    """The leaves of ``packed``, in the plan's order."""
    out: list[Any] = list(packed.leaves)
    for g, buffer in enumerate(packed.buffers):
        for i, leaf in zip(index.plan.members(g), slice_group(index, buffer, g), strict=True):
            out[i] = leaf
    return out


def pack(tree: Any, *, min_size: int = MIN_SIZE) -> tuple[Packed, PackIndex]:
    """Packs the small leaves of ``tree`` (opt-in packed parameters).

    Returns ``(packed, index)``: ``packed`` is a pytree of arrays, the one to optimize (any
    optax or jadam optimizer then updates all small leaves at once); ``index`` is passed to
    the jitted step as an argument beside it, and :func:`unpack` rebuilds the tree inside the
    model. Pass ``index`` in rather than closing over it: its offsets are then runtime values
    and leaves of one shape share one compiled kernel; as constants, every leaf gets its own.

    Example:
      >>> import jax, jax.numpy as jnp, jadam
      >>> params = {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}
      >>> packed, index = jadam.pack(params)
      >>> [b.shape for b in packed.buffers]
      [(128,)]
      >>> jax.tree.map(jnp.shape, jadam.unpack(packed, index))
      {'b': (3,), 'w': (2, 3)}
    """
    leaves, treedef = jax.tree.flatten(tree)
    plan = make_plan(leaves, treedef, min_size=min_size)
    return pack_leaves(plan, leaves), PackIndex.of(plan)


def unpack(packed: Packed, index: PackIndex) -> Any:
    """The tree that :func:`pack` packed. Differentiable: the gradient with respect to
    ``packed`` is one concatenation of the leaves' gradients, not a sum of scatters."""
    return index.plan.treedef.unflatten(_unpack(packed, index))


@jax.custom_vjp
def _unpack(packed: Packed, index: PackIndex) -> list[jax.Array]:
    return unpack_leaves(index, packed)


def _unpack_fwd(packed: Packed, index: PackIndex) -> tuple[list[jax.Array], Any]:
    return unpack_leaves(index, packed), index


def _unpack_bwd(index: PackIndex, cotangents: list[jax.Array]) -> tuple[Packed, Any]:
    plan = index.plan
    zero_offsets = jax.tree.map(lambda o: np.zeros(np.shape(o), jax.dtypes.float0), index)
    return pack_leaves(plan, cotangents), zero_offsets


_unpack.defvjp(_unpack_fwd, _unpack_bwd)


def is_split_across_devices(leaf: Any) -> bool:
    """Whether an array is split over several devices (not one device, not copies). Under
    ``jit`` a tracer knows only the axes of an explicit-sharding mesh
    (``jax.sharding.AxisType.Explicit``), which are part of its type; with an automatic mesh
    it cannot tell, and this is False: call ``init`` outside ``jit`` there."""
    if isinstance(leaf, jax.core.Tracer):
        sharding = getattr(jax.typeof(leaf), "sharding", None)
        spec, mesh = getattr(sharding, "spec", None), getattr(sharding, "mesh", None)
        if spec is None or mesh is None:
            return False
        axes = [a for part in spec if part is not None
                for a in (part if isinstance(part, tuple) else (part,))]
        return any(mesh.shape[a] > 1 for a in axes)
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return False
    return len(sharding.device_set) > 1 and not sharding.is_fully_replicated


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))
