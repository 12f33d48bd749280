"""The scale_by_<name> building blocks: each optimizer's direction without learning rate,
weight decay or sign, so that optax.chain(scale_by_x(...), optax.scale(-lr)) is x(lr)."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import optax
import pytest

import jadam
from tests import helpers

DIRECTIONS = sorted(n for n in jadam.__all__ if n.startswith("scale_by_"))


@pytest.mark.parametrize("name", DIRECTIONS)
def test_direction_times_minus_lr_is_the_optimizer(name: str) -> None:
    """Over 20 steps of the test tree, chaining the direction with optax.scale(-lr) follows the
    full optimizer without weight decay. Tolerance: 1 float32 ulp of the leaf's largest
    |parameter| per step, so 20 after the 20 steps (the same products, fused by XLA in other
    places, may round apart at each step)."""
    direction = getattr(jadam, name)
    full = jadam.optimizers[name.removeprefix("scale_by_")].make
    lr = 1e-2
    kwargs = {"weight_decay": 0.0} if "weight_decay" in inspect.signature(full).parameters else {}
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, 20)
    ours, _ = helpers.run_jadam(optax.chain(direction(), optax.scale(-lr)), params, grads)
    want, _ = helpers.run_jadam(full(learning_rate=lr, **kwargs), params, grads)
    for a, b in zip(jax.tree.leaves(ours[-1]), jax.tree.leaves(want[-1]), strict=True):
        if b.size:
            ulp = float(np.finfo(np.float32).eps) * float(np.abs(b).max())
            np.testing.assert_allclose(a, b, rtol=0, atol=20 * ulp)


@pytest.mark.parametrize("name", DIRECTIONS)
def test_direction_takes_the_optimizers_hyperparameters(name: str) -> None:
    """The block takes the optimizer's arguments but the learning rate, weight decay, mask and
    maximize, with the same defaults. (Adan's block takes ``proximal``, the form of the decay,
    since the full optimizer is built from it. Muon's ``others``, a transformation for the
    leaves that are not matrices, is the full optimizer's: the block is the Muon part.)"""
    direction = inspect.signature(getattr(jadam, name)).parameters
    full = inspect.signature(jadam.optimizers[name.removeprefix("scale_by_")].make).parameters
    dropped = {"learning_rate", "weight_decay", "mask", "maximize", "decoupled_weight_decay",
               "others"}
    assert set(direction) == set(full) - dropped, name
    for arg, p in direction.items():
        assert p.default == full[arg].default, (name, arg)
