"""Saving and restoring optimizer state (or any pytree of arrays) with orbax, checked.

jadam's states are NamedTuples of arrays, so orbax and ``pickle`` save them as they are. What
orbax alone does not do is check that a checkpoint fits what it is restored into: given a
template with another dtype it silently casts, given the state of another optimizer with the
same field names it fills it, and without a template it returns plain dicts that fail later
with ``'dict' object has no attribute 'mu'``. :func:`save` records the types of the state's
nodes and the shape and dtype of every leaf beside the arrays, and :func:`restore` compares
them with the template first and names every difference. Orbax writes into a temporary
directory and renames it when complete, so a process killed while saving leaves no
half-written checkpoint behind.

Checkpoints written by earlier versions load (:func:`restore` upgrades them): format 1 kept
Adafactor's unused moments as arrays of shape ``(0,)`` (now ``(1,)`` zeros, which orbax can save
directly) and 8-bit moments as a ``(codes, scales)`` pair (now one uint8 array,
:func:`jadam.quantize.quantize`).

Example::

    jadam.checkpoint.save("/ckpt/opt_state", state)
    state = jadam.checkpoint.restore("/ckpt/opt_state", like=jax.eval_shape(tx.init, params))

Needs ``orbax-checkpoint`` (``pip install jadam[examples]``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from jadam import quantize

#: Version of what :func:`save` records beside the arrays (and of the states' own layouts).
FORMAT = 2
_KEY = "jadam"


def save(directory: str | os.PathLike[str], tree: Any, *, overwrite: bool = False) -> None:
    """Saves ``tree`` (an optimizer state, or any pytree of arrays) to ``directory``.

    Args:
      directory: where to write; it must not exist unless ``overwrite``.
      tree: the pytree; its leaves are arrays.
      overwrite: replace an existing checkpoint at ``directory``.

    Raises:
      FileExistsError: if ``directory`` exists and ``overwrite`` is false.
    """
    path = os.path.abspath(os.fspath(directory))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"jadam.checkpoint.save: {path} exists; pass overwrite=True")
    record = {"format": FORMAT, "types": _node_types(tree), "leaves": _leaf_specs(tree)}
    checkpointer = _orbax().StandardCheckpointer()
    # Orbax refuses arrays of size 0 (Adafactor's factored moments of a vector, say); they
    # hold no values, and restore() makes them again from the template.
    stored = jax.tree.map(lambda x: None if np.size(x) == 0 else x, tree)
    checkpointer.save(path, stored, force=overwrite, custom_metadata={_KEY: record})
    checkpointer.wait_until_finished()
    checkpointer.close()


def restore(directory: str | os.PathLike[str], like: Any) -> Any:
    """Restores the pytree saved at ``directory`` into the structure of ``like``.

    Args:
      directory: a checkpoint written by :func:`save`.
      like: a template: the state as ``init`` makes it, or its shapes alone,
        ``jax.eval_shape(tx.init, params)``. Leaves that are ``jax.Array`` s keep their
        sharding; others are placed on the default device.

    Returns:
      A tree of the same types as ``like``, with the saved values.

    Raises:
      TypeError: if ``like`` is ``None``: without a template orbax can only return dicts, which
        the optimizer cannot use; the message says which state type the checkpoint holds.
      ValueError: if the checkpoint holds other node types (another optimizer or other
        options), other leaves (another tree), or other shapes or dtypes than ``like``; every
        difference is listed.
      FileNotFoundError: if there is no checkpoint at ``directory``.
    """
    path = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"jadam.checkpoint.restore: no checkpoint at {path}")
    ocp = _orbax()
    checkpointer = ocp.StandardCheckpointer()
    try:
        record = _record(checkpointer.metadata(path))
        if like is None:
            holds = record["types"].get("", "a pytree") if record else "a pytree"
            raise TypeError(
                f"jadam.checkpoint.restore: pass like=, the state this checkpoint is restored "
                f"into, e.g. like=jax.eval_shape(tx.init, params); it holds {holds}. Without "
                "one, orbax returns plain dicts, which no optimizer can update."
            )
        if record is None:
            raise ValueError(
                f"jadam.checkpoint.restore: {path} was not written by jadam.checkpoint.save "
                "(it has no record of shapes and types to check); restore it with orbax itself"
            )
        record, fill, join = _upgrade(_renamed(record), like)
        problems = _differences(record, like)
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise ValueError(
                f"jadam.checkpoint.restore: the checkpoint at {path} does not fit the template "
                f"(another optimizer, other options, or another parameter tree?):\n  {shown}{more}"
            )
        with_paths, treedef_ = jax.tree_util.tree_flatten_with_path(like)
        treedef: Any = treedef_
        names = [_name(path) for path, _ in with_paths]
        leaves = [x for _, x in with_paths]

        def stored_as(name: str, x: Any) -> Any:
            if np.size(x) == 0 or name in fill:
                return None  # orbax refuses arrays of size 0, so save() stored None
            if name in join:  # format 1's 8-bit pair
                blocks = np.shape(x)[0]
                return {"codes": _abstract(x, (blocks, quantize.BLOCK)),
                        "scales": _abstract(x, (blocks,), np.float32)}
            return _abstract(x)

        target = treedef.unflatten([stored_as(n, x) for n, x in zip(names, leaves, strict=True)])
        restored = checkpointer.restore(path, target)
    finally:
        checkpointer.close()
    values = treedef.flatten_up_to(restored)
    out = []
    for name, x, v in zip(names, leaves, values, strict=True):
        if np.size(x) == 0 or name in fill:
            v = jax.device_put(np.zeros(np.shape(x), x.dtype), _abstract(x).sharding)
        elif name in join:
            v = jax.device_put(_join(v["codes"], v["scales"]), _abstract(x).sharding)
        out.append(v)
    return treedef.unflatten(out)


#: Node types that moved to another module since a checkpoint may have been written: the name
#: then, the name now. (The classes are the same; only their module changed.)
_MOVED = {"jadam.layout.PackedState": "jadam.codecs.packed.PackedState"}


def _renamed(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the node types of :data:`_MOVED` under their names of today."""
    types = {where: _MOVED.get(kind, kind) for where, kind in record["types"].items()}
    return {**record, "types": types}


