"""Where optimizer state lives on a device mesh: like the parameters, or spread over data
parallelism as well (ZeRO-1).

Every jadam update is elementwise per parameter (or reduces over one parameter, for LAMB,
Adafactor, Adam-mini, MARS and the cautious variants), so under ``jit`` XLA computes each shard
of the update where that shard of the parameter, gradient and moments lives: no collective
beyond the sums those few optimizers need. What XLA cannot infer is where ``init`` should put
the state: the moments are new arrays (zeros), not computed from the parameters, so a jitted
``init`` places them on one device. :func:`state_shardings` says where they belong::

    shardings = jadam.state_shardings(tx, params)              # moments like the parameters
    state = jax.jit(tx.init, out_shardings=shardings)(params)

With ``zero_axis="data"``, each moment is in addition split over the mesh's ``data`` axis
while the parameters stay replicated over it (Rajbhandari et al., *ZeRO: Memory Optimizations
Toward Training Trillion Parameter Models*, SC 2020, stage 1). Each device then keeps and
updates only its slice of the state; XLA gathers the update before it is added to the
replicated parameters. State memory per device falls by the size of that axis, and the
results are those of the unsharded optimizer (the math is the same, elementwise).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jadam.packing import Packed


def state_shardings(
    tx: Any, params: Any, *, zero_axis: str | None = None, state: Any = None
) -> Any:
    """The shardings of ``tx.init(params)``'s state, to pass as ``out_shardings`` of a jitted
    ``init`` (and of the training step).

    Each array of the state that belongs to one parameter gets that parameter's sharding:
    the moments (same shape), Adafactor's factored moments (the parameter's spec without the
    factored dimension), 8-bit blocks and packed buffers (split along their first dimension
    when ``zero_axis`` is given, else replicated). Step counts and other scalars are
    replicated over the mesh.

    Args:
      tx: an optax gradient transformation (any: jadam's, optax's, chains of both).
      params: the parameters, as arrays placed with ``NamedSharding`` s of one mesh, or as
        ``jax.ShapeDtypeStruct`` s carrying them.
      zero_axis: a mesh axis (usually the data-parallel one) to split every state array
        over as well, along its first dimension that is not split already and divides evenly;
        an array with no such dimension keeps the parameter's sharding.
      state: the state, if it is made already. :func:`jadam.packed` and
        :func:`jadam.quantized` decide at ``init`` which leaves to pack or quantize from
        where the parameters are (never a leaf split over devices), which only a call on
        placed arrays can see: make such a state with ``tx.init(params)`` outside ``jit``
        and pass it here. By default the state's shapes come from ``jax.eval_shape``.

    Returns:
      A pytree of ``NamedSharding`` with the structure of the state.

    Raises:
      ValueError: if the parameters are not placed on one mesh, or ``zero_axis`` is not one
        of its axes.
    """
    mesh = _mesh_of(params)
    if zero_axis is not None and zero_axis not in mesh.axis_names:
        raise ValueError(
            f"jadam.state_shardings(zero_axis={zero_axis!r}): the mesh has axes "
            f"{mesh.axis_names}"
        )
    leaves, treedef_ = jax.tree.flatten(params)
    treedef: Any = treedef_
    specs = [_spec(p) for p in leaves]
    shapes = [tuple(np.shape(p)) for p in leaves]
    if state is None:
        state = jax.eval_shape(tx.init, params)

    def place(shape: tuple[int, ...], spec: PartitionSpec) -> NamedSharding:
        if zero_axis is not None:
            spec = _add_axis(spec, shape, mesh, zero_axis)
        return NamedSharding(mesh, spec)

    def replicated(x: Any) -> NamedSharding:
        return place(tuple(np.shape(x)), PartitionSpec())

    def belonging(x: Any, shape: tuple[int, ...], spec: PartitionSpec) -> Any:
        """The shardings of ``x`` (an array, an 8-bit block pair or None), which belongs to
        the parameter of ``shape`` placed with ``spec``."""
        return jax.tree.map(
            lambda y: place(tuple(np.shape(y)), _derived_spec(tuple(np.shape(y)), shape, spec)),
            x)

    def walk(node: Any) -> Any:
        if isinstance(node, Packed):  # buffers of several leaves, and the unpacked leaves
            return Packed(tuple(jax.tree.map(replicated, b) for b in node.buffers),
                          tuple(map(belonging, node.leaves, shapes, specs)))
        if _is_params_like(node, treedef):
            return treedef.unflatten(list(map(
                belonging, treedef.flatten_up_to(node), shapes, specs)))
        children, node_def = jax.tree_util.tree_flatten(
            node, is_leaf=lambda y: y is not node)
        if not children or (len(children) == 1 and children[0] is node):
            return replicated(node)  # an array that belongs to no parameter
        return jax.tree_util.tree_unflatten(
            node_def, [None if c is None else walk(c) for c in children])

    return walk(state)


def _is_params_like(node: Any, treedef: Any) -> bool:
    if treedef.num_leaves == 0:
        return False
    try:
        treedef.flatten_up_to(node)
    except (ValueError, TypeError):
        return False
    return True


def _mesh_of(params: Any) -> Any:
    meshes = {getattr(getattr(p, "sharding", None), "mesh", None) for p in jax.tree.leaves(params)}
    meshes.discard(None)
    if len(meshes) != 1:
        raise ValueError(
            "jadam.state_shardings: the parameters must be placed with NamedShardings of one "
            f"mesh (jax.device_put(params, NamedSharding(mesh, spec))); found {len(meshes)} meshes"
        )
    return meshes.pop()


def _spec(p: Any) -> PartitionSpec:
    sharding = getattr(p, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return sharding.spec
    return PartitionSpec()


def _entries(spec: PartitionSpec, rank: int) -> list[Any]:
    return list(spec) + [None] * (rank - len(spec))


def _derived_spec(shape: tuple[int, ...], param_shape: tuple[int, ...],
                  spec: PartitionSpec) -> PartitionSpec:
    """The spec of a state array of ``shape`` that belongs to a parameter of ``param_shape``
    placed with ``spec``: the same for the same shape, the spec without the dropped dimension
    for a factored moment (Adafactor), the spec of the kept axes for one value per block
    along others (Adam-mini), replicated for anything else (8-bit blocks, scalars)."""
    entries = _entries(spec, len(param_shape))
    if shape == param_shape:
        return PartitionSpec(*entries)
    same_rank = len(shape) == len(param_shape)
    if same_rank and all(a in (b, 1) for a, b in zip(shape, param_shape, strict=True)):
        # One value per block along some axes (Adam-mini): split like the axes it keeps.
        return PartitionSpec(*(e if a == b else None
                               for e, a, b in zip(entries, shape, param_shape, strict=True)))
    if len(shape) == len(param_shape) - 1:
        for d in reversed(range(len(param_shape))):
            if param_shape[:d] + param_shape[d + 1:] == shape:
                return PartitionSpec(*(entries[:d] + entries[d + 1:]))
    return PartitionSpec()


def _add_axis(spec: PartitionSpec, shape: tuple[int, ...], mesh: Any, axis: str
              ) -> PartitionSpec:
    """``spec`` with ``axis`` added on the first dimension that does not use it yet and whose
    size divides evenly by all the axes it is then split over."""
    entries = _entries(spec, len(shape))
    used = {a for e in entries if e is not None for a in (e if isinstance(e, tuple) else (e,))}
    if axis in used:
        return PartitionSpec(*entries)
    for d, size in enumerate(shape):
        current = () if entries[d] is None else (
            entries[d] if isinstance(entries[d], tuple) else (entries[d],))
        split = int(np.prod([mesh.shape[a] for a in (*current, axis)]))
        if size % split == 0 and size >= split:
            entries[d] = (*current, axis) if current else axis
            return PartitionSpec(*entries)
    return PartitionSpec(*entries)
