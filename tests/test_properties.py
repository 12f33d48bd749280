"""Property tests: random trees and in-range hyperparameters, every optimizer in the registry.

Hypothesis draws a parameter tree (nested dicts, lists and tuples; leaves of rank 0 to 3 with
sizes 0 to 4; float32, bfloat16 or float16; None leaves and empty subtrees), gradients of a
random scale, and a value for each numeric hyperparameter the optimizer takes, within its
documented range. For three steps: the updates are finite and have the parameters' shapes and
dtypes, the state keeps its structure, shapes and dtypes, and jit agrees with eager execution.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jadam

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
# Moving-average and momentum rates, drawn in [0, 0.999]; rho must be inside (0, 1).
RATES = {"b1", "b2", "b3", "decay", "momentum", "rho", "momentum_decay", "dampening", "beta",
         "adam_b1", "adam_b2"}
# Arguments that change the structure of the state or the program, which the battery covers.
STRUCTURAL = {"initial_accumulator_value", "alpha_warmup", "b3_warmup", "warmup_steps",
              "beta2_decay", "d", "weight_lr_power", "clipping_threshold"}


@st.composite
def trees(draw: st.DrawFn) -> Any:
    dtype = draw(st.sampled_from(DTYPES))
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    leaves = st.one_of(
        shapes.map(lambda s: jnp.ones(s, dtype)),
        st.none(),
        st.just({}),
    )
    return draw(st.recursive(
        leaves,
        lambda children: st.one_of(
            st.dictionaries(st.sampled_from("abcde"), children, max_size=3),
            st.lists(children, max_size=3),
            st.lists(children, max_size=2).map(tuple),
        ),
        max_leaves=6,
    ))


def _range(arg: str, default: Any) -> tuple[float, float] | None:
    """Where a numeric argument is drawn from; ``None`` for the arguments not drawn."""
    if isinstance(default, bool) or not isinstance(default, float) or arg in STRUCTURAL:
        return None
    if arg == "rho":
        return 0.05, 0.95
    if arg in RATES:
        return 0.0, 0.999
    if arg.startswith("eps"):
        # eps = 0 divides 0 by 0 where every gradient so far was 0, as in the papers.
        return 1e-8, 1e-3
    if default > 0:
        return 0.1 * default, 10 * default
    return 0.0, 0.1


def _ranges(name: str) -> dict[str, tuple[float, float]]:
    defaults = jadam.optimizers[name].defaults
    ranges = {arg: r for arg, default in defaults.items() if (r := _range(arg, default))}
    ranges.setdefault("learning_rate", (1e-4, 0.5))  # SGD has no default
    if defaults.get("momentum", 0.0) is None:  # SGD's and RMSprop's: None keeps no buffer
        ranges["momentum"] = (0.0, 0.99)
    return ranges


def _apply(tx: Any, params: Any, state: Any, grads: Any) -> tuple[Any, Any, Any]:
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates


@pytest.mark.parametrize("name", sorted(jadam.optimizers))
@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_trees_and_hyperparameters(name: str, data: st.DataObject) -> None:
    params = data.draw(trees(), label="params")
    kwargs = {arg: data.draw(st.floats(lo, hi), label=arg)
              for arg, (lo, hi) in _ranges(name).items()}
    if name == "sgd" and data.draw(st.booleans(), label="nesterov"):
        kwargs.update(nesterov=True, dampening=0.0, momentum=max(kwargs["momentum"], 0.1))
    try:
        tx = jadam.optimizers[name].make(**kwargs)
    except ValueError:
        assume(False)  # a combination the constructor refuses, with its own message
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e2]), label="gradient scale")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    grads = [jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape) * scale, p.dtype), params)
        for _ in range(3)]

    state0 = tx.init(params)
    eager_p, eager_s = params, state0
    jit_p, jit_s = params, state0
    step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
    for g in grads:
        eager_p, eager_s, eager_u = _apply(tx, eager_p, eager_s, g)
        jit_p, jit_s, jit_u = step(jit_p, jit_s, g)
        for u in (eager_u, jit_u):
            chex.assert_trees_all_equal_shapes_and_dtypes(u, params)
            chex.assert_tree_all_finite(u)
        chex.assert_trees_all_equal_shapes_and_dtypes(eager_s, state0)
        chex.assert_trees_all_equal_shapes_and_dtypes(jit_s, state0)
        assert jax.tree.structure(jit_s) == jax.tree.structure(state0)

    # jit and eager: XLA contracts multiply-adds into FMAs in a compiled step, not op by op,
    # and a float32 result one ulp apart can round to neighbouring half-precision values. Per
    # leaf, normwise: 4 ulps of the leaf's dtype of its norm, plus 4 ulps of the update's norm
    # (the parameters move by the updates, whose own rounding differs).
    for a, b, u in zip(jax.tree.leaves(eager_p), jax.tree.leaves(jit_p),
                       jax.tree.leaves(jit_u), strict=True):
        if a.size:
            eps = float(jnp.finfo(a.dtype).eps)
            diff = float(jnp.linalg.norm((a.astype(jnp.float32) - b.astype(jnp.float32)).ravel()))
            size = float(jnp.linalg.norm(b.astype(jnp.float32).ravel()))
            step_size = float(jnp.linalg.norm(u.astype(jnp.float32).ravel()))
            assert diff <= 4 * eps * (size + step_size), (name, kwargs, diff, size)


def test_the_drawn_ranges_are_accepted() -> None:
    """Both ends of every range above are accepted by every optimizer (so ``assume`` above
    rejects combinations, not whole ranges)."""
    for name, info in jadam.optimizers.items():
        for end in (0, 1):
            info.make(**{arg: r[end] for arg, r in _ranges(name).items()})
