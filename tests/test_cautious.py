"""jadam.cautious on jadam's optimizers (mask before rate and decay) and on any other optax
transformation (mask of the whole update)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests import helpers, reference


def _masked_by_hand(update: np.ndarray, g: np.ndarray, *, maximize: bool) -> np.ndarray:
    """Liang et al.'s mask for an update to add to the parameters: it agrees with the gradient
    when it points downhill (uphill to maximise)."""
    agree = (update * g >= 0) if maximize else (update * g <= 0)
    return update * agree * (update.size / (agree.sum() + 1))


@pytest.mark.usefixtures("standard_promotion")
@pytest.mark.parametrize("maximize", [False, True])
def test_wraps_any_optax_transformation(maximize: bool) -> None:
    """A foreign transformation's whole update is masked against the gradient it was given,
    step after step, and its state is its own."""
    inner = optax.sgd(0.1, momentum=0.9)
    if maximize:
        inner = optax.chain(optax.scale(-1.0), inner)
    tx = jadam.cautious(inner, maximize=maximize)
    params = helpers.random_tree(np.random.default_rng(0))
    state, inner_state = tx.init(params), inner.init(params)
    for g in helpers.gradient_sequence(1, 5):
        updates, state = tx.update(g, state, params)
        want, inner_state = inner.update(g, inner_state, params)
        expected = jax.tree.map(
            lambda u, g: _masked_by_hand(np.asarray(u, np.float64), np.asarray(g, np.float64),
                                         maximize=maximize), want, g)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-12)
        chex.assert_trees_all_equal(state, inner_state)
        params = optax.apply_updates(params, updates)


@pytest.mark.usefixtures("standard_promotion")
def test_jadam_and_generic_paths_agree_without_decay() -> None:
    """Without weight decay, masking Adam's direction (jadam's path) and masking its update
    (the generic path, here around optax.adam) are the same method: 1e-5 after 100 steps."""
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, 100)
    ours, _ = helpers.run_jadam(jadam.cautious(jadam.adam(1e-2)), params, grads)
    theirs, _ = helpers.run_jadam(jadam.cautious(optax.adam(1e-2)), params, grads)
    chex.assert_trees_all_close(ours[-1], theirs[-1], rtol=0, atol=1e-5 * 10)


def test_decay_is_not_masked_in_jadams_optimizers() -> None:
    """cautious(adamw) steps as the paper's C-AdamW: the decay applies even where the
    direction is masked away (a generic mask of the whole update would drop it there)."""
    params = {"w": jnp.array([1.0, 2.0, -3.0])}
    g = {"w": jnp.array([1.0, -1.0, 1.0])}
    tx = jadam.cautious(jadam.adamw(0.1, weight_decay=0.5))
    state = tx.init(params)
    # Step 1 gives every entry a momentum along its gradient; step 2's gradient is -g/2, too
    # small to turn the momentum (0.09 g - 0.05 g), which now disagrees with it everywhere:
    # only the decay moves the parameters.
    _, state = tx.update(g, state, params)
    flipped = jax.tree.map(lambda x: -0.5 * x, g)
    updates, _ = tx.update(flipped, state, params)
    ref = reference.CautiousAdamW(learning_rate=0.1, weight_decay=0.5)
    s = ref.init(np.asarray(params["w"]))
    _, s = ref.step(s, np.asarray(g["w"]), np.asarray(params["w"]), 1)
    want, _ = ref.step(s, -0.5 * np.asarray(g["w"]), np.asarray(params["w"]), 2)
    np.testing.assert_allclose(updates["w"], want, rtol=1e-6)
    np.testing.assert_allclose(want, -0.1 * 0.5 * np.asarray(params["w"], np.float64), rtol=1e-12)


def test_cautious_of_a_jadam_optimizer_keeps_its_state_type() -> None:
    params = {"w": jnp.ones(3)}
    tx = jadam.cautious(jadam.nadam(1e-3))
    assert isinstance(tx.init(params), jadam.ScaleByNAdamState)
