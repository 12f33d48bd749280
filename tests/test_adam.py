"""Adam-specific behaviour beyond the shared battery."""

from __future__ import annotations

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jadam
from tests import helpers


def test_first_step_is_learning_rate_times_sign() -> None:
    """At t = 1, m̂ = g and v̂ = g², so the step is -lr * g / (|g| + eps), exactly."""
    params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    grads = {"w": jnp.array([0.5, -0.25, 1e-3, 4.0])}
    tx = jadam.adam(0.1)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    g = np.asarray(grads["w"], np.float64)
    np.testing.assert_allclose(updates["w"], -0.1 * g / (np.abs(g) + 1e-8), rtol=2e-7)


def test_count_saturates_instead_of_wrapping() -> None:
    params = {"w": jnp.ones(3)}
    tx = jadam.adam(1e-3)
    top = jnp.iinfo(jnp.int32).max
    state = tx.init(params)._replace(count=jnp.asarray(top - 1, jnp.int32))
    for _ in range(3):
        updates, state = jax.jit(tx.update)(params, state, params)
        chex.assert_tree_all_finite(updates)
    assert int(state.count) == top


def test_bias_correction_is_float32_whatever_the_count() -> None:
    """Bias corrections at large counts are exactly 1 and never NaN (0.999**2e9 underflows)."""
    params = {"w": jnp.full((2,), 2.0)}
    tx = jadam.scale_by_adam()
    state = tx.init(params)._replace(
        count=jnp.asarray(2_000_000_000, jnp.int32),
        mu={"w": jnp.full((2,), 0.5)}, nu={"w": jnp.full((2,), 0.25)},
    )
    updates, _ = tx.update({"w": jnp.full((2,), 0.5)}, state)
    np.testing.assert_allclose(updates["w"], 1.0, rtol=1e-6)


@pytest.mark.usefixtures("standard_promotion")
def test_amsgrad_agrees_with_optax_where_their_definitions_meet() -> None:
    """jadam (like torch) keeps the max of the raw v; optax keeps the max of the bias-corrected
    v̂. With b2 = 0 there is no bias correction and the two coincide."""
    params, grads = helpers.random_tree(np.random.default_rng(0)), helpers.gradient_sequence(1, 50)
    ours, _ = helpers.run_jadam(jadam.adam(1e-2, b2=0.0, amsgrad=True), params, grads)
    theirs, _ = helpers.run_jadam(optax.amsgrad(1e-2, b2=0.0), params, grads)
    chex.assert_trees_all_close(ours[-1], theirs[-1], rtol=1e-6, atol=1e-6)
    # ...and they differ with b2 > 0, which is why the docstring warns about it.
    ours, _ = helpers.run_jadam(jadam.adam(1e-2, amsgrad=True), params, grads)
    theirs, _ = helpers.run_jadam(optax.amsgrad(1e-2), params, grads)
    leaves = zip(jax.tree.leaves(ours[-1]), jax.tree.leaves(theirs[-1]), strict=True)
    diff = max(float(jnp.abs(a - b).max()) for a, b in leaves if a.size)
    assert diff > 1e-3


def test_adamw_mask_spares_masked_leaves() -> None:
    params = {"w": jnp.ones(3), "b": jnp.ones(3)}
    zero = jax.tree.map(jnp.zeros_like, params)
    for mask in ({"w": True, "b": False}, lambda p: {"w": True, "b": False}):
        tx = jadam.adamw(0.1, weight_decay=0.5, mask=mask)
        updates, _ = tx.update(zero, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * 1.0, rtol=1e-7)
        chex.assert_trees_all_equal(updates["b"], jnp.zeros(3))


