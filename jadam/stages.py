"""One leaf's update, stage by stage: the pipeline every optimizer shares.

:func:`leaf_update` reads top to bottom:

1. **cast in**: the gradient, parameter and moments to the compute dtype (:mod:`jadam.dtypes`);
2. **gradient transforms**: ``maximize`` negates it, coupled weight decay adds ``wd * p``;
3. **the rule**: the optimizer's own math (:meth:`jadam.rule.Rule.apply`);
4. **direction transforms**: the cautious mask, decoupled weight decay, the learning rate;
5. **cast out**: the update to the parameter's dtype, the moments to their storage dtypes.

How the weight decay and the learning rate enter is decided once per optimizer
(:class:`Options`), not by flags inside the pipeline. Where a moment lives (packed, 8-bit) is
not known here: a storage codec decodes before and encodes after (:mod:`jadam.codecs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jadam import dtypes
from jadam.rule import Moments, Rule, Scalars, Step

#: How weight decay enters: added to the gradient (``"coupled"``, L2), to the direction
#: before the learning rate (``"decoupled"``, AdamW), by the rule itself (``"rule"``: LAMB's
#: trust ratio, Adan's proximal step), or not at all (``None``).
Decay = Literal["coupled", "decoupled", "rule"] | None
#: How the learning rate enters: the update is ``-lr * direction`` (``"layout"``), the rule
#: returns the update with the rate in it (``"rule"``: Adafactor, Schedule-Free), or there is
#: none and the direction is the output (``None``: the ``scale_by_*`` building blocks).
LearningRate = Literal["layout", "rule"] | None


@dataclasses.dataclass(frozen=True)
class Options:
    """What the pipeline does around the rule, the same for every leaf of an optimizer."""

    decay: Decay = None
    learning_rate: LearningRate = None
    maximize: bool = False
    cautious: bool = False

    @classmethod
    def of(cls, rule: Rule, *, has_lr: bool, decays: bool, decoupled: bool, maximize: bool,
           cautious: bool) -> Options:
        decay: Decay = None
        if decays:
            decay = "rule" if rule.takes_weight_decay else (
                "decoupled" if decoupled else "coupled")
        lr: LearningRate = None
        if has_lr:
            lr = "rule" if rule.takes_learning_rate else "layout"
        return cls(decay, lr, maximize, cautious)


def leaf_update(
    rule: Rule,
    step_scalars: Callable[[Any], Scalars],
    g: jax.Array,
    state: Moments,
    p: jax.Array | None,
    *,
    options: Options,
    decay: bool,
) -> Step:
    """One array's update and new moments. ``decay`` says whether the weight-decay mask
    selects this leaf; ``step_scalars(dtype)`` gives the per-step scalars in ``dtype``."""
    with _complex_arithmetic(jnp.iscomplexobj(g)):
        wide = any(x is not None and dtypes.is_wide(x) for x in (g, p, *state.values()))
        real = jnp.float64 if wide else jnp.float32
        s = step_scalars(real)

        def compute(x: jax.Array) -> jax.Array:  # complex stays complex
            return x.astype(dtypes.compute_dtype(real, jnp.iscomplexobj(x)))

        gc = compute(g)
        pc = None if p is None else compute(p)
        wd = s.weight_decay
        mode = options.decay if decay else None
        # Without params, a weight decay that is an array applies only while it is 0: the
        # update is NaN where it is not (see jadam.layout.per_leaf's update).
        no_params = mode is not None and pc is None
        if no_params:
            mode = None
        # The rule sees the decay only if it applies it, and only where the mask selects.
        s = dataclasses.replace(s, weight_decay=wd if mode == "rule" else None)

        gc = gradient_transforms(gc, pc, wd, maximize=options.maximize, decay=mode)
        direction, new = rule.apply(s, gc, {k: compute(v) for k, v in state.items()}, pc)
        update = direction_transforms(direction, gc, pc, wd, s.learning_rate,
                                      options=options, decay=mode)
        if no_params:
            update = jnp.where(wd == 0, update, jnp.asarray(jnp.nan, update.dtype))
        out_dtype = g.dtype if p is None else p.dtype
        stored = {k: dtypes.store(new[k], v.dtype) for k, v in state.items()}
        return update.astype(out_dtype), {**stored, **{k: new[k] for k in rule.tree_sums}}


def gradient_transforms(
    g: jax.Array, p: jax.Array | None, wd: jax.Array | None, *, maximize: bool, decay: Decay
) -> jax.Array:
    """``maximize`` (negate first, as torch.optim), then coupled weight decay ``g + wd * p``."""
    if maximize:
        g = -g
    if decay == "coupled":
        assert wd is not None
        assert p is not None
        g = g + wd * p
    return g


def direction_transforms(
    direction: jax.Array,
    g: jax.Array,
    p: jax.Array | None,
    wd: jax.Array | None,
    lr: jax.Array | None,
    *,
    options: Options,
    decay: Decay,
) -> jax.Array:
    """The cautious mask, then decoupled weight decay and the learning rate: the update
    ``-lr * (direction + wd * p)``, or for a rule that applies the rate itself,
    ``direction - lr * wd * p``. (``wd * p + d`` is ``d`` exactly when ``wd`` is 0, so a zero
    decay leaves the bits of ``-lr * d`` however XLA fuses it.)"""
    if options.cautious:
        direction = cautious_mask(direction, g, negative=options.learning_rate == "rule")
    if options.learning_rate is None:
        return direction
    assert lr is not None  # (a learning-rate mode implies one)
    if options.learning_rate == "layout":
        if decay == "decoupled":
            assert wd is not None
            assert p is not None
            direction = direction + wd * p
        return -lr * direction
    if decay == "decoupled":
        assert wd is not None
        assert p is not None
        direction = direction - (lr * wd) * p
    return direction


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


def _complex_arithmetic(on: bool) -> Any:
    """For a complex leaf, jnp's standard dtype promotion: a rule multiplies complex moments
    by real scalars and divides them by real magnitudes, as its math says, which strict
    promotion (``jax_numpy_dtype_promotion="strict"``) refuses. Real leaves are traced under
    the promotion the user chose."""
    return jax.numpy_dtype_promotion("standard") if on else contextlib.nullcontext()
