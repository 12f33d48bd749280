"""Bad input, faults and restarts: one table of behaviours, every optimizer in the registry.

Each behaviour is a function of the optimizer's name that asserts; ``test_behaviour`` runs the
whole table. Hyperparameter validation is the table of ``test_validation.py`` (every
constructor, every argument). The README's "Guarantees" section lists what is tested here.
"""

from __future__ import annotations

import inspect
import pickle
import re
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests.optimizers import NEEDS_PARAMS, REDUCES, SPREADS_NAN

OPTIMIZERS = sorted(jadam.optimizers)
# The optimizers that reduce over an array cannot be packed (a clear error, tested in
# test_packing).
UNPACKABLE = REDUCES


def make(name: str, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
    """The registry's optimizer ``name``; SGD with momentum, so that it has a state array."""
    if name == "sgd":
        kwargs = {"learning_rate": 0.1, "momentum": 0.9, **kwargs}
    return jadam.optimizers[name].make(**kwargs)


def other_than(name: str) -> str:
    """An optimizer whose state has another type than ``name``'s."""
    own = type(make(name).init({}))
    return next(o for o in ("lion", "adam") if type(make(o).init({})) is not own)


def tree(dtype: Any = jnp.float32, value: float = 1.0) -> dict[str, Any]:
    """A small tree with a matrix, a vector, a scalar, a None leaf and an empty subtree."""
    dense = {"kernel": jnp.full((3, 4), value, dtype), "bias": jnp.full((4,), value, dtype)}
    return {"dense": dense,
            "scale": jnp.full((), value, dtype), "frozen": None, "empty": {}}


def grads_like(params: Any, seed: int, scale: float = 1.0, dtype: Any = None) -> Any:
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape) * scale, dtype or p.dtype), params)


def run(tx: Any, params: Any, state: Any, seeds: range, step: Callable | None = None) -> Any:
    """Applies the gradients of ``seeds`` one by one; returns (params, state)."""
    step = step or jax.jit(_step(tx))
    for seed in seeds:
        params, state = step(params, state, grads_like(params, seed))
    return params, state


def _step(tx: Any) -> Callable:
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step


def all_finite(x: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(x)
               if jnp.issubdtype(leaf.dtype, jnp.inexact))


BEHAVIOURS: dict[str, Callable[[str], None]] = {}


def behaviour(fn: Callable[[str], None]) -> Callable[[str], None]:
    BEHAVIOURS[fn.__name__] = fn
    return fn


# --- Inputs to update: caught at trace time, naming the leaf ----------------------------------

@behaviour
def gradient_tree_differs(name: str) -> None:
    params = tree()
    tx = make(name)
    grads = {**params, "extra": jnp.ones(2)}
    with pytest.raises(ValueError, match=re.escape(f"jadam.{name}: the gradients and")):
        jax.jit(tx.update)(grads, tx.init(params), params)


@behaviour
def shapes_never_broadcast(name: str) -> None:
    params = {"v": jnp.ones((3,))}
    tx = make(name)
    for bad in [(3, 1), (1, 3), (1,)]:
        with pytest.raises(ValueError, match=re.escape(f"gradient at ['v'] has shape {bad}")):
            jax.jit(tx.update)({"v": jnp.ones(bad)}, tx.init(params), params)


@behaviour
def integer_and_boolean_parameters_refused(name: str) -> None:
    for dtype in (jnp.int32, jnp.bool_, jnp.uint8):
        params = {"w": jnp.ones(2), "steps": jnp.zeros((2,), dtype)}
        with pytest.raises(TypeError, match=re.escape("parameter ['steps'] has dtype")) as e:
            make(name).init(params)
        assert "optax.multi_transform" in str(e.value)


@behaviour
def masked_integer_parameters_untouched(name: str) -> None:
    params = {"w": jnp.ones((2, 3)), "steps": jnp.arange(3, dtype=jnp.int32)}
    tx = optax.masked(make(name), {"w": True, "steps": False})
    state = tx.init(params)
    grads = {"w": jnp.full((2, 3), 0.5), "steps": jnp.zeros(3, jnp.int32)}
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert params["steps"].dtype == jnp.int32
    np.testing.assert_array_equal(params["steps"], np.arange(3))
    assert bool(jnp.all(params["w"] != 1.0))


@behaviour
def state_of_another_optimizer_refused(name: str) -> None:
    params = tree()
    tx = make(name)
    other = other_than(name)
    for foreign in (optax.adam(1e-3).init(params), make(other).init(params)):
        with pytest.raises(TypeError, match="that this optimizer's init"):
            tx.update(params, foreign, params)


