"""Layouts: how a rule's elementwise math is applied to a pytree of parameters.

:func:`per_leaf` is the plain layout: it maps a :class:`jadam.rule.Rule` over the leaves of the
gradient tree and returns an optax ``GradientTransformationExtraArgs``. One ``update`` reads
top to bottom, and each stage lives once, for every rule:

1. **checks** of tree structure, shapes and dtypes, at trace time (free under ``jit``), naming
   the leaf's key path (:mod:`jadam.checks`);
2. **per-step scalars**, once per step and per compute dtype, not per leaf: the step count
   (int32, saturating rather than wrapping), the learning rate (fixed or an optax schedule of
   the count), the weight decay, the rule's own scalars such as bias corrections
   (:meth:`jadam.rule.Rule.scalars`);
3. **each array through the kernel** (:func:`jadam.stages.leaf_update`): cast in, gradient
   transforms (``maximize``, coupled L2), the rule, direction transforms (cautious mask,
   decoupled decay, learning rate), cast out. Each leaf is computed in float32, or float64
   where a float64 array is involved, complex for complex leaves (:mod:`jadam.dtypes`); the
   update has the parameter's dtype (the gradient's when ``params`` is not passed);
4. **storage**: the new moments in the form ``init`` gave them.

Where the moments live is a codec (:mod:`jadam.codecs`) that wraps the kernel and encodes the
state at ``init``: :func:`jadam.packed` keeps the state of small leaves in a few flat buffers,
:func:`jadam.quantized` stores moments in 8 bits, and :func:`jadam.one_pass` computes a large
array's update from the old moments. The layout composes them without knowing what each does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jadam import checks, dtypes, hyperparams, one_pass, quantize, stages
from jadam.checks import Mask
from jadam.codecs import blockwise
from jadam.codecs import packed as packed_codec
from jadam.codecs.packed import PackedState
from jadam.hyperparams import F32, Schedule
from jadam.packing import Packed
from jadam.rule import Rule, Scalars

__all__ = ["Mask", "PackedState", "Rebuildable", "Transformation", "alias", "optimizer",
           "per_leaf", "rebuildable"]


class Rebuildable(optax.GradientTransformationExtraArgs):
    """An optax ``GradientTransformationExtraArgs`` that remembers the call that built it, and
    pickles (and deep-copies) as that call: its ``init`` and ``update`` are closures, which
    pickle cannot save, but the call's arguments can be (a learning-rate schedule only if it is
    itself picklable, as for optax's own transformations)."""

    # No __slots__: the instance keeps its recipe in __dict__, beside the (init, update) tuple.
    recipe: Callable[..., Any]

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.recipe,)


def _rebuild(recipe: Callable[[], Any]) -> Any:
    return recipe()


def rebuildable(init: Any, update: Any, recipe: Callable[..., Any]) -> Rebuildable:
    """``Rebuildable(init, update)`` remembering ``recipe``, a picklable call (a
    ``functools.partial``) that builds it again."""
    tx = Rebuildable(init, update)
    tx.recipe = recipe
    return tx


class Transformation(Rebuildable):
    """A jadam optimizer: a :class:`Rebuildable` whose recipe takes layout options, so that a
    wrapper such as :func:`jadam.cautious` can rebuild it with another option."""

    def with_options(self, **options: Any) -> Transformation:
        """The same optimizer with layout options (such as ``cautious=True``) changed."""
        return self.recipe(**options)


