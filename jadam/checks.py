"""The checks of a step, at trace time (free under ``jit``): parameters, gradients, states and
masks against what the optimizer expects, with errors that name the call and the leaf's key
path and say what to change."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jadam import dtypes, packing, quantize
from jadam.dtypes import where
from jadam.rule import Moment, Rule

Mask = Any | Callable[[optax.Params], Any]


def check_param(fn: str, path: Any, p: Any, rule: Rule) -> None:
    dtype = jnp.result_type(p)
    if jnp.issubdtype(dtype, jnp.complexfloating) and rule.refuses_complex:
        raise TypeError(
            f"{fn}: parameter {where(path)} is complex ({dtype}), which this optimizer cannot "
            f"train: {rule.refuses_complex}."
        )
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            f"{fn}: parameter {where(path)} has dtype {dtype}; only floating-point (or complex) "
            "parameters can be optimized. Keep integer or boolean arrays out of the optimized "
            "tree, or route them to optax.set_to_zero() with optax.multi_transform."
        )


def check_leaf(
    fn: str, path: Any, g: Any, p: Any, state: dict[str, jax.Array], moments: tuple[Moment, ...]
) -> None:
    g_dtype = jnp.result_type(g)
    if not jnp.issubdtype(g_dtype, jnp.inexact):
        raise TypeError(f"{fn}: the gradient at {where(path)} has dtype {g_dtype}, not a float")
    complex_ = jnp.issubdtype(g_dtype, jnp.complexfloating)
    if p is not None and jnp.iscomplexobj(p) != complex_:
        raise TypeError(
            f"{fn}: the gradient at {where(path)} has dtype {g_dtype} but the parameter "
            f"{jnp.result_type(p)}: a complex parameter needs a complex gradient, a real one a "
            "real gradient (for a real loss of a complex parameter, pass jnp.conj of "
            "jax.grad's result, as with optax)."
        )
    shape = jnp.shape(g)
    expected = {"parameter": (p, shape)}
    for m in moments:
        x = state[m.name]
        if quantize.is_quantized(x):
            # (A shape unlike either format's is reported as unlike the 8-bit one.)
            fmt = quantize.BY_ROW.get(jnp.shape(x)[-1] if jnp.ndim(x) == 2 else 0, quantize.EIGHT)
            expected[f"state.{m.name}"] = (x, quantize.stored_shape(shape, fmt))
            continue
        expected[f"state.{m.name}"] = (x, m.shape(shape) if m.shape else shape)
        if x is None:
            continue
        if m.dtype is None and p is None:
            if jnp.iscomplexobj(x) != (complex_ and not m.nonnegative):
                raise TypeError(
                    f"{fn}: state.{m.name} at {where(path)} has dtype {jnp.result_type(x)}, "
                    f"but the gradient is {g_dtype}: was the state made for "
                    f"{'real' if complex_ else 'complex'} parameters?")
            continue
        want_dtype = dtypes.moment_dtype(fn, path, m, g_dtype if p is None else jnp.result_type(p))
        if jnp.result_type(x) != want_dtype:
            raise TypeError(
                f"{fn}: state.{m.name} at {where(path)} has dtype {jnp.result_type(x)}, but "
                f"this optimizer keeps it in {jnp.dtype(want_dtype)}; was the state made with "
                "other options (mu_dtype, nu_dtype) or restored into another dtype?"
            )
    for what, (x, want) in expected.items():
        if x is not None and jnp.shape(x) != want:
            raise ValueError(
                f"{fn}: the gradient at {where(path)} has shape {shape} but the {what} has "
                f"shape {jnp.shape(x)}, where {want} was expected (no broadcasting)"
            )


def flatten_as(fn: str, treedef: Any, tree: Any, what: str) -> list[Any]:
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        hint = ""
        grads_none = _none_paths(treedef.unflatten([0] * treedef.num_leaves))
        other_none = set(_none_paths(tree))
        missing = [k for k in grads_none if k not in other_none]
        if missing:
            hint = (f"\n  The gradient at {missing[0]} is None where the {what} has an array. "
                    "Pass a zero gradient, or keep that leaf out of the optimizer with "
                    "optax.masked or optax.set_to_zero.")
        raise ValueError(
            f"{fn}: the gradients and {what} have different tree structures.\n"
            f"  gradients: {treedef}\n  {what}: {jax.tree.structure(tree)}{hint}"
        ) from e


def _none_paths(tree: Any) -> list[str]:
    """Key paths of the ``None`` leaves of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)
    return [jax.tree_util.keystr(path) for path, x in leaves if x is None]


