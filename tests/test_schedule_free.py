"""Schedule-Free AdamW's evaluation parameters: the average x of the paper, which the state
keeps only implicitly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests import helpers


def _paper_average(params: dict, grads: list[dict], lr: float, b1: float, b2: float,
                   eps: float) -> dict:
    """x_T by Algorithm 1 of Defazio et al., in float64, with x, y and z all kept explicitly."""
    out = {}
    for name, p0 in params.items():
        x = z = np.asarray(p0, np.float64)
        v = np.zeros_like(x)
        weight_sum = 0.0
        for t, g in enumerate(grads, start=1):
            g = np.asarray(g[name], np.float64)
            v = b2 * v + (1 - b2) * g * g
            gamma = lr * np.sqrt(1 - b2**t)
            z = z - gamma * g / (np.sqrt(v) + eps)
            weight_sum += gamma**2
            c = gamma**2 / weight_sum
            x = (1 - c) * x + c * z
        out[name] = x
    return out


def test_eval_params_are_the_papers_average() -> None:
    """After 100 steps, schedule_free_eval_params gives the paper's x (kept explicitly in the
    float64 reference). Tolerance 1e-5 of the leaf's scale: recovering x from y and z divides
    by b1 = 0.9, and float32 y and z carry the rounding of 100 steps."""
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(5), jnp.float32)}
    grads = [{k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
              for k, v in params.items()} for _ in range(100)]
    tx = jadam.schedule_free_adamw(1e-2)
    trajectory, states = helpers.run_jadam(tx, params, grads)
    got = jadam.schedule_free_eval_params(states[-1], trajectory[-1])
    want = _paper_average(params, grads, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8)
    for name in params:
        assert got[name].dtype == params[name].dtype
        np.testing.assert_allclose(got[name], want[name], rtol=0,
                                   atol=1e-5 * np.abs(want[name]).max())
        # The average lags the training parameters y: they differ.
        assert np.abs(np.asarray(trajectory[-1][name]) - want[name]).max() > 1e-3


def test_eval_params_find_the_state_inside_a_chain() -> None:
    params = {"w": jnp.ones(3)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), jadam.schedule_free_adamw())
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    params = optax.apply_updates(params, updates)
    x = jadam.schedule_free_eval_params(state, params)
    assert jax.tree.structure(x) == jax.tree.structure(params)


def test_eval_params_need_a_schedule_free_state_and_b1_above_zero() -> None:
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="found 0"):
        jadam.schedule_free_eval_params(jadam.adam().init(params), params)
    state = jadam.schedule_free_adamw(b1=0.0).init(params)
    with pytest.raises(ValueError, match="b1 is 0"):
        jadam.schedule_free_eval_params(state, params)


def test_params_and_state_can_both_be_donated() -> None:
    """z starts as a copy of the parameters, not the same buffer, so a jitted step may donate
    both."""
    params = {"w": jnp.ones(1000)}
    tx = jadam.schedule_free_adamw()
    state = tx.init(params)
    assert state.z["w"].unsafe_buffer_pointer() != params["w"].unsafe_buffer_pointer()

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    params, state = step(params, state)
    assert bool(jnp.all(jnp.isfinite(params["w"])))