def per_leaf(
    rule: Rule,
    *,
    fn: str,
    learning_rate: F32 | Schedule | None = None,
    weight_decay: F32 | Schedule | None = None,
    decoupled: bool = False,
    mask: Mask | None = None,
    maximize: bool = False,
    cautious: bool = False,
    packing_min_size: int | None = None,
    quantize_min_size: int | None = None,
    quantize_bits: int = 8,
    one_pass_min_size: int | None = None,
) -> Transformation:
    """Applies ``rule`` to each leaf of a pytree.

    Args:
      rule: the optimizer's math.
      fn: the public name of the alias, for error messages, e.g. ``"jadam.adam"``.
      learning_rate: validated float32 value or schedule; ``None`` returns the rule's direction
        itself (the ``scale_by_*`` building blocks), otherwise the update is ``-lr * direction``.
      weight_decay: validated float32 value or schedule; ``None`` for none.
      decoupled: decoupled (AdamW) rather than coupled (L2 added to the gradient) weight decay.
      mask: a tree of booleans with the structure of the parameters (or a prefix of it), or a
        function of the parameters returning one; weight decay applies where it is ``True``.
      maximize: ascend rather than descend.
      cautious: zero the direction where its sign disagrees with the gradient's and rescale
        the rest, as in :func:`jadam.cautious`.
      packing_min_size: keep the state of leaves smaller than this many elements packed, as
        in :func:`jadam.packed`; ``None`` for one state array per leaf.
      quantize_min_size: store moment arrays (or packed buffers) of at least this many
        elements in ``quantize_bits`` (8 or 4) bits, as in :func:`jadam.quantized`; ``None``
        to keep their dtypes.
      one_pass_min_size: for arrays of at least this many elements, compute the update from
        the old moments, as in :func:`jadam.one_pass`; ``None`` for the plain formula.

    Returns:
      A :class:`Transformation` whose state is ``rule.state_type``, or a :class:`PackedState`
      around it when packed.
    """
    decays = weight_decay is not None and not hyperparams.is_zero(weight_decay)
    if learning_rate is None and (rule.takes_learning_rate or (decays and decoupled)):
        raise ValueError(f"{fn}: needs a learning rate")
    if packing_min_size is not None:
        checks.check_packable(fn, rule, cautious)
    options = stages.Options.of(rule, has_lr=learning_rate is not None, decays=decays,
                                decoupled=decoupled, maximize=maximize, cautious=cautious)

    def kernel(step_scalars: Callable[[Any], Scalars]) -> blockwise.Kernel:
        """One array's update, the stages of jadam.stages inside the storage codecs."""
        k: blockwise.Kernel = functools.partial(
            stages.leaf_update, step_scalars=step_scalars, options=options)
        k = blockwise.wrap(k, chunkable=not cautious)
        if one_pass_min_size is not None:
            k = one_pass.wrap(k, min_size=one_pass_min_size)
        elif not cautious:  # (the cautious mask sums over the array: not one loop)
            k = one_pass.automatic(k)
        return k

    fmt = quantize.FORMATS[quantize_bits]

    def init(params: optax.Params) -> Any:
        for path, p in jax.tree_util.tree_leaves_with_path(params):
            checks.check_param(fn, path, p, rule)

        def moment(i: int, path: Any, p: Any) -> jax.Array:
            return dtypes.init_moment(fn, path, rule.for_leaf(path, jnp.shape(p)).moments[i], p)

        moments = {
            m.name: jax.tree_util.tree_map_with_path(functools.partial(moment, i), params)
            for i, m in enumerate(rule.moments)
        }
        # Scalars carried between steps: float64 if a parameter is (with x64), as its steps.
        wide = any(dtypes.is_wide(p) for p in jax.tree.leaves(params))
        carry_dtype = jnp.float64 if wide else jnp.float32
        carry = {k: jnp.asarray(v, carry_dtype) for k, v in rule.carry_init().items()}
        count = jnp.zeros([], jnp.int32)
        if packing_min_size is not None or quantize_min_size is not None:
            checks.warn_if_blind_to_sharding(fn, params)
        if packing_min_size is None:
            if quantize_min_size is not None:
                moments = {k: blockwise.encode_tree(rule, i, v, quantize_min_size, fmt)
                           for i, (k, v) in enumerate(moments.items())}
            return rule.state_type(count=count, **moments, **carry)
        treedef: Any = jax.tree.structure(params)
        decay_leaf = (checks.decay_mask(fn, treedef, params, params, mask) if decays
                      else [False] * treedef.num_leaves)
        buffers, index = packed_codec.init(params, moments, decay_leaf, packing_min_size)
        if quantize_min_size is not None:
            buffers = {k: blockwise.encode_packed(rule.moments[i], v, quantize_min_size, fmt)
                       for i, (k, v) in enumerate(buffers.items())}
        return PackedState(rule.state_type(count=count, **buffers, **carry), index)

    def update(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        del extra_args
        # 1. Checks: the state, the trees, the params the optimizer needs.
        index = None
        if packing_min_size is not None:
            state, index = packed_codec.open_state(fn, state)
        checks.check_state(fn, rule, state, updates)
        flat, treedef_ = jax.tree_util.tree_flatten_with_path(updates)
        treedef: Any = treedef_
        paths = [path for path, _ in flat]
        grads = [dtypes.as_array(g) for _, g in flat]
        if index is None:
            moments = {m.name: checks.flatten_as(fn, treedef, getattr(state, m.name),
                                                 f"state.{m.name}") for m in rule.moments}
        else:
            checks.check_plan(fn, index.plan, treedef, paths, grads)
            moments = {m.name: list(getattr(state, m.name).leaves) for m in rule.moments}
        if params is None:
            # A weight decay that is an array (optax.inject_hyperparams makes the default 0 one)
            # may be 0 at run time: then the optimizer works without params, as it does with the
            # number 0, and a nonzero value makes that step's updates NaN (jadam.stages).
            needs_decay_params = weight_decay is not None and decays and (
                callable(weight_decay) or hyperparams.known(weight_decay) not in (None, 0.0))
            if (rule.needs_params or needs_decay_params) and treedef.num_leaves:
                raise ValueError(
                    f"{fn}: update() needs params (pass tx.update(grads, state, params))"
                )
            flat_params: Sequence[Any] = [None] * len(grads)
        else:
            flat_params = [dtypes.as_array(p)
                           for p in checks.flatten_as(fn, treedef, params, "params")]
        decay_leaf = checks.decay_mask(fn, treedef, updates, params, mask) if decays else None

        # 2. Per-step scalars, in every dtype a leaf computes in and in the carry's (init chose
        # it), once per step at the top level (inside the chunked 8-bit loop they would be that
        # loop's tracers).
        count = optax.safe_increment(state.count)
        carry_dtype = jnp.dtype(jnp.result_type(getattr(state, next(iter(rule.carry_init()))))
                                if rule.carry_init() else jnp.float32)
        arrays = [*grads, *flat_params,
                  *jax.tree.leaves([getattr(state, m.name) for m in rule.moments])]
        wide = any(x is not None and dtypes.is_wide(x) for x in arrays)
        needed = {jnp.dtype(jnp.float32), carry_dtype,
                  *([jnp.dtype(jnp.float64)] if wide else [])}
        computed = {dtype: _step_scalars(rule, state, count, dtype, learning_rate,
                                         weight_decay if decays else None)
                    for dtype in needed}

        def step_scalars(dtype: Any) -> Scalars:
            return computed[jnp.dtype(dtype)][0]

        # 3. Each array through the kernel: the leaves one by one, packed buffers as wholes.
        leaf_update = kernel(step_scalars)
        new_updates: list[Any] = [None] * len(grads)  # a packed leaf's from its buffer below
        new_moments: dict[str, list[Any]] = {m.name: [None] * len(grads) for m in rule.moments}
        sums: dict[str, list[Any]] = {k: [] for k in rule.tree_sums}
        leaves: list[blockwise.Leaf] = []
        for i, (path, g, p) in enumerate(zip(paths, grads, flat_params, strict=True)):
            state_i = {name: leaves_[i] for name, leaves_ in moments.items()}
            leaf_rule = rule.for_leaf(path, jnp.shape(g))
            checks.check_leaf(fn, path, g, p, state_i, leaf_rule.moments)
            if index is None or index.plan.slots[i] is None:
                leaves.append(blockwise.Leaf(i, leaf_rule, g, p, state_i,
                                             decay_leaf is not None and decay_leaf[i]))
        # Small quantized leaves alike in shape go through the kernel together (one kernel to
        # compile for all of them), the others one by one.
        for i, u, new in blockwise.update_leaves(leaf_update, leaves):
            new_updates[i] = u
            for name, value in new.items():
                if name in sums:
                    sums[name].append(value)
                else:
                    new_moments[name][i] = value

        # 4. The new state, in the form init gave it.
        if index is None:
            moment_trees = {k: treedef.unflatten(v) for k, v in new_moments.items()}
        else:
            buffers = packed_codec.update_buffers(rule, leaf_update, index, grads, flat_params,
                                                  state, decay_leaf, new_updates)
            moment_trees = {k: Packed(buffers[k], tuple(v)) for k, v in new_moments.items()}
        carry = {k: v.astype(carry_dtype) for k, v in computed[carry_dtype][1].items()}
        if rule.tree_sums:  # the sums over the whole tree, for the next step's carry
            totals = {k: sum((x.astype(carry_dtype) for x in v), jnp.zeros((), carry_dtype))
                      for k, v in sums.items()}
            carry = {k: v.astype(carry_dtype) for k, v in
                     rule.after(step_scalars(carry_dtype), carry, totals).items()}
        new_state = rule.state_type(count=count, **moment_trees, **carry)
        if index is not None:
            new_state = PackedState(new_state, index)
        return treedef.unflatten(new_updates), new_state

    tx = Transformation(init, update)
    tx.recipe = functools.partial(
        per_leaf, rule, fn=fn, learning_rate=learning_rate, weight_decay=weight_decay,
        decoupled=decoupled, mask=mask, maximize=maximize, cautious=cautious,
        packing_min_size=packing_min_size, quantize_min_size=quantize_min_size,
        quantize_bits=quantize_bits, one_pass_min_size=one_pass_min_size,
    )
    return tx


def _step_scalars(
    rule: Rule, state: Any, count: jax.Array, dtype: Any, learning_rate: Any, weight_decay: Any,
) -> tuple[Scalars, dict[str, jax.Array]]:
    """The per-step scalars and the new carry in ``dtype``: float32 for float32 (and narrower)
    leaves, float64 for float64 ones (with x64 enabled), from the hyperparameters as given,
    not as rounded to float32. ``weight_decay`` is ``None`` where there is none."""
    hp = dict(rule.hyperparams)
    if learning_rate is not None:
        hp["learning_rate"] = hyperparams.value_at(learning_rate, state.count, dtype)
    if weight_decay is not None:
        hp["weight_decay"] = hyperparams.value_at(weight_decay, state.count, dtype)
    hp = hyperparams.opaque(hp, state.count, dtype)
    given = Scalars(hp, learning_rate=hp.pop("learning_rate", None),
                    weight_decay=hp.pop("weight_decay", None))
    carry = {k: getattr(state, k).astype(dtype) for k in rule.carry_init()}
    own, new_carry = rule.scalars(given, count.astype(dtype), carry)
    # Computed once, read by every leaf's loop (hyperparams.per_step).
    values = hyperparams.per_step(
        {**hp, **own, "learning_rate": given.learning_rate, "weight_decay": given.weight_decay},
        state.count)
    return Scalars(values, learning_rate=values.pop("learning_rate"),
                   weight_decay=values.pop("weight_decay")), dict(new_carry)


#: The arguments of a full optimizer that the layout takes; the others are its block's.
_LAYOUT_ARGS = ("learning_rate", "weight_decay", "decoupled_weight_decay", "mask", "maximize")


def alias(
    fn: str,
    scale_by: Callable[..., optax.GradientTransformationExtraArgs],
    args: Mapping[str, Any],
    *,
    decoupled: bool = False,
    cautious: bool = False,
) -> Transformation:
    """A full optimizer (the ``<name>(learning_rate, ...)`` aliases) from its building block.

    ``args`` are the alias's arguments as it was called (its ``locals()``): the learning rate,
    the weight decay (decoupled if ``decoupled`` or the argument ``decoupled_weight_decay``
    says so), its ``mask`` and ``maximize`` go to the layout, validated as the user gave them;
    the others build ``scale_by``, whose errors then name ``fn``."""
    with hyperparams.call(fn):
        block = scale_by(**{k: v for k, v in args.items() if k not in _LAYOUT_ARGS})
    assert isinstance(block, Transformation), scale_by
    return block.with_options(**_full_options(
        fn, args["learning_rate"], args.get("weight_decay"),
        decoupled=decoupled or bool(args.get("decoupled_weight_decay", False)),
        mask=args.get("mask"), maximize=args.get("maximize", False), cautious=cautious))


def _full_options(
    fn: str, learning_rate: Any, weight_decay: Any, *, decoupled: bool, mask: Mask | None,
    maximize: bool, cautious: bool,
) -> dict[str, Any]:
    """The :func:`per_leaf` options of a full optimizer, its learning rate and weight decay
    validated as the user gave them (for :func:`alias` and :func:`optimizer`)."""
    return {
        "fn": fn,
        "learning_rate": hyperparams.learning_rate(fn, learning_rate),
        "weight_decay": None if weight_decay is None
        else hyperparams.scalar_or_schedule(fn, "weight_decay", weight_decay),
        "decoupled": decoupled,
        "mask": mask,
        "maximize": bool(maximize),
        "cautious": cautious,
    }


def optimizer(
    rule: Rule,
    *,
    fn: str,
    learning_rate: Any,
    weight_decay: Any = None,
    decoupled: bool = False,
    mask: Mask | None = None,
    maximize: bool = False,
    cautious: bool = False,
) -> Transformation:
    """A full optimizer straight from its rule, for the rules that apply the learning rate
    themselves and so have no ``scale_by_*`` block (Adafactor, Schedule-Free; the others use
    :func:`alias`): validates the learning rate and weight decay as the user gave them, then
    applies ``rule`` with :func:`per_leaf`."""
    return per_leaf(rule, **_full_options(fn, learning_rate, weight_decay, decoupled=decoupled,
                                          mask=mask, maximize=maximize, cautious=cautious))