def decay_mask(
    fn: str, treedef: Any, updates: Any, params: Any, mask: Mask | None
) -> list[bool]:
    if mask is None:
        return [True] * treedef.num_leaves
    if callable(mask):
        mask = mask(params)
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask, updates)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{fn}: the weight-decay mask must have the structure of the parameters, or a "
            f"prefix of it.\n  mask: {jax.tree.structure(mask)}\n  gradients: {treedef}"
        ) from e
    return flatten_as(fn, treedef, full, "mask")


def check_packable(fn: str, rule: Rule, cautious: bool) -> None:
    if not rule.elementwise or rule.per_path or rule.tree_sums:
        raise ValueError(
            f"{fn} cannot be packed: its math reduces over each array (it is not elementwise), "
            "so leaves cannot share a buffer. Use it unpacked."
        )
    if cautious:
        raise ValueError(
            f"{fn} cannot be packed with cautious=True: the cautious mask rescales each array "
            "by its own count of kept entries. Use it unpacked."
        )


def check_plan(
    fn: str, plan: packing.Plan, treedef: Any, paths: Sequence[Any], grads: Sequence[Any]
) -> None:
    if treedef != plan.treedef and not _same_leaves(plan.treedef, treedef):
        raise ValueError(
            f"{fn}: the gradients and the packed state have different tree structures.\n"
            f"  gradients: {treedef}\n  state: {plan.treedef}"
        )
    for path, g, shape in zip(paths, grads, plan.shapes, strict=True):
        if tuple(jnp.shape(g)) != shape:
            raise ValueError(
                f"{fn}: the gradient at {where(path)} has shape {jnp.shape(g)} but the packed "
                f"state was made for shape {shape} (no broadcasting)"
            )


def _same_leaves(a: Any, b: Any) -> bool:
    """Whether two tree structures hold the same leaves in the same order, up to wrapper nodes
    on one side: ``flax.nnx.Optimizer`` calls ``init`` on ``Param`` variables (key path
    ``['kernel'].value``) and ``update`` on their arrays (``['kernel']``). Each leaf's key path
    on one side must be the other's with keys left out."""
    def paths(treedef: Any) -> list[tuple[Any, ...]]:
        tree = treedef.unflatten(range(treedef.num_leaves))
        return [tuple(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]

    def within(short: tuple[Any, ...], long: tuple[Any, ...]) -> bool:
        keys = iter(long)
        return all(any(k == other for other in keys) for k in short)

    if a.num_leaves != b.num_leaves:
        return False
    return all(within(x, y) or within(y, x) for x, y in zip(paths(a), paths(b), strict=True))


def warn_if_blind_to_sharding(fn: str, params: Any) -> None:
    """Packed and 8-bit states leave a leaf split over devices as it is, which ``init`` can
    see on concrete arrays and, under ``jit``, on explicitly sharded ones, but not on tracers
    of an automatic mesh: such a leaf would be packed or quantized, and every update would
    gather it."""
    if jax.device_count() == 1:
        return
    for x in jax.tree.leaves(params):
        if isinstance(x, jax.core.Tracer):
            mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
            axis_types = getattr(mesh, "axis_types", ())
            if not any(t == jax.sharding.AxisType.Explicit for t in axis_types):
                warnings.warn(
                    f"{fn}: init() under jit cannot see how the parameters are sharded (only "
                    "explicit-sharding meshes show it to a trace); a leaf split over devices "
                    "would be packed or quantized, and each update would gather it. Call "
                    "init() outside jit, on the placed parameters.", stacklevel=3)
                return


def layout_option(
    fn: str, tx: Any, min_size: Any, option: str, hint: str = "", **more: Any
) -> Any:
    """``tx`` rebuilt with the layout option ``option=min_size`` (and the options ``more``),
    both checked for ``fn``."""
    with_options = getattr(tx, "with_options", None)
    if with_options is None:
        raise TypeError(
            f"{fn}: expected a jadam optimizer (such as jadam.adam(1e-3)), got "
            f"{type(tx).__name__}.{hint}"
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ValueError(f"{fn}: min_size must be an integer >= 1, got {min_size!r}")
    return with_options(**{option: int(min_size)}, **more)


def check_state(fn: str, rule: Rule, state: Any, updates: Any) -> None:
    """That ``state`` is the state this optimizer's ``init`` makes (the inner state, for a
    packed one)."""
    if not isinstance(state, rule.state_type):
        raise TypeError(
            f"{fn}: update() got a state of type {type(state).__name__}, not the "
            f"{rule.state_type.__name__} that this optimizer's init() returns; was it "
            "made by another optimizer, or restored from a checkpoint without a template?"
        )
    for m in rule.moments:
        # (A moment of a tree that is None itself is None too.)
        if getattr(state, m.name) is None and updates is not None:
            raise TypeError(
                f"{fn}: the state has no {m.name!r}; it was made by an optimizer with other "
                "options (such as amsgrad=False). Call init() of this optimizer."
            )