@behaviour
def state_restored_as_dicts_refused(name: str) -> None:
    params = tree()
    tx = make(name)
    as_dicts = tx.init(params)._asdict()
    with pytest.raises(TypeError, match=r"got a state of type dict.*without a template"):
        tx.update(params, as_dicts, params)


@behaviour
def state_of_another_dtype_refused(name: str) -> None:
    params = {"w": jnp.ones((2, 3))}
    tx = make(name)
    state = tx.init(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
    with pytest.raises(TypeError, match=re.escape("at ['w'] has dtype bfloat16")):
        jax.jit(tx.update)(params, state, params)


@behaviour
def none_gradient_for_an_array_refused(name: str) -> None:
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    tx = make(name)
    with pytest.raises(ValueError, match=re.escape("The gradient at ['a'] is None")):
        tx.update({"a": None, "b": jnp.ones(3)}, tx.init(params), params)


@behaviour
def missing_params_named(name: str) -> None:
    params = tree()
    tx = make(name)
    if name in NEEDS_PARAMS:
        with pytest.raises(ValueError, match=re.escape(f"jadam.{name}: update() needs params")):
            tx.update(params, tx.init(params))
        tx = make(name, weight_decay=0.0)
        if name not in {"adafactor", "lamb", "schedule_free_adamw", "prodigy"}:
            tx.update(params, tx.init(params))  # without decay, params are not needed
    else:
        updates, _ = tx.update(params, tx.init(params))
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)


# --- Numerics ----------------------------------------------------------------------------------

@behaviour
def half_precision_zero_and_tiny_gradients_are_finite(name: str) -> None:
    """eps is applied in float32, where float16 would round 1e-8 to 0 and divide 0 by 0."""
    for dtype in (jnp.float16, jnp.bfloat16):
        tiny = float(jnp.finfo(dtype).smallest_subnormal)
        for value in (0.0, tiny, -tiny):
            params = tree(dtype)
            tx = make(name, weight_decay=0.0)
            state = tx.init(params)
            grads = jax.tree.map(lambda p, v=value: jnp.full_like(p, v), params)
            for _ in range(3):
                updates, state = tx.update(grads, state, params)
                assert all_finite((updates, state)), (dtype, value)
                chex.assert_trees_all_equal_dtypes(updates, params)
                if value == 0.0:
                    assert all(not bool(jnp.any(u)) for u in jax.tree.leaves(updates))


@behaviour
def float16_squared_gradient_saturates(name: str) -> None:
    """A float16 gradient of 3e4 squares to 9e8, past float16's 65504: the stored moments
    saturate instead of becoming inf, and later ordinary steps still move the parameters."""
    params = {"w": jnp.ones((4,), jnp.float16)}
    # (Prodigy's steps start at d0 = 1e-6, below float16's range; 1e-2 makes them visible.)
    tx = make(name, learning_rate=1e-2, **({"d0": 1e-2} if name == "prodigy" else {}))
    state = tx.init(params)
    big = {"w": jnp.array([3e4, -3e4, 1.0, 0.5], jnp.float16)}
    updates, state = tx.update(big, state, params)
    assert all_finite(updates)
    assert all_finite(state)
    small = {"w": jnp.array([1.0, -1.0, 1.0, -1.0], jnp.float16)}
    for _ in range(3):
        updates, state = tx.update(small, state, params)
    assert all_finite(updates)
    assert all_finite(state)
    assert bool(jnp.all(updates["w"] != 0)), updates


