"""optax.inject_hyperparams around every jadam optimizer: jitted, it gives the plain optimizer's
updates and state structure, and needs params only where the plain optimizer does.

The values are the same; the programs are not quite: a fixed value is a constant that XLA copies
into each loop (as ``constant + 0 * count``, which it cannot fold), an injected one an argument,
and with FMA, LLVM may contract a multiply-add in one loop and not in the other (NAdam with
``b1=0.8``: 1 ulp in the first update on this project's Xeon). So here, with the host's
instruction set, they agree to 4 ulps of each array's scale; tests/test_without_fma.py checks
them bit for bit without FMA.

optax.inject_hyperparams passes every numeric argument, defaults included, to the constructor
as an array (a tracer inside jit), and takes every function for a schedule. So jadam's
arguments that shape the state are ``None`` by default where a number would add a buffer
(``momentum``), and numbers that only fill it (``initial_accumulator_value``) or steer a
schedule (``warmup_steps``) may be arrays.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests.helpers import assert_trees_within_scale_ulps, gradient_sequence, random_tree
from tests.optimizers import CASES, inject


def _needs_params(tx: optax.GradientTransformation, grads: dict, state: object) -> bool:
    try:
        tx.update(grads, state)
    except ValueError as e:
        if "needs params" not in str(e):
            raise
        return True
    return False


def _check(make, kwargs: dict) -> None:
    """Three jitted steps of ``make(**kwargs)`` and of its injected twin: the same state
    structure, the same initial state, params needed alike, and the same updates and states to
    4 ulps of scale (module docstring)."""
    params = random_tree(np.random.default_rng(0))
    grads = gradient_sequence(1, 3)
    plain = make(**kwargs)
    injected = inject(make, kwargs)
    state, istate = plain.init(params), injected.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(istate.inner_state)
    chex.assert_trees_all_equal(state, istate.inner_state)
    with_params = _needs_params(plain, grads[0], state)
    assert _needs_params(injected, grads[0], istate) == with_params
    step = jax.jit(lambda g, s, p: plain.update(g, s, p if with_params else None))
    istep = jax.jit(lambda g, s, p: injected.update(g, s, p if with_params else None))
    for g in grads:
        updates, state = step(g, state, params)
        iupdates, istate = istep(g, istate, params)
        assert_trees_within_scale_ulps(iupdates, updates, ulps=4)
        assert_trees_within_scale_ulps(istate.inner_state, state, ulps=4)
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", sorted(jadam.optimizers))
def test_every_optimizer_with_its_defaults(name: str) -> None:
    info = jadam.optimizers[name]
    kwargs = {} if "learning_rate" in info.defaults else {"learning_rate": 1e-2}
    _check(info.make, kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_case_of_the_table(case) -> None:
    """The test table's arguments (AMSGrad, Nesterov, warmups, decays, schedules, ...)."""
    _check(case.ctor, case.kwargs)


def test_a_weight_decay_set_later_needs_params() -> None:
    """Injected, the default weight decay of 0 is an array: without params the update works
    while it is 0 (as the plain optimizer does), and is NaN once it is not (the step cannot
    decay a parameter it is not given; a traced value cannot raise)."""
    params = {"w": jnp.ones(3)}
    tx = optax.inject_hyperparams(jadam.adam)(learning_rate=0.1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates, _ = step({"w": jnp.ones(3)}, state)
    assert np.all(np.isfinite(updates["w"]))
    state.hyperparams["weight_decay"] = jnp.asarray(0.1)
    updates, _ = step({"w": jnp.ones(3)}, state)
    assert np.all(np.isnan(updates["w"]))
    updates, _ = step({"w": jnp.ones(3)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)
