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
* dtypes: each leaf is computed in float32, or float64 where a float64 array is involved; the
  moments are stored in the dtype ``init`` gave them, and the update has the parameter's dtype
  (the gradient's when ``params`` is not passed);
* checks of tree structure, shapes and dtypes, at trace time (free under ``jit``), naming the
  leaf's key path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jadam import hyperparams
from jadam.hyperparams import F32, Schedule
from jadam.rule import Moment, Rule, cast_scalars

Mask = Any | Callable[[optax.Params], Any]

# Keys of the layout's own per-step scalars, apart from any name a rule may use.
_LR = "layout/learning_rate"
_DECAY = "layout/weight_decay"


def per_leaf(
    rule: Rule,
    *,
    fn: str,
    learning_rate: F32 | Schedule | None = None,
    weight_decay: F32 | Schedule | None = None,
    decoupled: bool = False,
    mask: Mask | None = None,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
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

    Returns:
      An optax ``GradientTransformationExtraArgs`` whose state is ``rule.state_type``.
    """
    decays = weight_decay is not None and not hyperparams.is_zero(weight_decay)
    if decays and learning_rate is None and decoupled:
        raise ValueError(f"{fn}: decoupled weight decay needs a learning rate")

    def init(params: optax.Params) -> Any:
        for path, p in jax.tree_util.tree_leaves_with_path(params):
            _check_param(fn, path, p)
        moments = {
            m.name: jax.tree.map(lambda p, m=m: _init_moment(m, p), params) for m in rule.moments
        }
        carry = {k: jnp.asarray(v, jnp.float32) for k, v in rule.carry_init().items()}
        return rule.state_type(count=jnp.zeros([], jnp.int32), **moments, **carry)

    def update(
        updates: optax.Updates,
        state: Any,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, Any]:
        del extra_args
        if not isinstance(state, rule.state_type):
            raise TypeError(
                f"{fn}: update() got a state of type {type(state).__name__}, not the "
                f"{rule.state_type.__name__} that this optimizer's init() returns; was it "
                "made by another optimizer, or restored from a checkpoint without a template?"
            )
        for m in rule.moments:
            if getattr(state, m.name) is None:
                raise TypeError(
                    f"{fn}: the state has no {m.name!r}; it was made by an optimizer with other "
                    "options (such as amsgrad=False). Call init() of this optimizer."
                )
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        paths = [path for path, _ in flat]
        grads = [g for _, g in flat]
        moments = {m.name: _flatten_as(fn, treedef, getattr(state, m.name), f"state.{m.name}")
                   for m in rule.moments}
        if params is None:
            if rule.needs_params or decays:
                raise ValueError(
                    f"{fn}: update() needs params (pass tx.update(grads, state, params))"
                )
            flat_params: Sequence[Any] = [None] * len(grads)
        else:
            flat_params = _flatten_as(fn, treedef, params, "params")
        decay_leaf = _decay_mask(fn, treedef, updates, params, mask) if decays else None

        count = optax.safe_increment(state.count)
        hp = dict(rule.hyperparams)
        if learning_rate is not None:
            hp["learning_rate"] = hyperparams.value_at(learning_rate, state.count)
        if decays:
            hp["weight_decay"] = hyperparams.value_at(weight_decay, state.count)
        hp = hyperparams.opaque(hp, state.count)
        carry = {k: getattr(state, k) for k in rule.carry_init()}
        step_scalars, carry = rule.scalars(hp, count.astype(jnp.float32), carry)
        if learning_rate is not None:
            step_scalars[_LR] = hp["learning_rate"]
        if decays:
            # Coupled: g + wd * p. Decoupled: the update gets -lr * wd * p.
            step_scalars[_DECAY] = (
                hp["learning_rate"] * hp["weight_decay"] if decoupled else hp["weight_decay"]
            )

        new_updates = []
        new_moments: dict[str, list[Any]] = {m.name: [] for m in rule.moments}
        for i, (path, g, p) in enumerate(zip(paths, grads, flat_params, strict=True)):
            state_i = {name: leaves[i] for name, leaves in moments.items()}
            _check_leaf(fn, path, g, p, state_i, rule.moments)
            u, new = _leaf_update(
                rule, step_scalars, g, state_i, p,
                has_lr=learning_rate is not None,
                decay=decay_leaf is not None and decay_leaf[i],
                decoupled=decoupled,
                maximize=maximize,
            )
            new_updates.append(u)
            for name, value in new.items():
                new_moments[name].append(value)

        new_state = rule.state_type(
            count=count,
            **{name: treedef.unflatten(leaves) for name, leaves in new_moments.items()},
            **carry,
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def optimizer(
    rule: Rule,
    *,
    fn: str,
    learning_rate: Any,
    weight_decay: Any = None,
    decoupled: bool = False,
    mask: Mask | None = None,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
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
    )


def _leaf_update(
    rule: Rule,
    step_scalars: dict[str, jax.Array],
    g: jax.Array,
    state: dict[str, jax.Array],
    p: jax.Array | None,
    *,
    has_lr: bool,
    decay: bool,
    decoupled: bool,
    maximize: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One leaf: cast in, the rule, learning rate and weight decay, cast out."""
    wide = any(x is not None and x.dtype == jnp.float64 for x in (g, p, *state.values()))
    dtype = jnp.float64 if wide else jnp.float32
    s = cast_scalars(step_scalars, dtype)
    gc = g.astype(dtype)
    pc = None if p is None else p.astype(dtype)
    if maximize:
        gc = -gc
    if decay and not decoupled:
        gc = gc + s[_DECAY] * pc
    direction, new = rule.apply(s, gc, {k: v.astype(dtype) for k, v in state.items()}, pc)
    if has_lr:
        direction = -s[_LR] * direction
        if decay and decoupled:
            direction = direction - s[_DECAY] * pc
    out_dtype = g.dtype if p is None else p.dtype
    return direction.astype(out_dtype), {k: new[k].astype(v.dtype) for k, v in state.items()}


def _check_param(fn: str, path: Any, p: Any) -> None:
    dtype = jnp.result_type(p)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: parameter {_where(path)} has dtype {dtype}; only floating-point parameters "
            "can be optimized. Keep integer or boolean arrays out of the optimized tree, or "
            "exclude them with optax.masked."
        )


def _init_moment(m: Moment, p: Any) -> jax.Array:
    dtype = np.dtype(m.dtype or jnp.result_type(p))
    if m.shape is None:
        return jnp.full_like(p, m.init, dtype=dtype)
    return jnp.full(m.shape(jnp.shape(p)), m.init, dtype=dtype)


def _check_leaf(
    fn: str, path: Any, g: Any, p: Any, state: dict[str, jax.Array], moments: tuple[Moment, ...]
) -> None:
    g_dtype = jnp.result_type(g)
    if not jnp.issubdtype(g_dtype, jnp.floating):
        raise TypeError(f"{fn}: the gradient at {_where(path)} has dtype {g_dtype}, not a float")
    shape = jnp.shape(g)
    expected = {"parameter": (p, shape)}
    for m in moments:
        expected[f"state.{m.name}"] = (state[m.name], m.shape(shape) if m.shape else shape)
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
        raise ValueError(
            f"{fn}: the gradients and {what} have different tree structures.\n"
            f"  gradients: {treedef}\n  {what}: {jax.tree.structure(tree)}"
        ) from e


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