@behaviour
def nonfinite_gradient_default(name: str) -> None:
    """The documented default: the entry with a NaN gets a NaN update (every entry, for the
    optimizers in SPREADS_NAN); the others leave the other entries finite."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones((3,))}
    tx = make(name)
    state = tx.init(params)
    grads = grads_like(params, 0)
    grads["w"] = grads["w"].at[0, 1].set(jnp.nan)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert bool(jnp.isnan(updates["w"][0, 1]))
    others = jnp.delete(updates["w"].ravel(), 1)
    assert all_finite(updates["b"])
    assert bool(jnp.all(jnp.isfinite(others))) == (name not in SPREADS_NAN)


@behaviour
def skip_nonfinite_changes_nothing_and_counts(name: str) -> None:
    params = tree()
    params["dense"]["bias"] = params["dense"]["bias"].at[0].set(-0.0)
    tx = jadam.skip_nonfinite(make(name), give_up_after=2)
    step = jax.jit(_step(tx))
    params, state = run(tx, params, tx.init(params), range(2), step)
    for bad in (jnp.nan, -jnp.inf):
        grads = grads_like(params, 7)
        grads["scale"] = jnp.asarray(bad, jnp.float32)
        new_params, new_state = step(params, state, grads)
        chex.assert_trees_all_equal(new_params, params)  # bit for bit, -0.0 included
        chex.assert_trees_all_equal(new_state.inner, state.inner)
        assert int(new_state.skipped) == int(state.skipped) + 1
        params, state = new_params, new_state
    assert int(state.consecutive) == 2
    # A third non-finite step in a row is taken (given up on); a finite one resets the run.
    grads = grads_like(params, 8)
    grads["scale"] = jnp.asarray(jnp.nan, jnp.float32)
    gave_up, _ = step(params, state, grads)
    assert bool(jnp.isnan(gave_up["scale"]))
    params, state = step(params, state, grads_like(params, 9))
    assert int(state.consecutive) == 0
    assert int(state.skipped) == 2
    assert all_finite(params)


@behaviour
def step_count_saturates(name: str) -> None:
    params = tree()
    tx = make(name)
    state = tx.init(params)
    top = jnp.iinfo(jnp.int32).max
    state = state._replace(count=jnp.asarray(top - 1, jnp.int32))
    for _ in range(3):
        updates, state = tx.update(grads_like(params, 0), state, params)
        assert int(state.count) == top
        assert all_finite(updates)


@behaviour
def jit_and_eager_agree(name: str) -> None:
    """Within 4 float32 ulps, normwise per leaf: XLA contracts multiply-adds into FMAs (one
    rounding instead of two) in a compiled step but not op by op; observed at most 1 ulp.
    Prodigy's r is a sum over the tree of <g, x0 - x>, whose terms cancel: a few ulps of each
    term are 12 of the sum (observed), so 64 there."""
    params = tree()
    tx = make(name)
    ulps = 64 if name == "prodigy" else 4
    eager_p, eager_s = run(tx, params, tx.init(params), range(3), step=_step(tx))
    jit_p, jit_s = run(tx, params, tx.init(params), range(3))
    eps = float(jnp.finfo(jnp.float32).eps)
    for a, b in zip(jax.tree.leaves((eager_p, eager_s)), jax.tree.leaves((jit_p, jit_s)),
                    strict=True):
        if jnp.issubdtype(a.dtype, jnp.floating) and a.size:
            err = float(jnp.linalg.norm((a - b).ravel()))
            assert err <= ulps * eps * max(float(jnp.linalg.norm(b.ravel())), 1e-30), (a, b)
        else:
            np.testing.assert_array_equal(a, b)


@behaviour
def bad_schedule_values_give_nan_not_ascent(name: str) -> None:
    """A schedule cannot be checked before it runs, nor raise inside jit: a negative or NaN
    learning rate makes that step's updates NaN, never a step uphill; a later valid value
    trains again (except Schedule-Free, whose average keeps the NaN)."""
    params = {"w": jnp.ones((2,))}
    for bad in (-1e-3, float("nan")):
        def schedule(count, bad=bad):
            return jnp.where(count == 1, bad, 1e-3).astype(jnp.float32)
        tx = make(name, learning_rate=schedule, weight_decay=0.0)
        state = tx.init(params)
        results = []
        for _ in range(3):
            updates, state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)
            results.append(updates["w"])
        assert all_finite(results[0])
        assert bool(jnp.all(jnp.isnan(results[1]))), (bad, results[1])
        # Schedule-Free's average weighs each step by its learning rate: the NaN stays in it.
        assert all_finite(results[2]) == (name != "schedule_free_adamw")


# --- State and checkpoints ---------------------------------------------------------------------

def _through_orbax(x: Any, like: Any) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        jadam.checkpoint.save(f"{d}/ckpt", x)
        return jadam.checkpoint.restore(f"{d}/ckpt", like)


@behaviour
def checkpoint_round_trips_continue_bit_identically(name: str) -> None:
    """Three steps, saved and restored with pickle and with orbax (jadam.checkpoint), then
    three more: bit for bit the six uninterrupted steps; plain, 8-bit and (where the optimizer
    allows) packed state."""
    ways = {"pickle": lambda x, like: pickle.loads(pickle.dumps(x)), "orbax": _through_orbax}
    layouts = [make(name), jadam.quantized(make(name), min_size=4)]
    if name not in UNPACKABLE:
        layouts.append(jadam.packed(make(name)))
    for tx in layouts:
        params = tree()
        step = jax.jit(_step(tx))
        whole = run(tx, params, tx.init(params), range(6), step)
        saved = run(tx, params, tx.init(params), range(3), step)
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), saved)
        for way, save_restore in ways.items():
            p, s = save_restore(saved, like)
            resumed = run(tx, p, s, range(3, 6), step)
            chex.assert_trees_all_equal(resumed, whole, custom_message=way)
            assert jax.tree.structure(resumed) == jax.tree.structure(whole), way


@behaviour
def restoring_into_something_else_is_a_clear_error(name: str) -> None:
    import tempfile

    params = tree()
    state = make(name).init(params)
    other = other_than(name)
    wider = {**params, "dense": {**params["dense"], "kernel": jnp.ones((3, 5))}}
    with tempfile.TemporaryDirectory() as d:
        jadam.checkpoint.save(f"{d}/ckpt", state)
        templates = {
            "no template": (None, TypeError, "pass like="),
            "another optimizer": (make(other).init(params), ValueError, "saved jadam."),
            "another tree": (make(name).init({"x": jnp.ones(2)}), ValueError,
                             "in the checkpoint, not in the template"),
            "another shape": (make(name).init(wider), ValueError, "saved shape ("),
            "another dtype": (make(name).init(tree(jnp.bfloat16)), ValueError,
                              "saved dtype float32, template bfloat16"),
        }
        for what, (like, error, says) in templates.items():
            with pytest.raises(error, match=re.escape(says)):
                jadam.checkpoint.restore(f"{d}/ckpt", like)
            del what


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("what", list(BEHAVIOURS))
def test_behaviour(what: str, name: str) -> None:
    BEHAVIOURS[what](name)


def test_tables_cover_every_optimizer_and_behaviour() -> None:
    """Every optimizer of the registry has a row in the test table (tests/optimizers.py), so
    the battery checks it against its paper; and every behaviour takes the optimizer's name."""
    from tests.optimizers import CASES

    assert len(BEHAVIOURS) >= 17
    in_table = {getattr(c.ctor, "func", c.ctor).__name__ for c in CASES}
    assert set(jadam.optimizers) - in_table == set()
    # The trait sets name optimizers of the registry (a misspelt name would exempt no one).
    assert (REDUCES | SPREADS_NAN | NEEDS_PARAMS) - set(jadam.optimizers) == set()
    for fn in BEHAVIOURS.values():
        assert next(iter(inspect.signature(fn).parameters)) == "name"


