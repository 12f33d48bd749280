"""Steps with non-finite gradients: skipped, counted, and given up on when they persist.

By default a jadam optimizer does what the math says with a NaN or an infinite gradient entry:
that entry's update is NaN, and so are its moments from then on (an elementwise optimizer leaves
the other entries alone; one that reduces over an array, like LAMB or Adafactor, spreads it over
the array). :func:`skip_nonfinite` is the remedy for a loss that overflows now and then, as in
float16 training with a loss scale.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jadam import layout


class SkipNonfiniteState(NamedTuple):
    """The state of :func:`skip_nonfinite`.

    Attributes:
      inner: the wrapped optimizer's state, as it was after the last step that was taken.
      skipped: how many steps were skipped in all (int32, saturating).
      consecutive: how many steps in a row were skipped up to now (0 after a step is taken).
    """

    inner: Any
    skipped: jax.Array
    consecutive: jax.Array


def skip_nonfinite(
    tx: optax.GradientTransformation, *, give_up_after: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so that a step whose gradients hold a NaN or an infinity changes nothing.

    On such a step the update is ``-0.0`` everywhere, so ``optax.apply_updates`` leaves every
    parameter bit for bit as it was (``x + -0.0`` is ``x``, also for ``x = -0.0``, where adding
    ``+0.0`` would flip its sign), and the wrapped state is kept as it was, step count included.
    The state counts the skipped steps (:class:`SkipNonfiniteState`).

    The wrapped update is always computed and then selected, rather than branched around with
    ``lax.cond``: the selection fuses into the update's own loop, costs no extra pass over the
    state, and behaves the same under ``vmap`` and on every backend. Only the gradients are
    checked (one reduction each, before the update), not values the optimizer computes from
    them; jadam's moments saturate rather than overflow in float16.

    Args:
      tx: any optax gradient transformation.
      give_up_after: if set, once this many steps in a row were skipped, non-finite steps
        are taken as they are until a finite one comes, so that a run that cannot recover
        ends with NaN parameters that every loss curve shows, instead of silently never
        moving again. ``None`` (default): skip for ever.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`SkipNonfiniteState`.

    Raises:
      ValueError: if ``give_up_after`` is not ``None`` or an integer >= 0.
    """
    if give_up_after is not None and (
        isinstance(give_up_after, bool) or not isinstance(give_up_after, int) or give_up_after < 0
    ):
        raise ValueError(
            f"jadam.skip_nonfinite(give_up_after={give_up_after!r}): give_up_after must be "
            "None or an integer >= 0"
        )
    inner = optax.with_extra_args_support(tx)

    def init(params: optax.Params) -> SkipNonfiniteState:
        zero = jnp.zeros([], jnp.int32)
        return SkipNonfiniteState(inner.init(params), zero, zero)

    def update(
        updates: optax.Updates, state: SkipNonfiniteState, params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, SkipNonfiniteState]:
        if not isinstance(state, SkipNonfiniteState):
            raise TypeError(
                f"jadam.skip_nonfinite: update() got a state of type {type(state).__name__}, "
                "not the SkipNonfiniteState that its init() returns"
            )
        finite = jnp.array(True)
        for g in jax.tree.leaves(updates):
            finite = finite & jnp.all(jnp.isfinite(g))
        take = finite
        if give_up_after is not None:
            take = take | (state.consecutive >= give_up_after)
        new_updates, new_inner = inner.update(updates, state.inner, params, **extra_args)
        new_updates = jax.tree.map(
            lambda u: jnp.where(take, u, jnp.full_like(u, -0.0)), new_updates)
        new_inner = jax.tree.map(lambda new, old: jnp.where(take, new, old), new_inner,
                                 state.inner)
        skipped = jnp.where(finite, state.skipped, optax.safe_increment(state.skipped))
        consecutive = jnp.where(finite, 0, optax.safe_increment(state.consecutive))
        return new_updates, SkipNonfiniteState(new_inner, skipped, consecutive)

    return layout.rebuildable(
        init, update, functools.partial(skip_nonfinite, tx, give_up_after=give_up_after))
