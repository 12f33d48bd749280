"""jadam optimizers drop into optax's combinators and flax.nnx.Optimizer, and optax's transforms
drop into them."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests import helpers


def _run(tx, params, grads):
    traj, _ = helpers.run_jadam(tx, params, grads)
    return traj[-1]


def _params_and_grads(steps=30):
    return helpers.random_tree(np.random.default_rng(0)), helpers.gradient_sequence(1, steps)


def test_chain_with_global_norm_clipping() -> None:
    """optax.chain(clip_by_global_norm, jadam.adam) == jadam.adam on gradients clipped by hand."""
    params, grads = _params_and_grads()
    chained = _run(optax.chain(optax.clip_by_global_norm(1.0), jadam.adam(1e-2)), params, grads)

    def clip(g):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))
        return jax.tree.map(lambda x: x * jnp.minimum(1.0, 1.0 / norm), g)

    manual = _run(jadam.adam(1e-2), params, [clip(g) for g in grads])
    chex.assert_trees_all_close(chained, manual, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("standard_promotion")  # MultiSteps itself divides float32 by int32
def test_multi_steps_accumulates_gradients() -> None:
    """optax.MultiSteps(k=3) steps once per three gradients, with their mean."""
    params, grads = _params_and_grads(30)
    multi = _run(optax.MultiSteps(jadam.adam(1e-2), every_k_schedule=3), params, grads)
    means = [jax.tree.map(lambda *g: sum(g) / 3, *grads[i:i + 3]) for i in range(0, 30, 3)]
    single = _run(jadam.adam(1e-2), params, means)
    chex.assert_trees_all_close(multi, single, rtol=1e-6, atol=1e-6)


def test_masked_leaves_are_untouched() -> None:
    params = {"w": jnp.ones((2, 2)), "frozen": jnp.ones(3), "count": jnp.zeros((), jnp.int32)}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optax.masked(jadam.adam(0.1), {"w": True, "frozen": False, "count": False})
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert float(jnp.abs(updates["w"] + 0.1).max()) < 1e-6
    chex.assert_trees_all_equal(updates["frozen"], grads["frozen"])  # passed through


def test_schedule_learning_rate() -> None:
    """A schedule is read at the count before the update, as optax does."""
    params, grads = _params_and_grads(20)
    schedule = optax.linear_schedule(1e-2, 1e-3, 20)
    ours = _run(jadam.adam(schedule), params, grads)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _run(optax.adam(schedule), params, grads)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ctor", [jadam.adam, jadam.adamw])
def test_inject_hyperparams_follows_fixed_for_500_steps(ctor) -> None:
    """optax.inject_hyperparams(jadam.adam) (values live in the state as arrays) follows the
    fixed-value optimizer over 500 steps: bit for bit without FMA (tests/test_without_fma.py
    checks three steps of every optimizer) and on this project's Xeon, and to 4 ulps of scale
    wherever FMA contraction may differ (tests/test_inject.py). (optax.adam under
    inject_hyperparams is 2.4e-7 apart after these 500 steps, measured 2026-11-24.)"""
    params, grads = _params_and_grads(500)
    hp = {"learning_rate": 3e-3, "b1": 0.85, "b2": 0.995, "eps": 1e-7}
    fixed = _run(ctor(**hp), params, grads)
    injected = _run(optax.inject_hyperparams(ctor, hyperparam_dtype=jnp.float32)(**hp),
                    params, grads)
    helpers.assert_trees_within_scale_ulps(injected, fixed, ulps=4)


def test_inject_hyperparams_allows_changing_the_learning_rate() -> None:
    params = {"w": jnp.ones(3)}
    tx = optax.inject_hyperparams(jadam.adam)(learning_rate=0.1)
    state = tx.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    updates, _ = tx.update({"w": jnp.ones(3)}, state, params)
    chex.assert_trees_all_equal(updates["w"], jnp.zeros(3))


def test_flax_nnx_optimizer_trains_a_model() -> None:
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, jadam.adamw(0.05, weight_decay=1e-4), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 3)), jnp.float32)
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3

    def loss_fn(model):
        return jnp.mean(jnp.square(model(x) - y))

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    first = float(train_step(model, optimizer))
    for _ in range(300):
        last = float(train_step(model, optimizer))
    assert last < 1e-3 < first
    np.testing.assert_allclose(np.asarray(model.kernel[...]).ravel(), [1.0, -2.0, 0.5],
                               atol=2e-2)
