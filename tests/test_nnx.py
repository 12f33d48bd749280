"""Every jadam optimizer, plain and in every wrapper, as flax users hold it: in
``flax.nnx.Optimizer``, stepped under ``nnx.jit`` and in the ``nnx.split``/``nnx.merge`` +
``jax.jit`` style, against the same optimizer in a functional loop (``tx.init``/``tx.update``
on the parameters' arrays); and its ``nnx.state`` saved and restored with orbax mid-run.

NNX wraps each array of the state ``init`` returns in a Variable and rebuilds the tree, and
calls ``init`` on ``Param`` variables but ``update`` on plain arrays: states whose leaves are
not single arrays (8-bit moments were a (codes, scales) pair) or that record the tree they were
made for (packed state) broke there.

The three ways compute the same operations on the same arrays; they are compiled as three
programs, which give the same bits without FMA (asserted there: tests/test_without_fma.py runs
Adam's six combinations so; all of Adam's, Lion's and Adafactor's passed so by hand). With FMA,
XLA may contract a multiply-add in one program and not in another: then 1e-5 of each array's
scale after 20 steps (8-bit state: a rounding apart can pick the neighbouring code, 2e-2).
"""

from __future__ import annotations

import pathlib
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests.helpers import WITHOUT_FMA
from tests.optimizers import REDUCES

nnx = pytest.importorskip("flax.nnx")
ocp = pytest.importorskip("orbax.checkpoint")

NOT_ELEMENTWISE = REDUCES  # (see tests/optimizers.py)
STEPS = 20


def _wrappers(name: str) -> dict:
    def one_pass(tx):
        return tx.with_options(one_pass_min_size=1)  # on every array, flag or not

    out = {
        "plain": lambda tx: tx,
        "quantized": lambda tx: jadam.quantized(tx, min_size=256),
        "quantized4": lambda tx: jadam.quantized(tx, bits=4, min_size=256),
        "one_pass": one_pass,
        "skip_nonfinite": jadam.skip_nonfinite,
        "cautious": jadam.cautious,
    }
    if name not in NOT_ELEMENTWISE:
        out["packed"] = lambda tx: jadam.packed(tx, min_size=1000)
    return out


COMBOS = [(name, wrap) for name in sorted(jadam.optimizers) for wrap in _wrappers(name)]


class Model(nnx.Module):
    """Leaves of 16 to 512 elements: 8-bit state quantizes the largest, packing the others."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.wide = nnx.Linear(16, 32, rngs=rngs)
        self.out = nnx.Linear(32, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.wide(jnp.tanh(self.hidden(x)))))


X = jnp.asarray(np.random.default_rng(0).standard_normal((32, 8)), jnp.float32)
Y = jnp.stack([jnp.sin(X.sum(1)), jnp.cos(X[:, 0])], axis=1)


def loss_fn(model: Model) -> jax.Array:
    return jnp.mean(jnp.square(model(X) - Y))


def _make(name: str, wrap: str) -> optax.GradientTransformation:
    info = jadam.optimizers[name]
    kwargs = {} if "learning_rate" in info.defaults else {"learning_rate": 1e-2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _wrappers(name)[wrap](info.make(**kwargs))


def _functional(tx: optax.GradientTransformation) -> list:
    graphdef, params = nnx.split(Model(nnx.Rngs(0)), nnx.Param)
    params = nnx.as_pure(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p)))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(STEPS):
        params, state = step(params, state)
    return jax.tree.leaves(params)


@nnx.jit
def _nnx_step(model: Model, optimizer: nnx.Optimizer) -> None:
    optimizer.update(model, nnx.grad(loss_fn)(model))


def _params(model: Model) -> list:
    return jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param)))


def _assert_close(got: list, want: list, quantized: bool) -> None:
    if WITHOUT_FMA:
        chex.assert_trees_all_equal(got, want)
        return
    for a, b in zip(got, want, strict=True):
        scale = float(np.max(np.abs(np.asarray(b)))) or 1.0
        np.testing.assert_allclose(a, b, rtol=0, atol=(2e-2 if quantized else 1e-5) * scale)


@pytest.mark.parametrize(("name", "wrap"), COMBOS, ids=[f"{n}-{w}" for n, w in COMBOS])
def test_nnx_optimizer_trains_as_the_functional_loop(
    name: str, wrap: str, tmp_path: pathlib.Path
) -> None:
    tx = _make(name, wrap)
    want = _functional(tx)

    # nnx.jit, with an orbax round trip of nnx.state halfway: into a fresh optimizer.
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(STEPS // 2):
        _nnx_step(model, optimizer)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", nnx.state((model, optimizer)))
    checkpointer.wait_until_finished()
    model = Model(nnx.Rngs(1))  # other initial values, all overwritten
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    abstract = jax.tree.map(jnp.zeros_like, nnx.state((model, optimizer)))
    nnx.update((model, optimizer), checkpointer.restore(tmp_path / "state", abstract))
    checkpointer.close()
    for _ in range(STEPS - STEPS // 2):
        _nnx_step(model, optimizer)
    _assert_close(_params(model), want, wrap.startswith("quantized"))
    assert int(optimizer.step[...]) == STEPS

    # nnx.split / nnx.merge around jax.jit.
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state):
        model, optimizer = nnx.merge(graphdef, state)
        optimizer.update(model, nnx.grad(loss_fn)(model))
        return nnx.state((model, optimizer))

    for _ in range(STEPS):
        state = step(state)
    model, _ = nnx.merge(graphdef, state)
    _assert_close(_params(model), want, wrap.startswith("quantized"))
