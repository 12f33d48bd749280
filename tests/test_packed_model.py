"""jadam.PackedModel: an NNX model trained with its small parameters packed, against the same
model trained the ordinary way (``nnx.Optimizer`` under ``nnx.jit``).

Both compute the same operations, but as two programs: the gradient of a leaf that reduces over
the batch (a bias's) is summed in another order where XLA fuses the reduction into the buffer's
concatenation, so even without FMA they differ by an ulp or so in some steps (seen: 3e-8 of a
0.05 bias after 20 steps of SGD with the instruction set capped at AVX). After 20 steps they
agree to 1e-5 of each array's scale. The optimizer's own part, the same update on a buffer and
on its leaves, is bit for bit without FMA (tests/test_without_fma.py, packed state).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam

nnx = pytest.importorskip("flax.nnx")
ocp = pytest.importorskip("orbax.checkpoint")

STEPS = 20


@pytest.fixture(autouse=True)
def _float32_products() -> Iterator[None]:
    """Matrix products in full float32 for both programs. On a GPU XLA multiplies float32
    matrices in TF32 by default (10 bits of mantissa), and the two programs' products, split
    differently, then drift apart by 1e-3 relative within 20 steps (seen on an H200); on a
    CPU this changes nothing."""
    with jax.default_matmul_precision("highest"):
        yield


class Model(nnx.Module):
    """Batch statistics (updated by the forward pass), many small leaves, one larger one."""

    def __init__(self, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(6)])
        self.wide = nnx.Linear(8, 600, rngs=rngs)  # its kernel and out's stay leaves
        self.out = nnx.Linear(600, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm(x)
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return self.out(jnp.tanh(self.wide(x)))


_RNG = np.random.default_rng(0)
X = jnp.asarray(_RNG.standard_normal((32, 8)) * 3 + 1, jnp.float32)
Y = jnp.stack([jnp.sin(X.sum(1)), jnp.cos(X[:, 0])], axis=1)


def loss_fn(model: Model, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(model(x) - y))


def _decay(params: nnx.State) -> nnx.State:
    return jax.tree.map(lambda p: p.ndim > 1, params)


TXS = {
    "adam": lambda: jadam.adam(1e-2),
    "adamw-masked": lambda: jadam.adamw(1e-2, weight_decay=0.1,
                                        mask=lambda p: _decay(p)),
    "sgd-nesterov": lambda: jadam.sgd(1e-2, momentum=0.9, nesterov=True),
    "optax.sgd": lambda: optax.sgd(1e-2, momentum=0.9),
}


def _packed(name: str, min_size: int) -> jadam.PackedModel:
    model = Model(nnx.Rngs(0))
    if name == "adamw-masked":
        return jadam.PackedModel(
            model, lambda mask: jadam.adamw(1e-2, weight_decay=0.1, mask=mask),
            decay=_decay, min_size=min_size)
    return jadam.PackedModel(model, TXS[name](), min_size=min_size)


def _plain(name: str, steps: int = STEPS) -> Model:
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, TXS[name](), wrt=nnx.Param)

    @nnx.jit
    def step(model: Model, optimizer: nnx.Optimizer) -> None:
        optimizer.update(model, nnx.grad(loss_fn)(model, X, Y))

    for _ in range(steps):
        step(model, optimizer)
    return model


def _leaves(model: Model) -> list:
    return jax.tree.leaves(nnx.as_pure(nnx.state(model)))


def _assert_close(got: list, want: list) -> None:
    for a, b in zip(got, want, strict=True):
        scale = float(np.max(np.abs(np.asarray(b)))) or 1.0
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", list(TXS))
def test_trains_as_the_nnx_optimizer(name: str) -> None:
    """20 steps packed (two buffers when masked: decayed and not) equal 20 steps of
    nnx.Optimizer: every parameter and the batch statistics."""
    trainer = _packed(name, min_size=1000)
    assert len(trainer.packed.buffers) == (2 if name == "adamw-masked" else 1)
    assert sum(x is not None for x in trainer.packed.leaves) == 2  # 8x600 and 600x2 kernels
    for _ in range(STEPS):
        loss = trainer.step(loss_fn, X, Y)
    assert np.isfinite(float(loss))
    want = _plain(name)
    _assert_close(_leaves(trainer.model()), _leaves(want))
    model = Model(nnx.Rngs(1))
    trainer.update(model)
    _assert_close(_leaves(model), _leaves(want))


def test_the_mask_reaches_the_right_leaves() -> None:
    """With the decay mask inverted (biases decayed, matrices not), the packed run still
    equals the plain run with that mask, and differs from the run with the right mask: the
    buffers carry the mask, not the optimizer's default."""
    def inverted(p: nnx.State) -> nnx.State:
        return jax.tree.map(lambda x: not x, _decay(p))

    trainer = jadam.PackedModel(
        Model(nnx.Rngs(0)), lambda mask: jadam.adamw(1e-2, weight_decay=0.5, mask=mask),
        decay=inverted, min_size=1000)
    for _ in range(5):
        trainer.step(loss_fn, X, Y)
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, jadam.adamw(1e-2, weight_decay=0.5, mask=inverted),
                              wrt=nnx.Param)
    for _ in range(5):
        optimizer.update(model, nnx.grad(loss_fn)(model, X, Y))
    _assert_close(_leaves(trainer.model()), _leaves(model))
    right = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(right, jadam.adamw(1e-2, weight_decay=0.5, mask=_decay),
                              wrt=nnx.Param)
    for _ in range(5):
        optimizer.update(right, nnx.grad(loss_fn)(right, X, Y))
    apart = [float(jnp.max(jnp.abs(a - b)))
             for a, b in zip(_leaves(trainer.model()), _leaves(right), strict=True)]
    assert max(apart) > 1e-4


