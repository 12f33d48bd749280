"""Packed layouts: jadam.packed (packed optimizer state) and jadam.pack / jadam.unpack (packed
parameters) give the updates of the plain layout, for every elementwise optimizer.

Bit for bit where the CPU has no fused multiply-add to contract: tests/test_without_fma.py checks
that in a process with the instruction set capped. Here, with the host's full instruction set,
a buffer and a leaf are loops of different lengths, which LLVM may vectorise and contract into
FMAs differently (on an AMD EPYC with AVX and FMA, 2 of 20 entries were 1 ulp apart;
shared/notes/cpus-and-bits.md). ``a * b + c * d`` may become ``fma(a, b, c * d)`` in one loop
and ``fma(c, d, a * b)`` in the other: they differ by up to an ulp of the larger product, which
where the two nearly cancel is many ulps of the result (seen: 15 ulps of a 1.3e-6 entry of an
SGD-momentum update whose other entries were near 1e-4, on an AMD EPYC with AVX-512). So
computed results are compared to 2 ulps of each array's largest magnitude.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from jadam import packing
from tests.helpers import assert_trees_within_scale_ulps, gradient_sequence, random_tree
from tests.optimizers import CASES, REDUCES

NOT_ELEMENTWISE = REDUCES  # (see tests/optimizers.py)


def _is_elementwise(case_id: str) -> bool:
    return not any(case_id == n or case_id.startswith(n + "-") for n in NOT_ELEMENTWISE)


def _tree(rng: np.random.Generator) -> dict:
    """random_tree's leaves (a scalar, an empty array, three ranks), a None leaf, and a
    bfloat16 leaf, so that packing forms two groups and leaves some leaves out (min_size=16
    keeps the 20- and 24-element arrays unpacked)."""
    tree = random_tree(rng)
    tree["none"] = None
    tree["half"] = jnp.asarray(rng.standard_normal(9), jnp.bfloat16)
    return tree


def _grads(seed: int, steps: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    out = []
    for g in gradient_sequence(seed, steps):
        g["none"] = None
        g["half"] = jnp.asarray(rng.standard_normal(9) * 1e-2, jnp.bfloat16)
        out.append(g)
    return out


def _assert_same_but_fma(a: object, b: object) -> None:
    """Equal up to FMA contraction (module docstring): 2 ulps of each leaf's dtype times its
    largest magnitude."""
    assert_trees_within_scale_ulps(a, b, ulps=2)


def _assert_same(a: object, b: object) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype
        assert x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))


def _run(tx: optax.GradientTransformation, params: dict, grads: list[dict]) -> tuple:
    step = jax.jit(tx.update)
    state = tx.init(params)
    updates = []
    for g in grads:
        u, state = step(g, state, params)
        updates.append(u)
        params = optax.apply_updates(params, u)
    return updates, params, state


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_packed_state_gives_the_same_updates(case) -> None:
    tx = case.make()
    if not _is_elementwise(case.id):
        with pytest.raises(ValueError, match="cannot be packed"):
            jadam.packed(tx, min_size=16)
        return
    params = _tree(np.random.default_rng(0))
    grads = _grads(1, 4)
    with jax.numpy_dtype_promotion("strict"):
        plain = _run(tx, params, grads)
        packed_tx = jadam.packed(tx, min_size=16)
        packed = _run(packed_tx, params, grads)
    index = packed[2].index
    assert len(index.plan.packed) == 4  # vec, scalar, empty and the bfloat16 leaf
    _assert_same_but_fma(plain[:2], packed[:2])
    _assert_same_but_fma(plain[2], packed[2].unpacked())


def test_weight_decay_mask_and_moment_dtypes_split_groups() -> None:
    params = _tree(np.random.default_rng(2))
    grads = _grads(3, 3)
    mask = jax.tree.map(lambda x: x.ndim != 1, params)
    tx = jadam.adamw(1e-2, weight_decay=0.1, mask=mask, mu_dtype=jnp.bfloat16)
    packed_tx = jadam.packed(tx, min_size=1000)
    plain, packed = _run(tx, params, grads), _run(packed_tx, params, grads)
    _assert_same_but_fma(plain[:2], packed[:2])
    _assert_same_but_fma(plain[2], packed[2].unpacked())
    # Groups: (decayed, float32 nu), (undecayed, float32 nu), (undecayed, bfloat16 nu): the
    # bfloat16 parameter's nu is bfloat16 (its dtype), mu is bfloat16 everywhere.
    mu, nu = packed[2].inner.mu, packed[2].inner.nu
    assert len(mu.buffers) == 3
    assert [b.dtype for b in mu.buffers] == [jnp.bfloat16] * 3
    assert sorted(str(b.dtype) for b in nu.buffers) == ["bfloat16", "float32", "float32"]
    assert all(b.size % packing.ALIGN == 0 for b in mu.buffers)


def test_state_memory_by_construction() -> None:
    params = {f"w{i}": jnp.ones(100) for i in range(50)}
    state = jadam.packed(jadam.adam(1e-3)).init(params)
    padded = 5120  # 5,000 elements padded to a multiple of 128
    assert state.inner.mu.buffers[0].shape == (padded,)
    moments = sum(x.nbytes for x in jax.tree.leaves((state.inner.mu, state.inner.nu)))
    assert moments == 2 * 4 * padded
    assert len(state.index.offsets) == 50


def test_composes_with_optax_chain_and_multisteps(standard_promotion) -> None:
    """Inside optax.MultiSteps or after optax's clipping, the gradient reaching the update is
    computed in the same jitted function, and XLA fuses that computation into different
    kernels for a leaf and for a buffer; it may then contract a multiply and an add into one
    fused multiply-add in one and not in the other. So these agree to a few ulps (seen: 3 ulps,
    2.8e-7 relative, in an update), checked at 1e-6 relative over 4 steps; given the gradients
    as inputs, packed and plain are bitwise equal (the tests above)."""
    params = random_tree(np.random.default_rng(4))
    grads = gradient_sequence(5, 4)
    for wrap in (lambda tx: optax.MultiSteps(tx, 2),
                 lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx)):
        a = _run(wrap(jadam.adam(1e-2)), params, grads)
        b = _run(wrap(jadam.packed(jadam.adam(1e-2))), params, grads)
        assert jax.tree.structure(a[:2]) == jax.tree.structure(b[:2])
        for x, y in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2]), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-12)


def test_schedule_free_eval_params_reads_a_packed_state() -> None:
    params = random_tree(np.random.default_rng(6))
    grads = gradient_sequence(7, 3)
    tx = jadam.schedule_free_adamw(1e-2)
    plain, packed = _run(tx, params, grads), _run(jadam.packed(tx), params, grads)
    _assert_same_but_fma(jadam.schedule_free_eval_params(plain[2], plain[1]),
                 jadam.schedule_free_eval_params(packed[2], packed[1]))


def test_large_leaves_keep_their_own_state() -> None:
    params = {"big": jnp.ones((300, 300)), "small": jnp.ones(10)}
    state = jadam.packed(jadam.adam(1e-3)).init(params)
    assert state.inner.mu.leaves[0].shape == (300, 300)  # "big" sorts first
    assert state.inner.mu.leaves[1] is None
    assert [b.shape for b in state.inner.mu.buffers] == [(128,)]


def test_errors() -> None:
    with pytest.raises(TypeError, match="expected a jadam optimizer"):
        jadam.packed(optax.adam(1e-3))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_size"):
            jadam.packed(jadam.adam(1e-3), min_size=bad)
    with pytest.raises(ValueError, match="cautious"):
        jadam.cautious(jadam.packed(jadam.adamw(1e-3)))
    tx = jadam.packed(jadam.adam(1e-3))
    state = tx.init({"a": jnp.ones(3), "b": jnp.ones(4)})
    with pytest.raises(ValueError, match="different tree structures"):
        tx.update({"a": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(1,\)"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(1)}, state)
    with pytest.raises(TypeError, match="PackedState"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(4)}, jadam.adam(1e-3).init({"a": jnp.ones(3)}))


def test_pack_unpack_round_trip_and_gradient() -> None:
    params = _tree(np.random.default_rng(8))
    params["big"] = jnp.ones((300, 300))
    packed, index = jadam.pack(params, min_size=16)
    _assert_same(jadam.unpack(packed, index), params)

    def loss(tree: dict) -> jax.Array:
        return sum(jnp.sum(jnp.sin(x.astype(jnp.float32)) * (i + 1))
                   for i, x in enumerate(jax.tree.leaves(tree)))

    want = jax.grad(loss)(params)
    got = jax.jit(jax.grad(lambda q, i: loss(jadam.unpack(q, i))))(packed, index)
    _assert_same(jadam.unpack(got, index), want)
    # The padding's gradient is zero.
    for group, buffer in enumerate(got.buffers):
        used = sum(int(np.prod(index.plan.shapes[i])) for i in index.plan.members(group))
        assert used < buffer.size
        assert not np.any(np.asarray(buffer[used:], np.float32))


def test_unpack_slices_at_runtime_offsets() -> None:
    """The offsets reach the compiled program as parameters, not constants, so same-shaped
    leaves share one kernel (constant slices compile one kernel each: 13 ms apiece here)."""
    packed, index = jadam.pack({f"w{i}": jnp.ones(10) for i in range(20)})
    text = jax.jit(jadam.unpack).lower(packed, index).as_text()
    assert text.count("stablehlo.dynamic_slice") == 20
    assert "stablehlo.slice" not in text


def test_training_on_packed_parameters_matches_the_plain_tree(standard_promotion) -> None:
    """Packed parameters with any optimizer (here jadam's and optax's Adam) follow the plain
    run: with jadam to 2 ulps (FMA contraction, see the module docstring; bit for bit on this
    Xeon). optax's Adam compiles its constants into each operation, and
    XLA:CPU's code for a 4-element array and a 128-element buffer then rounds 1 ulp apart
    (seen: 9e-10 in the first update), so it is checked to 2e-6 after 5 steps."""
    rng = np.random.default_rng(9)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    x = jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)

    def loss(p: dict) -> jax.Array:
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"][None]) ** 2)

    q0, index = jadam.pack(params)

    def packed_loss(q: jadam.Packed) -> jax.Array:
        return loss(jadam.unpack(q, index))

    for tx in (jadam.adam(1e-2), optax.adam(1e-2)):
        p, s = params, tx.init(params)
        q, sq = q0, tx.init(q0)
        for _ in range(5):
            u, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
            uq, sq = tx.update(jax.grad(packed_loss)(q), sq, q)
            q = optax.apply_updates(q, uq)
        if isinstance(tx, jadam.layout.Transformation):
            _assert_same_but_fma(jadam.unpack(q, index), p)
        else:
            for x, y in zip(jax.tree.leaves(jadam.unpack(q, index)), jax.tree.leaves(p),
                            strict=True):
                np.testing.assert_allclose(x, y, rtol=2e-6)


def test_leaves_sharded_over_several_devices_stay_unpacked() -> None:
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, jadam
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        mesh = Mesh(np.array(jax.devices()).reshape(2), ("model",))
        split = jax.device_put(jnp.ones(8), NamedSharding(mesh, P("model")))
        copied = jax.device_put(jnp.ones(8), NamedSharding(mesh, P()))
        state = jadam.packed(jadam.adam(1e-3)).init({"split": split, "copied": copied})
        assert state.index.plan.slots == ((0, 0), None), state.index.plan.slots
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