def _join(codes: Any, scales: Any) -> np.ndarray:
    """Format 1's 8-bit pair as today's one array: each block's codes, then its scale's bytes."""
    scale_bytes = np.asarray(scales, np.float32).reshape(-1, 1).view(np.uint8)
    return np.concatenate([np.asarray(codes, np.uint8), scale_bytes], axis=1)


def _upgrade(
    record: dict[str, Any], like: Any
) -> tuple[dict[str, Any], set[str], set[str]]:
    """The record of a checkpoint of an earlier format in today's terms, with the leaves to
    fill with zeros (Adafactor's unused moments, saved as ``(0,)``, now ``(1,)``) and the
    8-bit moments to join (saved as ``codes`` and ``scales``, now one array)."""
    if record.get("format", 1) >= 2:
        return record, set(), set()
    want = _leaf_specs(like)
    types, leaves = dict(record["types"]), dict(record["leaves"])
    adafactor = [where + "." for where, kind in types.items()
                 if kind == "jadam.adafactor.ScaleByAdafactorState"]
    fill = set()
    for name, (shape, dtype) in record["leaves"].items():
        if (list(shape) == [0] and want.get(name) == [[1], dtype]
                and any(name.startswith(where) for where in adafactor)):
            leaves[name] = [[1], dtype]
            fill.add(name)
    join = set()
    for where, kind in record["types"].items():
        if kind == "jadam.quantize.Quantized":
            codes = leaves.pop(f"{where}.codes")
            leaves.pop(f"{where}.scales")
            del types[where]
            leaves[where] = [[codes[0][0], quantize.ROW], "uint8"]
            join.add(where)
    return {**record, "types": types, "leaves": leaves}, fill, join


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover - the test environment has orbax
        raise ImportError(
            "jadam.checkpoint needs orbax-checkpoint: pip install orbax-checkpoint"
        ) from e
    return ocp


def _abstract(x: Any, shape: Any = None, dtype: Any = None) -> jax.ShapeDtypeStruct:
    """``x``'s shape, dtype and sharding (a single device if it has none), or the given
    ``shape`` and ``dtype`` on a single device."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or shape is not None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x) if shape is None else shape,
                                x.dtype if dtype is None else dtype, sharding=sharding)


def _name(path: tuple[Any, ...]) -> str:
    """A key path as orbax names it: the keys joined by dots."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def _leaf_specs(tree: Any) -> dict[str, list[Any]]:
    return {_name(path): [list(np.shape(x)), str(np.dtype(x.dtype))]
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _node_types(tree: Any, prefix: str = "") -> dict[str, str]:
    """The class of every NamedTuple or registered node in ``tree``, by path; plain dicts,
    lists and tuples are left out (orbax keeps those)."""
    out: dict[str, str] = {}
    children, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is not tree)
    if not children or (len(children) == 1 and children[0][1] is tree):
        return out  # a leaf
    if type(tree) not in (dict, list, tuple):
        out[prefix] = f"{type(tree).__module__}.{type(tree).__qualname__}"
    for path, child in children:
        if child is None:
            continue
        name = _name(path)
        out.update(_node_types(child, f"{prefix}.{name}" if prefix else name))
    return out


def _record(metadata: Any) -> dict[str, Any] | None:
    custom = getattr(metadata, "custom_metadata", None) or {}
    return custom.get(_KEY)


def _differences(record: dict[str, Any], like: Any) -> list[str]:
    problems = []
    saved_types, want_types = record["types"], _node_types(like)
    for where in sorted(set(saved_types) | set(want_types)):
        saved, want = saved_types.get(where), want_types.get(where)
        if saved != want:
            problems.append(f"{where or 'the root'}: saved {saved or 'no such node'}, "
                            f"template {want or 'no such node'}")
    saved_leaves, want_leaves = record["leaves"], _leaf_specs(like)
    for name in sorted(set(saved_leaves) | set(want_leaves)):
        saved_leaf, want_leaf = saved_leaves.get(name), want_leaves.get(name)
        if saved_leaf is None:
            problems.append(f"{name}: in the template, not in the checkpoint")
        elif want_leaf is None:
            problems.append(f"{name}: in the checkpoint, not in the template")
        elif list(saved_leaf[0]) != want_leaf[0]:
            problems.append(f"{name}: saved shape {tuple(saved_leaf[0])}, "
                            f"template {tuple(want_leaf[0])}")
        elif saved_leaf[1] != want_leaf[1]:
            problems.append(f"{name}: saved dtype {saved_leaf[1]}, template {want_leaf[1]}")
    return problems