def test_float32_state_fixes_bfloat16_stagnation() -> None:
    """bfloat16 keeps 8 significant bits, so Adam's second moment, which may shrink by only
    1 - b2 = 0.1% a step, cannot shrink at all once stored in bfloat16: near the optimum it
    stays at its largest value and the steps shrink with the gradients, like plain SGD. Fitting
    256 bfloat16 parameters by least squares (lr 1e-2, 4,000 steps), the bfloat16 state's
    largest second moment is the same at steps 2,000 and 4,000 and the loss went from 1.7e-4 to
    1.4e-4; with float32 state (mu_dtype, nu_dtype) it fell from 2.5e-5 to 1.8e-6."""
    target = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, 256), jnp.float32)

    def loss(p: jax.Array) -> jax.Array:
        return 0.5 * jnp.mean(jnp.square(p.astype(jnp.float32) - target))

    def train(tx: Any, steps: int) -> tuple[float, float]:
        def body(_: Any, carry: Any) -> Any:
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return optax.apply_updates(p, u), s

        p0 = jnp.zeros(256, jnp.bfloat16)
        p, s = jax.jit(lambda p: jax.lax.fori_loop(0, steps, body, (p, tx.init(p))))(p0)
        return float(loss(p)), float(jnp.max(s.nu.astype(jnp.float32)))

    bf16 = {n: train(jadam.adam(1e-2), n) for n in (2000, 4000)}
    f32 = {n: train(jadam.adam(1e-2, mu_dtype=jnp.float32, nu_dtype=jnp.float32), n)
           for n in (2000, 4000)}
    assert bf16[2000][1] == bf16[4000][1]  # the second moment is stuck
    assert f32[4000][1] < f32[2000][1] / 4  # ... and decays in float32
    assert bf16[4000][0] > 0.7 * bf16[2000][0]  # the loss stalls
    assert f32[4000][0] < bf16[4000][0] / 20
