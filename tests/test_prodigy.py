"""jadam.prodigy beyond the battery: the one estimate of d for the whole tree, and what makes
it learning-rate free."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam


def _train(tx: optax.GradientTransformation, loss, params, steps: int):
    def body(_, carry):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, tx.init(p))))(params)


@pytest.mark.parametrize("distance", [1e-2, 1.0, 1e2])
def test_the_same_rate_finds_minima_at_any_distance(distance: float) -> None:
    """Learning rate 1 and d0 = 1e-6 for a quadratic whose minimum is 1e-2, 1 or 100 away:
    the estimate d grows to the scale of the distance (within 10x of it) and the loss falls
    below 1e-4 of where it started, with nothing tuned."""
    target = distance * jnp.asarray(np.random.default_rng(0).standard_normal(16), jnp.float32)

    def loss(p):
        return jnp.sum((p["x"] - target) ** 2)

    start = {"x": jnp.zeros(16)}
    def cosine(count):  # from 1 to 0, as the authors advise
        return 0.5 * (1 + jnp.cos(jnp.pi * count.astype(jnp.float32) / 1000))

    params, state = _train(jadam.prodigy(cosine), loss, start, 1000)
    assert float(loss(params)) < 1e-4 * float(loss(start))
    assert distance / 100 < float(state.d) < 10 * distance, float(state.d)


def test_one_estimate_for_the_whole_tree() -> None:
    """A vector split into two leaves trains as the vector in one leaf: the inner product and
    the norm run over the tree (to float32 rounding: the sums run in another order)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal(10), jnp.float32)
    target = jnp.asarray(rng.standard_normal(10), jnp.float32)

    def whole(p):
        return jnp.sum((p["x"] - target) ** 2 * jnp.arange(1, 11, dtype=jnp.float32))

    def split(p):
        return whole({"x": jnp.concatenate([p["a"], p["b"]])})

    tx = jadam.prodigy()
    one, s1 = _train(tx, whole, {"x": x}, 100)
    two, s2 = _train(tx, split, {"a": x[:4], "b": x[4:]}, 100)
    np.testing.assert_allclose(float(s2.d), float(s1.d), rtol=1e-4)
    np.testing.assert_allclose(jnp.concatenate([two["a"], two["b"]]), one["x"], atol=1e-4)
    assert float(s1.d) > 1e-3  # (it grew from 1e-6: the test compares a real estimate)


def test_zero_gradients_leave_the_estimate_and_the_parameters() -> None:
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    tx = jadam.prodigy(weight_decay=0.0)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert float(state.d) == pytest.approx(1e-6)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))


def test_it_cannot_be_packed_and_says_why() -> None:
    with pytest.raises(ValueError, match="cannot be packed"):
        jadam.packed(jadam.prodigy())


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"d0": 0.0}, "d0"), ({"d_coef": -1.0}, "d_coef"), ({"b3": 1.0}, "b3"),
    ({"learning_rate": None}, "learning_rate"),
])
def test_bad_arguments_are_refused(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        jadam.prodigy(**kwargs)
