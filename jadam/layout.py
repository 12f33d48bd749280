"""Layouts: how a rule's elementwise math is applied to a pytree of parameters.

:func:`per_leaf` is the plain layout: it maps a :class:`jadam.rule.Rule` over the leaves of the
gradient tree and returns an optax ``GradientTransformationExtraArgs``. Everything that does not
depend on the optimizer lives here, once, for every rule:

* the step count (int32, saturating rather than wrapping) and the 1-based float32 step number the
  bias corrections read;
* the learning rate, fixed or an optax schedule of the count (0 on the first update);
* weight decay, coupled (added to the gradient, as in Kingma & Ba and ``torch.optim.Adam``) or
  decoupled (``-lr * weight_decay * p``, as in Loshchilov & Hutter and ``torch.optim.AdamW``),
  with an optional mask;
* ``maximize`` (the gradient is negated first, as in torch.optim);
* ``cautious``: the direction is zeroed where it disagrees in sign with the gradient (Liang et
  al., 2024), see :func:`jadam.cautious`;
* dtypes: each leaf is computed in float32, or float64 where a float64 array is involved; the
  moments are stored in the dtype ``init`` gave them, and the update has the parameter's dtype
  (the gradient's when ``params`` is not passed). A complex leaf is computed in complex64 (or
  complex128), its magnitudes (second moments) and the scalars in float32 (or float64), by the
  convention of :mod:`jadam.rule`;
* checks of tree structure, shapes and dtypes, at trace time (free under ``jit``), naming the
  leaf's key path.

Two options change where the state lives, never the math: :func:`packed` keeps the state of
small leaves in a few flat buffers (:mod:`jadam.packing`) and :func:`quantized` stores moments
in 8 bits (:mod:`jadam.quantize`); the rule then runs on whole buffers or on decoded arrays.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jadam import hyperparams, packing, quantize
from jadam.hyperparams import F32, Schedule
from jadam.packing import Packed, PackIndex
from jadam.rule import LEARNING_RATE as _LR
from jadam.rule import WEIGHT_DECAY as _DECAY
from jadam.rule import Moment, Rule

Mask = Any | Callable[[optax.Params], Any]


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
        elements in 8 bits, as in :func:`jadam.quantized`; ``None`` to keep their dtypes.
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
        _check_packable(fn, rule, cautious)

    def init(params: optax.Params) -> Any:
        for path, p in jax.tree_util.tree_leaves_with_path(params):
            _check_param(fn, path, p, rule)

        def moment(i: int, path: Any, p: Any) -> jax.Array:
            return _init_moment(fn, path, rule.for_leaf(path, jnp.shape(p)).moments[i], p)

        moments = {
            m.name: jax.tree_util.tree_map_with_path(functools.partial(moment, i), params)
            for i, m in enumerate(rule.moments)
        }
        # Scalars carried between steps: float64 if a parameter is (with x64), as its steps.
        wide = any(_is_wide(p) for p in jax.tree.leaves(params))
        carry_dtype = jnp.float64 if wide else jnp.float32
        carry = {k: jnp.asarray(v, carry_dtype) for k, v in rule.carry_init().items()}
        if packing_min_size is not None or quantize_min_size is not None:
            _warn_if_blind_to_sharding(fn, params)
        if packing_min_size is None:
            if quantize_min_size is not None:
                moments = {k: _quantize_tree(rule, i, v, quantize_min_size)
                           for i, (k, v) in enumerate(moments.items())}
            return rule.state_type(count=jnp.zeros([], jnp.int32), **moments, **carry)
        leaves, treedef = jax.tree.flatten(params)
        decay_leaf = (_decay_mask(fn, treedef, params, params, mask) if decays
                      else [False] * len(leaves))
        flat_moments = {k: treedef.flatten_up_to(v) for k, v in moments.items()}

        def group(i: int) -> Any:
            # Leaves share a buffer when they are computed alike: same moment dtypes, same decay,
            # both real or both complex.
            return (tuple(jnp.result_type(v[i]) for v in flat_moments.values()), decay_leaf[i],
                    jnp.iscomplexobj(leaves[i]))

        plan = packing.make_plan(leaves, treedef, min_size=packing_min_size, key=group)
        packed = {k: packing.pack_leaves(plan, v) for k, v in flat_moments.items()}
        if quantize_min_size is not None:
            packed = {k: _quantize_packed(rule.moments[i], v, quantize_min_size)
                      for i, (k, v) in enumerate(packed.items())}
        inner = rule.state_type(count=jnp.zeros([], jnp.int32), **packed, **carry)
        return PackedState(inner, PackIndex.of(plan))

    def update(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        del extra_args
        index = None
        if packing_min_size is not None:
            if not isinstance(state, PackedState):
                raise TypeError(
                    f"{fn}: update() got a state of type {type(state).__name__}, not the "
                    "PackedState that this packed optimizer's init() returns"
                )
            state, index = state
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
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        paths = [path for path, _ in flat]
        grads = [_as_array(g) for _, g in flat]
        if index is None:
            moments = {m.name: _flatten_as(fn, treedef, getattr(state, m.name),
                                           f"state.{m.name}") for m in rule.moments}
        else:
            _check_plan(fn, index.plan, treedef, paths, grads)
            moments = {m.name: list(getattr(state, m.name).leaves) for m in rule.moments}
        if params is None:
            # A weight decay that is an array (optax.inject_hyperparams makes the default 0 one)
            # may be 0 at run time: then the optimizer works without params, as it does with the
            # number 0, and a nonzero value makes that step's updates NaN (_leaf_update).
            needs_decay_params = decays and (
                callable(weight_decay) or hyperparams.known(weight_decay) not in (None, 0.0))
            if (rule.needs_params or needs_decay_params) and treedef.num_leaves:
                raise ValueError(
                    f"{fn}: update() needs params (pass tx.update(grads, state, params))"
                )
            flat_params: Sequence[Any] = [None] * len(grads)
        else:
            flat_params = [_as_array(p) for p in _flatten_as(fn, treedef, params, "params")]
        decay_leaf = _decay_mask(fn, treedef, updates, params, mask) if decays else None

        count = optax.safe_increment(state.count)
        def scalars_in(dtype: Any) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
            """The per-step scalars and the new carry in ``dtype``: float32 for float32 (and
            narrower) leaves, float64 for float64 ones (with x64 enabled), from the
            hyperparameters as given, not as rounded to float32."""
            hp = dict(rule.hyperparams)
            if learning_rate is not None:
                hp["learning_rate"] = hyperparams.value_at(learning_rate, state.count, dtype)
            if decays:
                hp["weight_decay"] = hyperparams.value_at(weight_decay, state.count, dtype)
            hp = hyperparams.opaque(hp, state.count, dtype)
            carry = {k: getattr(state, k).astype(dtype) for k in rule.carry_init()}
            scalars, carry = rule.scalars(hp, count.astype(dtype), carry)
            if learning_rate is not None:
                scalars[_LR] = hp["learning_rate"]
            if decays:
                scalars[_DECAY] = hp["weight_decay"]
            return scalars, carry

        # Every dtype a leaf computes in, and the carry's (init chose it), once per step at the
        # top level (inside the chunked 8-bit loop they would be that loop's tracers).
        carry_dtype = jnp.dtype(jnp.result_type(getattr(state, next(iter(rule.carry_init()))))
                                if rule.carry_init() else jnp.float32)
        arrays = [*grads, *flat_params,
                  *jax.tree.leaves([getattr(state, m.name) for m in rule.moments])]
        wide = any(x is not None and _is_wide(x) for x in arrays)
        dtypes = {jnp.dtype(jnp.float32), carry_dtype, *([jnp.dtype(jnp.float64)] if wide else [])}
        computed = {dtype: scalars_in(dtype) for dtype in dtypes}

        def step_scalars(dtype: Any) -> dict[str, jax.Array]:
            return dict(computed[jnp.dtype(dtype)][0])

        leaf_update = functools.partial(
            _coded_update, step_scalars=step_scalars, has_lr=learning_rate is not None,
            decoupled=decoupled, maximize=maximize, cautious=cautious,
            one_pass_min_size=one_pass_min_size,
        )
        new_updates: list[Any] = []
        new_moments: dict[str, list[Any]] = {m.name: [] for m in rule.moments}
        for i, (path, g, p) in enumerate(zip(paths, grads, flat_params, strict=True)):
            state_i = {name: leaves[i] for name, leaves in moments.items()}
            leaf_rule = rule.for_leaf(path, jnp.shape(g))
            _check_leaf(fn, path, g, p, state_i, leaf_rule.moments)
            if index is not None and index.plan.slots[i] is not None:
                new_updates.append(None)  # filled from its buffer below
                for name in new_moments:
                    new_moments[name].append(None)
                continue
            u, new = leaf_update(leaf_rule, g=g, state=state_i, p=p,
                                 decay=decay_leaf is not None and decay_leaf[i])
            new_updates.append(u)
            for name, value in new.items():
                new_moments[name].append(value)

        if index is None:
            moment_trees = {k: treedef.unflatten(v) for k, v in new_moments.items()}
        else:
            buffers = _packed_update(rule, leaf_update, index, grads, flat_params, state,
                                     decay_leaf, new_updates)
            moment_trees = {k: Packed(buffers[k], tuple(v)) for k, v in new_moments.items()}
        carry = {k: v.astype(carry_dtype) for k, v in computed[carry_dtype][1].items()}
        new_state = rule.state_type(count=count, **moment_trees, **carry)
        if index is not None:
            new_state = PackedState(new_state, index)
        return treedef.unflatten(new_updates), new_state

    tx = Transformation(init, update)
    tx.recipe = functools.partial(
        per_leaf, rule, fn=fn, learning_rate=learning_rate, weight_decay=weight_decay,
        decoupled=decoupled, mask=mask, maximize=maximize, cautious=cautious,
        packing_min_size=packing_min_size, quantize_min_size=quantize_min_size,
        one_pass_min_size=one_pass_min_size,
    )
    return tx


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
    """A full optimizer (the ``<name>(learning_rate, ...)`` aliases): validates the learning
    rate and weight decay as the user gave them, then applies ``rule`` with :func:`per_leaf`."""
    return per_leaf(
        rule,
        fn=fn,
        learning_rate=hyperparams.learning_rate(fn, learning_rate),
        weight_decay=None if weight_decay is None
        else hyperparams.scalar_or_schedule(fn, "weight_decay", weight_decay),
        decoupled=decoupled,
        mask=mask,
        maximize=bool(maximize),
        cautious=cautious,
    )


class PackedState(NamedTuple):
    """The state of a packed optimizer (:func:`jadam.packed`).

    Attributes:
      inner: the optimizer's own state type, whose moments are :class:`jadam.packing.Packed`:
        one flat buffer per group of small leaves, and the large leaves as they are.
      index: where each leaf lives (offsets as int32 scalars, see
        :class:`jadam.packing.PackIndex`).
    """

    inner: Any
    index: PackIndex

    def unpacked(self) -> Any:
        """The optimizer's own state with every moment as a tree shaped like the parameters,
        as the unpacked optimizer would hold it (for reading; update() takes the packed one).
        """
        treedef = self.index.plan.treedef
        return self.inner._replace(**{
            name: treedef.unflatten(packing.unpack_leaves(self.index, value))
            for name, value in self.inner._asdict().items() if isinstance(value, Packed)
        })


def _packed_update(
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
        wide = any(x is not None and _is_wide(x) for x in buffers.values()) or any(
            _is_wide(x) for i in members for x in (grads[i], params[i]) if x is not None
        )
        dtype = _compute_dtype(jnp.float64 if wide else jnp.float32,
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

    Works for every elementwise jadam optimizer (all but LAMB, MARS, Adafactor and Adam-mini,
    whose math reduces over each array, and cautious variants, which rescale each array; these
    raise ``ValueError``). The state is a :class:`jadam.PackedState`;
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
    return _with_layout(
        "jadam.packed", tx, min_size, "packing_min_size",
        hint=" For other transformations, pack the parameters themselves with jadam.pack, and "
             "optimize the packed tree.",
    )



def quantized(tx: Any, *, min_size: int = quantize.MIN_SIZE) -> Any:
    """The optimizer ``tx`` with its moments stored in 8 bits, block-wise (Dettmers et al.,
    2022; see :mod:`jadam.quantize`): Adam's state drops from 8 to about 2.03 bytes per
    parameter.

    Each moment array of at least ``min_size`` elements is stored as uint8 codes and one
    float32 scale per 256 elements; moments that are never negative (second moments,
    accumulators) use the unsigned map, the others the signed one. Smaller arrays, moments
    that are copies of the parameters (Schedule-Free's ``z``) and factored moments
    (Adafactor's) keep their dtype. Each step decodes the moments to float32, applies the
    optimizer's unchanged math, and encodes the result, all in plain ``jnp`` (CPU, GPU and
    TPU alike). Works with :func:`jadam.packed` (the packed buffers are then quantized), in
    ``optax.chain`` and under ``jit``/``vmap``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> tx = jadam.quantized(jadam.adam(1e-3))
      >>> state = tx.init({"w": jnp.zeros((1024, 1024))})
      >>> state.mu["w"].dtype, state.mu["w"].shape  # 4,096 blocks of 256 codes and a scale
      (dtype('uint8'), (4096, 260))

    Args:
      tx: a jadam optimizer.
      min_size: moments with fewer elements stay unquantized.
    """
    return _with_layout("jadam.quantized", tx, min_size, "quantize_min_size")


def one_pass(tx: Any, *, min_size: int = 1 << 20) -> Any:
    """The optimizer ``tx`` with each large array's update computed from the *old* moments,
    so that XLA can update the parameter and the moments in one pass over memory.

    An elementwise optimizer must read the parameter, gradient and moments and write the
    parameter and moments: for Adam in float32, 28 bytes per parameter at least. XLA
    compiles the plain formula (and optax's) into three loops, one per output, the parameter
    loop reading the new moments back: about 40 bytes. Here the rule runs twice on the same
    old inputs, once for the new moments and once, on inputs multiplied by a 1 hidden behind
    ``lax.optimization_barrier`` (exact; it stops XLA from merging the two), for the update.
    With ``optax.apply_updates`` in the same jitted step, all three outputs then read only the
    four inputs, and XLA can fuse them into one loop with three outputs.

    The arithmetic is that of ``tx``, operation for operation. On a CPU without fused
    multiply-add (or with ``XLA_FLAGS=--xla_cpu_max_isa=AVX``) the results are bit for bit
    those of ``tx`` (tested for every optimizer). With FMA, LLVM contracts ``a * b + c * d``
    into ``fma(a, b, c * d)`` or ``fma(c, d, a * b)`` depending on the order in which the loop
    loads its inputs, which differs between the fused loop and the plain ones: the moments
    may then differ by 1 ulp (as ``tx`` itself may differ between two ways of compiling it).

    On CPU, XLA fuses those loops only when the process starts with
    ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion`` (set before
    JAX's first computation). Without it the duplicated arithmetic makes the step several
    times *slower*, so on CPU without the flag this returns ``tx`` unchanged, with a warning.
    Measured on CPU only (``bench/README.md``); GPU and TPU fuse sibling loops by default.

    Args:
      tx: a jadam optimizer.
      min_size: arrays with fewer elements keep the plain formula (below about a million
        elements the loop count matters little).
    """
    fused = _with_layout("jadam.one_pass", tx, min_size, "one_pass_min_size")
    if jax.default_backend() == "cpu" and not _cpu_fuses_siblings():
        warnings.warn(
            "jadam.one_pass: XLA:CPU fuses the update into one pass only with "
            "XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion set "
            "before JAX starts; without it the update would be slower, so it is left as it "
            "is.", stacklevel=2,
        )
        return tx
    return fused


def _cpu_fuses_siblings() -> bool:
    return "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", "")


def _with_layout(fn: str, tx: Any, min_size: Any, option: str, hint: str = "") -> Any:
    """``tx`` rebuilt with the layout option ``option=min_size``, both checked for ``fn``."""
    with_options = getattr(tx, "with_options", None)
    if with_options is None:
        raise TypeError(
            f"{fn}: expected a jadam optimizer (such as jadam.adam(1e-3)), got "
            f"{type(tx).__name__}.{hint}"
        )
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ValueError(f"{fn}: min_size must be an integer >= 1, got {min_size!r}")
    return with_options(**{option: int(min_size)})


def _coded_update(
    rule: Rule, *, g: jax.Array, state: dict[str, Any], one_pass_min_size: int | None,
    **kwargs: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """:func:`_leaf_update` with 8-bit moments decoded to float32 before the rule and encoded
    after it, or, for a large array under :func:`one_pass`, run twice (see there)."""
    coded = {m.name: not m.nonnegative for m in rule.moments
             if quantize.is_quantized(state[m.name])}  # name -> signed map?
    if one_pass_min_size is not None and not coded and g.size >= one_pass_min_size:
        _, new = _leaf_update(rule, g=g, state=state, **kwargs)
        # The same update from the same old inputs, each times a 1 that XLA cannot see
        # through: exact, and it keeps XLA from merging this chain back into the one above.
        # (A barrier around the arrays themselves would do on CPU, but on GPU XLA removes
        # barriers only after fusion, so the two loops would not look like siblings.)
        p = kwargs.pop("p")
        g, p, state = jax.tree.map(_times_opaque_one, (g, p, state))
        update, _ = _leaf_update(rule, g=g, state=state, p=p, **kwargs)
        return update, new
    if not coded:
        return _leaf_update(rule, g=g, state=state, **kwargs)
    if (2 * _CHUNK <= g.size < 2**31 - _CHUNK and rule.elementwise
            and type(rule).for_leaf is Rule.for_leaf and not kwargs["cautious"] and _one_cpu()):
        return _chunked_coded_update(rule, coded, g=g, state=state, **kwargs)
    shape = jnp.shape(g)
    decoded = {k: quantize.dequantize(v, shape, signed=coded[k]) if k in coded else v
               for k, v in state.items()}
    u, new = _leaf_update(rule, g=g, state=decoded, **kwargs)
    return u, {k: quantize.quantize(v, signed=coded[k], previous=decoded[k]) if k in coded
               else v for k, v in new.items()}


#: Elements per chunk of a large 8-bit leaf's update on CPU: 1,024 blocks, 1 MB per float32
#: array (on one 10M leaf, 64 to 4,096 blocks all beat the whole array; 1,024 was fastest).
_CHUNK = 1024 * quantize.BLOCK


def _one_cpu() -> bool:
    """Whether computations run on one CPU device, where :func:`_chunked_coded_update` pays.
    (With several devices a state may be split over them, and a loop of dynamic slices would
    cut across the shards; GPUs and TPUs run the whole-array kernels well.)"""
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def _chunked_coded_update(
    rule: Rule, coded: dict[str, bool], *, g: jax.Array, state: dict[str, Any],
    p: jax.Array | None, **kwargs: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """:func:`_coded_update` of an elementwise rule, one chunk of whole blocks at a time in a
    loop. On the whole array XLA:CPU writes the decoded and the new float32 moments out before
    encoding them (Adam on one 10M leaf: 239 MB of temporaries; 59 MB chunked); a chunk's
    stay in cache. The same arithmetic on the same blocks: there 1.8x faster, and bit for bit
    the same results on a CPU without FMA (``tests/test_quantize.py``)."""
    shape, n = jnp.shape(g), g.size
    blocks_per = _CHUNK // quantize.BLOCK
    chunks = n // _CHUNK
    flat = {k: jnp.ravel(v) for k, v in state.items() if k not in coded}

    def part(start: Any, size: int, q_start: Any, q_size: int, carry: Any) -> Any:
        update, codes = carry
        piece = lambda x: lax.dynamic_slice_in_dim(x, start, size)  # noqa: E731
        st = {k: piece(v) for k, v in flat.items()}
        for k, signed in coded.items():
            q = lax.dynamic_slice_in_dim(state[k], q_start, q_size)
            st[k] = quantize.dequantize(q, (size,), signed=signed)
        u, new = _leaf_update(rule, g=piece(jnp.ravel(g)), state=st,
                              p=None if p is None else piece(jnp.ravel(p)), **kwargs)
        update = lax.dynamic_update_slice_in_dim(update, u, start, 0)
        out = {}
        for k, v in codes.items():
            if k in coded:
                q = quantize.quantize(new[k], signed=coded[k], previous=st[k])
                out[k] = lax.dynamic_update_slice_in_dim(v, q, q_start, 0)
            else:
                out[k] = lax.dynamic_update_slice_in_dim(v, new[k], start, 0)
        return update, out

    out_dtype = g.dtype if p is None else p.dtype
    # Read from the old state, written into new buffers: a loop that reads and writes the same
    # buffer makes XLA copy it every iteration.
    carry = (jnp.zeros(n, out_dtype), {
        **{k: jnp.zeros_like(v) for k, v in flat.items()},
        **{k: jnp.zeros_like(state[k]) for k in coded}})
    carry = lax.fori_loop(
        0, chunks,
        lambda i, c: part(i * _CHUNK, _CHUNK, i * blocks_per, blocks_per, c), carry)
    rest = n - chunks * _CHUNK
    if rest:
        blocks = state[next(iter(coded))].shape[0]
        carry = part(chunks * _CHUNK, rest, chunks * blocks_per, blocks - chunks * blocks_per,
                     carry)
    update, out = carry
    return update.reshape(shape), {
        k: v if k in coded else v.reshape(shape) for k, v in out.items()}


def _times_opaque_one(x: jax.Array) -> jax.Array:
    return x * lax.optimization_barrier(jnp.ones((), x.dtype))


def _quantizable(m: Moment, x: Any, min_size: int) -> bool:
    # (A complex moment keeps its dtype: the 8-bit maps are of real numbers.)
    return (not isinstance(m.init, str) and m.shape is None and x.size >= min_size
            and not jnp.iscomplexobj(x))


def _quantize_tree(rule: Rule, i: int, tree: Any, min_size: int) -> Any:
    def leaf(path: Any, x: jax.Array) -> Any:
        m = rule.for_leaf(path, jnp.shape(x)).moments[i]
        # Blocks of a flattened array split over devices would straddle the shards; such a
        # leaf keeps its moments as they are, split like it (as packing leaves it unpacked).
        if not _quantizable(m, x, min_size) or packing.is_split_across_devices(x):
            return x
        return quantize.quantize(x, signed=not m.nonnegative)
    return jax.tree_util.tree_map_with_path(leaf, tree)


def _quantize_packed(m: Moment, value: Packed, min_size: int) -> Packed:
    def one(x: Any) -> Any:
        if x is None or not _quantizable(m, x, min_size):
            return x
        return quantize.quantize(x, signed=not m.nonnegative)
    return Packed(tuple(one(b) for b in value.buffers), tuple(one(x) for x in value.leaves))


def _check_packable(fn: str, rule: Rule, cautious: bool) -> None:
    if not rule.elementwise or type(rule).for_leaf is not Rule.for_leaf:
        raise ValueError(
            f"{fn} cannot be packed: its math reduces over each array (it is not elementwise), "
            "so leaves cannot share a buffer. Use it unpacked."
        )
    if cautious:
        raise ValueError(
            f"{fn} cannot be packed with cautious=True: the cautious mask rescales each array "
            "by its own count of kept entries. Use it unpacked."
        )


def _check_plan(
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
                f"{fn}: the gradient at {_where(path)} has shape {jnp.shape(g)} but the packed "
                f"state was made for shape {shape} (no broadcasting)"
            )


def _warn_if_blind_to_sharding(fn: str, params: Any) -> None:
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


def _leaf_update(
    rule: Rule,
    step_scalars: Callable[[Any], dict[str, jax.Array]],
    g: jax.Array,
    state: dict[str, jax.Array],
    p: jax.Array | None,
    *,
    has_lr: bool,
    decay: bool,
    decoupled: bool,
    maximize: bool,
    cautious: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One leaf: cast in, the rule, learning rate and weight decay, cast out."""
    with _complex_arithmetic(jnp.iscomplexobj(g)):
        return _leaf_math(rule, step_scalars, g, state, p, has_lr=has_lr, decay=decay,
                          decoupled=decoupled, maximize=maximize, cautious=cautious)


def _complex_arithmetic(on: bool) -> Any:
    """For a complex leaf, jnp's standard dtype promotion: a rule multiplies complex moments
    by real scalars and divides them by real magnitudes, as its math says, which strict
    promotion (``jax_numpy_dtype_promotion="strict"``) refuses. Real leaves are traced under
    the promotion the user chose."""
    return jax.numpy_dtype_promotion("standard") if on else contextlib.nullcontext()


def _leaf_math(
    rule: Rule,
    step_scalars: Callable[[Any], dict[str, jax.Array]],
    g: jax.Array,
    state: dict[str, jax.Array],
    p: jax.Array | None,
    *,
    has_lr: bool,
    decay: bool,
    decoupled: bool,
    maximize: bool,
    cautious: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    wide = any(x is not None and _is_wide(x) for x in (g, p, *state.values()))
    dtype = jnp.float64 if wide else jnp.float32
    s = step_scalars(dtype)

    def compute(x: jax.Array) -> jax.Array:  # complex stays complex
        return x.astype(_compute_dtype(dtype, jnp.iscomplexobj(x)))

    gc = compute(g)
    pc = None if p is None else compute(p)
    if maximize:
        gc = -gc
    # The decay reaches the rule only if the rule applies it, and only on the masked leaves.
    wd = s.pop(_DECAY, None)
    # Without params, a weight decay that is an array applies only while it is 0 (see update).
    no_params = decay and pc is None
    decay = decay and not no_params
    by_layout = decay and not rule.takes_weight_decay
    if decay and rule.takes_weight_decay:
        s[_DECAY] = wd
    if by_layout and not decoupled:
        gc = gc + wd * pc
    direction, new = rule.apply(s, gc, {k: compute(v) for k, v in state.items()}, pc)
    if cautious:
        direction = cautious_mask(direction, gc, negative=rule.takes_learning_rate)
    if has_lr:
        # Decoupled decay: -lr * (direction + wd * p), so that a weight decay of 0 leaves the
        # bits of -lr * direction as they are however XLA fuses it (wd * p + d is d exactly).
        if by_layout and decoupled and not rule.takes_learning_rate:
            direction = direction + wd * pc
        if rule.takes_learning_rate:
            if by_layout and decoupled:
                direction = direction - (s[_LR] * wd) * pc
        else:
            direction = -s[_LR] * direction
    if no_params:
        direction = jnp.where(wd == 0, direction, jnp.asarray(jnp.nan, direction.dtype))
    out_dtype = g.dtype if p is None else p.dtype
    return direction.astype(out_dtype), {k: _store(new[k], v.dtype) for k, v in state.items()}


def _as_array(x: Any) -> Any:
    """A leaf as an array: optax accepts Python and NumPy numbers as parameters and gradients."""
    return x if isinstance(x, jax.Array) or x is None else jnp.asarray(x)


def _store(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` cast to a moment's storage dtype, saturating where that dtype's range is smaller
    than the compute dtype's (float16: a squared gradient above 65504 would become inf, and an
    infinite second moment turns every later update of that entry into 0 or NaN; in the
    compute dtype itself the rules saturate, :func:`jadam.rule.saturate`)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).max < jnp.finfo(x.dtype).max:
        top = jnp.asarray(jnp.finfo(dtype).max, x.dtype)
        x = jnp.clip(x, -top, top)
    return x.astype(dtype)


def cautious_mask(update: jax.Array, g: jax.Array, *, negative: bool) -> jax.Array:
    """Algorithm 1 of Liang et al. (2024) for one array: keep the entries of ``update`` that
    agree with the gradient ``g`` (same sign for a direction, ``negative=False``; opposite sign
    for an update to add to the parameters, ``negative=True``; zero counts as agreeing), zero
    the others, and scale the kept ones by ``size / (kept + 1)``, so the step keeps its size."""
    # (For complex entries, agreeing is a nonnegative real part of update * conj(g).)
    agree = update * g if not jnp.iscomplexobj(update) else (
        update.real * g.real + update.imag * g.imag)
    aligned = (agree <= 0) if negative else (agree >= 0)
    kept = aligned.astype(agree.dtype)
    scale = update.size / (jnp.sum(kept) + 1)
    return update * (kept * scale).astype(update.dtype)


def _check_param(fn: str, path: Any, p: Any, rule: Rule) -> None:
    dtype = jnp.result_type(p)
    if jnp.issubdtype(dtype, jnp.complexfloating) and rule.refuses_complex:
        raise TypeError(
            f"{fn}: parameter {_where(path)} is complex ({dtype}), which this optimizer cannot "
            f"train: {rule.refuses_complex}."
        )
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            f"{fn}: parameter {_where(path)} has dtype {dtype}; only floating-point (or complex) "
            "parameters can be optimized. Keep integer or boolean arrays out of the optimized "
            "tree, or route them to optax.set_to_zero() with optax.multi_transform."
        )


_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64),
            np.dtype(np.float64): np.dtype(np.complex128)}


def _is_wide(x: Any) -> bool:
    """Whether ``x`` is float64 or complex128 (computed in float64)."""
    return jnp.result_type(x) in (jnp.float64, jnp.complex128)


def _compute_dtype(real: Any, complex_: bool) -> np.dtype:
    return _COMPLEX[np.dtype(real)] if complex_ else np.dtype(real)


def _moment_dtype(fn: str, path: Any, m: Moment, param_dtype: Any) -> np.dtype:
    """The dtype a moment is kept in, for a parameter of dtype ``param_dtype``: ``m.dtype`` (or
    the parameter's) gives its precision, the parameter whether it is complex, except that a
    magnitude (``m.nonnegative``: a second moment) is always real. So ``mu_dtype=float32``
    keeps a complex64 first moment for a complex parameter, and ``mu_dtype=complex64`` a
    float32 one for a real parameter."""
    real = np.dtype(jnp.finfo(np.dtype(m.dtype or param_dtype)).dtype)
    if m.nonnegative or not jnp.issubdtype(param_dtype, jnp.complexfloating):
        return real
    if real not in _COMPLEX:
        raise TypeError(
            f"{fn}: parameter {_where(path)} is complex ({np.dtype(param_dtype)}), but "
            f"state.{m.name} would be kept in {real}, which has no complex counterpart; pass "
            "a float32, float64, complex64 or complex128 state dtype (mu_dtype), or none."
        )
    return _COMPLEX[real]


def _init_moment(fn: str, path: Any, m: Moment, p: Any) -> jax.Array:
    dtype = _moment_dtype(fn, path, m, jnp.result_type(p))
    if isinstance(m.init, str):  # "params"
        return jnp.array(p, dtype=dtype, copy=True)  # its own buffer, so both can be donated
    if m.shape is None:
        return jnp.full_like(p, m.init, dtype=dtype)
    return jnp.full(m.shape(jnp.shape(p)), m.init, dtype=dtype)


def _check_leaf(
    fn: str, path: Any, g: Any, p: Any, state: dict[str, jax.Array], moments: tuple[Moment, ...]
) -> None:
    g_dtype = jnp.result_type(g)
    if not jnp.issubdtype(g_dtype, jnp.inexact):
        raise TypeError(f"{fn}: the gradient at {_where(path)} has dtype {g_dtype}, not a float")
    complex_ = jnp.issubdtype(g_dtype, jnp.complexfloating)
    if p is not None and jnp.iscomplexobj(p) != complex_:
        raise TypeError(
            f"{fn}: the gradient at {_where(path)} has dtype {g_dtype} but the parameter "
            f"{jnp.result_type(p)}: a complex parameter needs a complex gradient, a real one a "
            "real gradient (for a real loss of a complex parameter, pass jnp.conj of "
            "jax.grad's result, as with optax)."
        )
    shape = jnp.shape(g)
    expected = {"parameter": (p, shape)}
    for m in moments:
        x = state[m.name]
        if quantize.is_quantized(x):
            expected[f"state.{m.name}"] = (x, quantize.stored_shape(shape))
            continue
        expected[f"state.{m.name}"] = (x, m.shape(shape) if m.shape else shape)
        if x is None:
            continue
        if m.dtype is None and p is None:
            if jnp.iscomplexobj(x) != (complex_ and not m.nonnegative):
                raise TypeError(
                    f"{fn}: state.{m.name} at {_where(path)} has dtype {jnp.result_type(x)}, "
                    f"but the gradient is {g_dtype}: was the state made for "
                    f"{'real' if complex_ else 'complex'} parameters?")
            continue
        want_dtype = _moment_dtype(fn, path, m, g_dtype if p is None else jnp.result_type(p))
        if jnp.result_type(x) != want_dtype:
            raise TypeError(
                f"{fn}: state.{m.name} at {_where(path)} has dtype {jnp.result_type(x)}, but "
                f"this optimizer keeps it in {jnp.dtype(want_dtype)}; was the state made with "
                "other options (mu_dtype, nu_dtype) or restored into another dtype?"
            )
    for what, (x, want) in expected.items():
        if x is not None and jnp.shape(x) != want:
            raise ValueError(
                f"{fn}: the gradient at {_where(path)} has shape {shape} but the {what} has "
                f"shape {jnp.shape(x)}, where {want} was expected (no broadcasting)"
            )


def _flatten_as(fn: str, treedef: Any, tree: Any, what: str) -> list[Any]:
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


def _decay_mask(
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
    return _flatten_as(fn, treedef, full, "mask")


def _where(path: Any) -> str:
    return jax.tree_util.keystr(path) or "the root"
