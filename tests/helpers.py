"""Shared test helpers: random parameter trees and step-by-step runs of jadam and references."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests import reference

#: Whether this process runs with the CPU instruction set capped below FMA, as
#: tests/test_without_fma.py runs the tests whose claims are bit for bit only there.
WITHOUT_FMA = bool(re.search(r"--xla_cpu_max_isa=(SSE4_2|AVX)(\s|$)",
                             os.environ.get("XLA_FLAGS", "")))

# Leaves of several ranks, one of them empty; gradient scales differ by 1e4 so that eps matters
# for some leaves and not for others.
SHAPES = {"scalar": (), "vec": (7,), "mat": (4, 5), "cube": (2, 3, 4), "empty": (0, 3)}
SCALES = {"scalar": 1.0, "vec": 1e-3, "mat": 1.0, "cube": 10.0, "empty": 1.0}


def random_tree(rng: np.random.Generator, dtype: Any = np.float32, scale: bool = False) -> dict:
    """A nested dict of random arrays with the shapes above, as jax arrays of ``dtype``."""
    def leaf(name: str) -> jax.Array:
        x = rng.standard_normal(SHAPES[name])
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = x + 1j * rng.standard_normal(SHAPES[name])
        return jnp.asarray(x * (SCALES[name] if scale else 1.0), dtype=dtype)

    return {
        "layer": {"w": leaf("mat"), "b": leaf("vec")},
        "cube": leaf("cube"),
        "scalar": leaf("scalar"),
        "empty": leaf("empty"),
    }


def gradient_sequence(seed: int, steps: int, dtype: Any = np.float32) -> list[dict]:
    return list(_gradient_sequence(seed, steps, np.dtype(dtype)))


@functools.lru_cache(maxsize=32)
def _gradient_sequence(seed: int, steps: int, dtype: np.dtype) -> tuple[dict, ...]:
    # Made once per process: hundreds of tests replay the same 200 steps, and putting 1,000
    # small arrays on the device costs 0.2 s each time. jax arrays are immutable, so sharing
    # them is safe.
    rng = np.random.default_rng(seed)
    return tuple(random_tree(rng, dtype, scale=True) for _ in range(steps))


def run_jadam(
    tx: optax.GradientTransformation, params: Any, grads: list[Any]
) -> tuple[list[Any], list[Any]]:
    """Runs a jitted update over ``grads``; returns the parameters and states after each step."""
    step = jax.jit(tx.update)
    state = tx.init(params)
    trajectory, states = [], []
    for g in grads:
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
        states.append(state)
    return trajectory, states


def run_reference(ref: Any, params: Any, grads: list[Any]) -> list[Any]:
    """Runs a float64 reference over ``grads``, leaf by leaf; returns the parameters per step."""
    leaves, treedef = jax.tree.flatten(params)
    p = [reference.wide(x) for x in leaves]
    state = [ref.init(x) for x in p]
    carry = ref.init_carry() if getattr(ref, "whole_tree", False) else None
    trajectory = []
    for t, g in enumerate(grads, start=1):
        if carry is not None:  # a reference that steps the whole tree (Prodigy)
            gs = [reference.wide(x) for x in treedef.flatten_up_to(g)]
            updates, state, carry = ref.step_tree(state, carry, gs, p, t)
            p = [x + u for x, u in zip(p, updates, strict=True)]
            trajectory.append(treedef.unflatten(list(p)))
            continue
        for i, g_i in enumerate(treedef.flatten_up_to(g)):
            update, state[i] = ref.step(state[i], reference.wide(g_i), p[i], t)
            p[i] = p[i] + update
        trajectory.append(treedef.unflatten(list(p)))
    return trajectory


def per_step_errors(
    tx: optax.GradientTransformation, ref: Any, params: Any, grads: list[Any]
) -> dict[str, float]:
    """Runs jadam; at each step feeds jadam's own state and parameters to the reference.

    Returns, per output (the update and each moment), the largest normwise error of any leaf:
    the largest ``|x - ref|`` over the run divided by the largest ``|ref|`` over the run.
    Normwise, because an elementwise relative error is meaningless where a moving average or a
    decayed update cancels to nearly zero. Driving the reference from jadam's state keeps rounding
    from accumulating, so this isolates the error of one step's arithmetic.

    Every per-parameter field of jadam's state (a tree shaped like the parameters) is compared,
    and the reference must keep exactly those: a moment renamed or added on one side fails.
    (The 200 steps run as 200 calls of one compiled step: one ``lax.scan`` over them, states
    collected, took 21.5 s against 15.2 s for eight of these tests, its longer compile and the
    stacking of the gradients costing more than the round trips.)
    """
    @jax.jit
    def step(g: Any, state: Any, params: Any) -> tuple[Any, Any, Any]:
        updates, state = tx.update(g, state, params)
        return updates, state, optax.apply_updates(params, updates)

    treedef = jax.tree.structure(params)
    state = tx.init(params)
    names = [f for f in state._fields
             if jax.tree.structure(getattr(state, f)) == treedef and treedef.num_leaves]
    assert sorted(names) == sorted(ref.init(np.zeros(()))), (names, ref.init(np.zeros(())))
    n = treedef.num_leaves
    err = {k: np.zeros(n) for k in ["update", *names]}
    size = {k: np.zeros(n) for k in ["update", *names]}

    def record(name: str, i: int, got: Any, want: np.ndarray) -> None:
        if want.size:
            err[name][i] = max(err[name][i], np.abs(reference.wide(got) - want).max())
            size[name][i] = max(size[name][i], np.abs(want).max())

    for t, g in enumerate(grads, start=1):
        updates, new_state, new_params = step(g, state, params)
        flat = [treedef.flatten_up_to(x) for x in (g, params, updates)]
        old = {k: treedef.flatten_up_to(getattr(state, k)) for k in names}
        new = {k: treedef.flatten_up_to(getattr(new_state, k)) for k in names}
        if getattr(ref, "whole_tree", False):  # fed jadam's scalar state too
            carry = {k: float(getattr(state, k)) for k in ref.init_carry()}
            states = [{k: reference.wide(old[k][i]) for k in names} for i in range(n)]
            want_us, want_ss, _ = ref.step_tree(
                states, carry, [reference.wide(x) for x in flat[0]],
                [reference.wide(x) for x in flat[1]], t)
            for i, u_i in enumerate(flat[2]):
                record("update", i, u_i, want_us[i])
                for k in names:
                    record(k, i, new[k][i], want_ss[i][k])
            params, state = new_params, new_state
            continue
        for i, (g_i, p_i, u_i) in enumerate(zip(*flat, strict=True)):
            s64 = {k: reference.wide(old[k][i]) for k in names}
            want_u, want_s = ref.step(s64, g_i, reference.wide(p_i), t)
            record("update", i, u_i, want_u)
            for k in names:
                record(k, i, new[k][i], want_s[k])
        params, state = new_params, new_state
    return {k: float(np.max(err[k] / np.maximum(size[k], np.finfo(np.float64).tiny))) for k in err}


def float32_hyperparams(ref: Any) -> Any:
    """The reference with its float hyperparameters rounded to float32, as jadam holds them.

    jadam keeps every hyperparameter as a float32 value and derives ``1 - b2`` from it. b2=0.999
    is 0.99900001287 in float32, so its ``1 - b2`` is 1.3e-5 (relative) away from 0.001: a real
    difference of the optimizer's definition, not of its arithmetic, and larger than float32
    rounding. Rounding the reference's hyperparameters the same way leaves only the arithmetic.
    """
    rounded = {
        f.name: float(np.float32(getattr(ref, f.name)))
        for f in dataclasses.fields(ref)
        if isinstance(getattr(ref, f.name), float)
    }
    return dataclasses.replace(ref, **rounded)


def max_ulps_apart(a: Any, b: Any) -> float:
    """The largest distance between two arrays of one floating dtype, in units in the last
    place of that dtype at the larger magnitude of each pair (0 where both are NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    info = jnp.finfo(a.dtype)
    x, y = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(x) & np.isnan(y)
    top = np.maximum(np.maximum(np.abs(x), np.abs(y)), float(info.tiny))
    ulp = 2.0 ** (np.floor(np.log2(top)) - info.nmant)
    with np.errstate(invalid="ignore"):
        apart = np.where(both_nan | (x == y), 0.0, np.abs(x - y) / ulp)
    return float(np.max(apart, initial=0.0))


def assert_trees_within_ulps(a: Any, b: Any, ulps: float) -> None:
    """Same structure, shapes and dtypes, and every floating leaf within ``ulps`` (others
    equal)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        assert x.shape == y.shape, (x.shape, y.shape)
        if jnp.issubdtype(x.dtype, jnp.floating):
            assert max_ulps_apart(x, y) <= ulps, (max_ulps_apart(x, y), x, y)
        else:
            np.testing.assert_array_equal(x, y)


def assert_trees_within_scale_ulps(a: Any, b: Any, ulps: float) -> None:
    """Same structure, shapes and dtypes, and each floating leaf of ``a`` within ``ulps`` ulps
    of its dtype times the leaf's largest magnitude in ``b`` (normwise), others equal."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        assert x.shape == y.shape, (x.shape, y.shape)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_array_equal(x, y)
        elif x.size:
            y64 = y.astype(np.float64)
            tol = ulps * float(jnp.finfo(x.dtype).eps) * float(np.max(np.abs(y64)))
            np.testing.assert_allclose(x.astype(np.float64), y64, rtol=0, atol=tol)


def train_step(tx: Any) -> Any:
    """``step(params, state, grads) -> (params, state)``: ``tx``'s update, applied."""
    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    return step


def run_to_bytes(step: Any, tx: Any, params: Any, grads: list[Any]) -> list[np.ndarray]:
    """The parameters and state after ``step`` on each of ``grads`` from ``tx.init``, each
    leaf as its bytes (to count the bytes two runs differ in, :func:`bytes_apart`)."""
    p, s = params, tx.init(params)
    for g in grads:
        p, s = step(p, s, g)
    return [np.asarray(x).reshape(-1).view(np.uint8) for x in jax.tree.leaves((p, s))]


def bytes_apart(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return sum(int(np.sum(x != y)) for x, y in zip(a, b, strict=True))