def test_adamw_prefix_mask() -> None:
    params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}, "norm": {"scale": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    tx = jadam.adamw(0.1, weight_decay=0.5, mask={"dense": True, "norm": False})
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(updates["dense"]["bias"][0]) < 0
    chex.assert_trees_all_equal(updates["norm"]["scale"], jnp.zeros(2))


def test_coupled_and_decoupled_decay_differ_as_the_papers_say() -> None:
    """Coupled L2 goes through Adam's normalisation (a constant gradient of wd*p gives a step of
    lr); decoupled decay does not (its step is lr*wd*p)."""
    params = {"w": jnp.full((1,), 2.0)}
    zero = {"w": jnp.zeros(1)}
    coupled = jadam.adam(0.1, weight_decay=0.01)
    decoupled = jadam.adamw(0.1, weight_decay=0.01)
    u_c, _ = coupled.update(zero, coupled.init(params), params)
    u_d, _ = decoupled.update(zero, decoupled.init(params), params)
    np.testing.assert_allclose(u_c["w"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(u_d["w"], -0.1 * 0.01 * 2.0, rtol=1e-6)


def test_updates_without_params_take_the_gradient_dtype() -> None:
    params = {"w": jnp.ones(2, jnp.bfloat16)}
    tx = jadam.adam()
    updates, state = tx.update({"w": jnp.ones(2, jnp.float32)}, tx.init(params))
    assert updates["w"].dtype == jnp.float32
    assert state.mu["w"].dtype == jnp.bfloat16


def test_float64_parameters_are_computed_in_float64() -> None:
    with jax.enable_x64(True):
        params = {"w": jnp.ones(3, jnp.float64)}
        tx = jadam.adam(0.1)
        updates, state = tx.update({"w": jnp.full(3, 0.5, jnp.float64)}, tx.init(params), params)
        assert updates["w"].dtype == jnp.float64
        assert state.nu["w"].dtype == jnp.float64


_unit = st.floats(0.0, 0.999, allow_subnormal=False)


@given(
    lr=st.floats(0.0, 1.0, allow_subnormal=False) | st.sampled_from([0.5, 1.0]),
    b1=_unit,
    b2=_unit,
    eps=st.floats(1e-12, 1e-2),
    weight_decay=st.floats(1e-4, 0.5),
)
@settings(max_examples=15)
def test_any_fixed_hyperparameters_equal_traced_ones(lr, b1, b2, eps, weight_decay):
    """For arbitrary values, including 0, 0.5 and 1 which XLA would love to fold, a Python float
    and the same float32 value passed to the jitted step give the same bits without FMA (10
    steps of AdamW with AMSGrad and Nesterov, which read every hyperparameter, each step fused
    with the parameter update as in a real training step; tests/test_without_fma.py runs this
    test so). With FMA, XLA's loops around a constant and around an argument may contract
    multiply-adds differently: 4 ulps of scale."""
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, 10)
    hp = {"learning_rate": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}

    def step(grads, state, params, hp):
        tx = jadam.adamw(**hp, amsgrad=True, nesterov=True)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    fixed_step = jax.jit(functools.partial(step, hp=hp))
    traced_step = jax.jit(step)
    traced_hp = {k: jnp.float32(v) for k, v in hp.items()}
    state = jadam.adamw(**hp, amsgrad=True, nesterov=True).init(params)
    fixed, traced = (params, state), (params, state)
    for g in grads:
        fixed = fixed_step(g, fixed[1], fixed[0])
        traced = traced_step(g, traced[1], traced[0], traced_hp)
    if helpers.WITHOUT_FMA:
        chex.assert_trees_all_equal(fixed, traced)
    else:
        helpers.assert_trees_within_scale_ulps(traced, fixed, ulps=4)


def test_zero_weight_decay_fixed_or_traced_gives_the_same_updates() -> None:
    """A Python 0 drops the decay term from the program (as amsgrad=False drops its maximum); a
    traced 0 keeps it. The updates are still bit-identical. (Fused with the caller's
    ``p + u`` in one jit, XLA may then contract ``p - lr * d`` into one FMA in the first program
    and not in the second: a sweep through zero should pass weight decay traced everywhere.)"""
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, 10)

    def run(wd):
        tx = jadam.adamw(0.75, weight_decay=wd)
        state, updates = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            updates.append(u)
        return updates

    chex.assert_trees_all_equal(jax.jit(lambda: run(0.0))(), jax.jit(run)(jnp.float32(0.0)))


def test_weight_decay_schedule() -> None:
    """A schedule of weight decay is read at the count before the update, like the rate."""
    params = {"w": jnp.full((2,), 2.0)}
    zero = {"w": jnp.zeros(2)}
    tx = jadam.adamw(0.1, weight_decay=lambda count: 0.5 * count.astype(jnp.float32))
    state = tx.init(params)
    u0, state = tx.update(zero, state, params)
    u1, state = tx.update(zero, state, params)
    np.testing.assert_allclose(u0["w"], 0.0, atol=0)
    np.testing.assert_allclose(u1["w"], -0.1 * 0.5 * 2.0, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: jadam.adam(1e-3), lambda: jadam.adamw(1e-3),
                                  lambda: jadam.lion(1e-4)], ids=["adam", "adamw", "lion"])
def test_the_step_scalars_are_computed_once_not_per_leaf(make) -> None:
    """Each hyperparameter is made a runtime value from the step count (``0 * count + value``);
    XLA would copy that arithmetic into every leaf's loop, so the compiled step would grow with
    the leaves (a third larger than optax's on 1,000 leaves). The count's conversions to float
    in the compiled step are as many for 12 leaves as for 3: the loops read the scalars."""
    tx = make()

    def converts(n: int) -> int:
        params = {f"w{i}": jnp.ones((i + 2, 3)) for i in range(n)}  # shapes all different
        text = jax.jit(helpers.train_step(tx)).lower(
            params, tx.init(params), params).compile().as_text()
        return text.count(" convert(")

    few, many = converts(3), converts(12)
    assert few > 0
    assert many == few


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the order of XLA:CPU's schedule")
def test_each_leafs_moment_loops_run_side_by_side() -> None:
    """XLA:CPU runs the compiled loops in one order. When each moment's loops waited on a
    scalar of their own, it ran every leaf's second-moment loop, then every first-moment one:
    the gradient, read by both, was gone from cache by the second read, 5-14% slower than
    optax on a 40M-parameter tree. Most leaves' two moment loops should follow each other."""
    tx = jadam.adam(1e-3)
    params = {f"w{i}": jnp.ones((i + 2, 3)) for i in range(6)}  # shapes all different
    text = jax.jit(helpers.train_step(tx)).lower(
        params, tx.init(params), params).compile().as_text()
    order = []  # (moment, rows) of each moment loop, in the order the program runs them
    for line in text.split("ENTRY", 1)[1].splitlines():
        if " fusion(" in line and ", kind=" in line:
            operands = line.split(" fusion(", 1)[1].split("), kind=", 1)[0]
            moment = "mu" if "s_mu" in operands else "nu" if "s_nu" in operands else None
            if moment is not None:
                order.append((moment, line.split("f32[", 1)[1].split(",", 1)[0]))
    assert sorted(order) == sorted((m, str(i + 2)) for m in ("mu", "nu") for i in range(6))
    side_by_side = sum(a[1] == b[1] for a, b in itertools.pairwise(order))
    assert side_by_side >= 4, order
