"""Users' reports from moving training scripts from optax to jadam, one test each: what optax
accepts, jadam accepts, and where jadam differs, it says so."""

from __future__ import annotations

import contextlib
import pickle
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam


def _make(name: str, **kwargs):
    info = jadam.optimizers[name]
    if "learning_rate" not in info.defaults:
        kwargs.setdefault("learning_rate", 1e-2)
    return info.make(**kwargs)


@pytest.mark.parametrize("name", sorted(jadam.optimizers))
def test_python_numbers_as_parameters_and_gradients(name: str) -> None:
    """optax takes a Python float as a parameter or gradient; so does jadam, with the updates
    of the same values as float32 arrays."""
    tx = _make(name)
    params = {"a": 1.5, "b": jnp.ones(3)}
    arrays = {"a": jnp.float32(1.5), "b": jnp.ones(3)}
    grads, array_grads = {"a": 0.25, "b": jnp.full(3, 0.5)}, {"a": jnp.float32(0.25),
                                                              "b": jnp.full(3, 0.5)}
    updates, state = tx.update(grads, tx.init(params), params)
    want, want_state = tx.update(array_grads, tx.init(arrays), arrays)
    chex.assert_trees_all_equal(updates, want)
    chex.assert_trees_all_equal(state, want_state)


def test_sgd_accumulator_dtype() -> None:
    """optax.sgd's accumulator_dtype: the momentum buffer in that dtype, the updates of
    optax.sgd with the same buffer dtype."""
    params = {"w": jnp.linspace(-1.0, 1.0, 8)}
    tx = jadam.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16)
    theirs = optax.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16)
    state, their_state = tx.init(params), theirs.init(params)
    assert state.trace["w"].dtype == jnp.bfloat16
    for i in range(3):
        g = {"w": jnp.sin(params["w"] * (i + 1))}
        u, state = tx.update(g, state, params)
        with jax.numpy_dtype_promotion("standard"):  # optax's sgd mixes dtypes
            v, their_state = theirs.update(g, their_state, params)
        chex.assert_trees_all_close(u, v, rtol=1e-2)
    with pytest.raises(ValueError, match="accumulator_dtype must be a floating or complex dtype"):
        jadam.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.int32)


def test_integer_leaves_stay_as_they_are_with_multi_transform() -> None:
    """What the README advises for integer (or any frozen) leaves: optax.multi_transform with
    optax.set_to_zero leaves them bit for bit. optax.masked does not: it passes their gradient
    through as the update (here the integer 'gradient' 1 is added to the step counter)."""
    params = {"w": jnp.ones((2, 2)), "steps": jnp.zeros((), jnp.int32)}
    grads = {"w": jnp.ones((2, 2)), "steps": jnp.ones((), jnp.int32)}
    labels = {"w": "train", "steps": "frozen"}
    tx = optax.multi_transform({"train": jadam.adam(0.1), "frozen": optax.set_to_zero()},
                               labels)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert new["steps"].dtype == jnp.int32
    assert int(new["steps"]) == 0
    np.testing.assert_allclose(new["w"], 0.9, rtol=1e-6)
    masked = optax.masked(jadam.adam(0.1), {"w": True, "steps": False})
    updates, _ = masked.update(grads, masked.init(params), params)
    assert int(optax.apply_updates(params, updates)["steps"]) == 1


def _wrapped(name: str) -> dict:
    tx = _make(name)
    out = {"plain": tx, "quantized": jadam.quantized(tx, min_size=1),
           "quantized4": jadam.quantized(tx, bits=4, min_size=1),
           "skip_nonfinite": jadam.skip_nonfinite(tx), "cautious": jadam.cautious(tx)}
    with contextlib.suppress(ValueError):  # not elementwise: cannot be packed
        out["packed"] = jadam.packed(tx, min_size=100)
    return out


@pytest.mark.parametrize("name", sorted(jadam.optimizers))
def test_transformations_pickle(name: str) -> None:
    """Every optimizer, plain and wrapped, survives pickle (each pickles as the call that made
    it) and gives the same updates afterwards."""
    params = {"w": jnp.linspace(-1.0, 1.0, 300).reshape(20, 15), "b": jnp.ones(15)}
    grads = jax.tree.map(jnp.cos, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for wrap, tx in _wrapped(name).items():
            again = pickle.loads(pickle.dumps(tx))
            want, _ = tx.update(grads, tx.init(params), params)
            got, _ = again.update(grads, again.init(params), params)
            chex.assert_trees_all_equal(got, want, custom_message=wrap)


@pytest.mark.parametrize("name", sorted(jadam.optimizers))
def test_a_huge_gradient_leaves_a_finite_state(name: str) -> None:
    """A float32 gradient of 1e30 squares to inf; a moment that sums squares saturates at the
    float32 maximum instead, so the state stays finite and later steps work again."""
    tx = _make(name)
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    state = tx.init(params)
    huge = {"w": jnp.full((4, 3), 1e30).at[0, 0].set(-1e30), "b": jnp.full(3, 1e30)}
    _, state = jax.jit(tx.update)(huge, state, params)
    chex.assert_tree_all_finite(state)
    updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    chex.assert_tree_all_finite((updates, state))