def test_aux_and_a_checkpoint_resume_as_if_never_stopped(tmp_path: pathlib.Path) -> None:
    """has_aux returns the function's aux; the state saved with orbax after 10 steps and
    restored into a fresh PackedModel continues to the uninterrupted run's bits."""
    def with_aux(model: Model, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = model(x)
        return jnp.mean(jnp.square(out - y)), out

    straight = _packed("adam", min_size=1000)
    for _ in range(STEPS):
        loss, out = straight.step(with_aux, X, Y, has_aux=True)
    assert out.shape == Y.shape
    np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.square(out - Y))), rtol=1e-6)

    first = _packed("adam", min_size=1000)
    for _ in range(STEPS // 2):
        first.step(with_aux, X, Y, has_aux=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", first.state)
    checkpointer.wait_until_finished()
    resumed = jadam.PackedModel(Model(nnx.Rngs(5)), jadam.adam(1e-2), min_size=1000)
    abstract = jax.tree.map(jnp.zeros_like, resumed.state)
    resumed.state = checkpointer.restore(tmp_path / "state", abstract)
    checkpointer.close()
    for _ in range(STEPS - STEPS // 2):
        resumed.step(with_aux, X, Y, has_aux=True)
    chex.assert_trees_all_equal(resumed.state, straight.state)
    with pytest.raises(ValueError, match="structure"):
        resumed.state = {"params": resumed.packed}


@pytest.mark.parametrize("make", [lambda: jadam.lamb(1e-2), lambda: jadam.adam_mini(1e-2),
                                  lambda: jadam.cautious(jadam.adamw(1e-2))],
                         ids=["lamb", "adam_mini", "cautious"])
def test_refuses_optimizers_that_reduce_over_each_array(make: object) -> None:
    with pytest.raises(ValueError, match="cannot be packed"):
        jadam.PackedModel(Model(nnx.Rngs(0)), make())  # type: ignore[operator]


def test_decay_needs_a_function_of_the_mask() -> None:
    with pytest.raises(TypeError, match="function of the mask"):
        jadam.PackedModel(Model(nnx.Rngs(0)), jadam.adamw(1e-2), decay=_decay)
    with pytest.raises(TypeError, match="optax optimizer"):
        jadam.PackedModel(Model(nnx.Rngs(0)), lambda mask: None)  # type: ignore[arg-type]
