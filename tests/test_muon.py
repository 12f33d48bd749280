"""jadam.muon beyond the battery: what the orthogonalisation does, the leaves it takes, the
optimizer for the others, and a matrix problem it solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests import reference


def test_newton_schulz_brings_every_singular_value_near_one() -> None:
    """Jordan et al.'s five steps map singular values spread over two decades into about
    [0.7, 1.2] (their stated range), keeping the singular vectors."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    v, _ = np.linalg.qr(rng.standard_normal((64, 32)))
    s = np.logspace(-1, 1, 32)
    g = (u * s) @ v.T
    o = np.asarray(jadam.muon_newton_schulz(jnp.asarray(g, jnp.float32), 5, 1e-8), np.float64)
    sv = np.linalg.svd(o, compute_uv=False)
    assert sv.min() > 0.6, sv.min()
    assert sv.max() < 1.25, sv.max()
    # The same singular vectors: U^T O V is diagonal.
    inner = u.T @ o @ v
    off = inner - np.diag(np.diag(inner))
    assert np.abs(off).max() < 1e-4
    # A tall matrix is its transpose's transpose.
    ot = jadam.muon_newton_schulz(jnp.asarray(g.T, jnp.float32), 5, 1e-8)
    np.testing.assert_allclose(np.asarray(ot).T, o, atol=1e-6)


def test_a_marked_convolution_kernel_is_orthogonalised_as_a_matrix() -> None:
    """``matrices`` may mark a kernel of four dimensions: it is orthogonalised as the matrix of
    its output features (the last axis) against the others, scaled by that matrix's shape."""
    rng = np.random.default_rng(1)
    params = {"conv": jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)}
    g = {"conv": jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)}
    tx = jadam.muon(0.1, weight_decay=0.0, nesterov=False,
                    matrices=lambda path, shape: len(shape) >= 2)
    updates, state = tx.update(g, tx.init(params), params)
    assert state.nu["conv"].shape == (1, 1, 1, 1)
    flat = np.asarray(g["conv"], np.float64).reshape(36, 8)
    want = -0.1 * 0.2 * np.sqrt(36) * reference._newton_schulz_by_svd(flat, 5, 1e-8)
    np.testing.assert_allclose(np.asarray(updates["conv"]).reshape(36, 8), want, atol=2e-6)
    # By default such a kernel is AdamW's: its first update is -lr * sign(g).
    plain = jadam.muon(0.1, weight_decay=0.0)
    updates, _ = plain.update(g, plain.init(params), params)
    np.testing.assert_allclose(updates["conv"], -0.1 * np.sign(g["conv"]), rtol=1e-4)


def test_other_leaves_can_take_another_optimizer() -> None:
    """With ``others``, the matrices are Muon's exactly as without it, and the other leaves are
    the given optimizer's exactly."""
    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.standard_normal((6, 10)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(10), jnp.float32)}
    both = jadam.muon(1e-2, others=jadam.lion(1e-3))
    alone, lion = jadam.muon(1e-2), jadam.lion(1e-3)
    s_both, s_alone, s_lion = both.init(params), alone.init(params), lion.init(params)
    for _ in range(5):
        g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
        u_both, s_both = both.update(g, s_both, params)
        u_alone, s_alone = alone.update(g, s_alone, params)
        u_lion, s_lion = lion.update(g, s_lion, params)
        np.testing.assert_array_equal(u_both["w"], u_alone["w"])
        np.testing.assert_array_equal(u_both["b"], u_lion["b"])
        params = optax.apply_updates(params, u_both)


def test_muon_fits_a_linear_map() -> None:
    """Least squares for a 16x32 matrix from a zero start: Muon's steps have a fixed RMS, so
    with a rate decaying linearly to 0 it gets the loss below 1e-3 of where it started in 300
    steps."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((64, 16)), jnp.float32)
    w_true = jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)
    y = x @ w_true

    def loss(p):
        return jnp.mean((x @ p["w"] - y) ** 2)

    tx = jadam.muon(lambda count: 0.2 * (1 - count.astype(jnp.float32) / 300),
                    weight_decay=0.0)
    params = {"w": jnp.zeros((16, 32))}

    def body(_, carry):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 300, body, (p, tx.init(p))))(params)
    assert float(loss(params)) < 1e-3 * float(loss({"w": jnp.zeros((16, 32))}))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"matrices": lambda path, shape: True}, "needs at least two dimensions"),
    ({"matrices": "2d"}, "matrices must be a function"),
    ({"ns_coeffs": (1.0, 2.0)}, "ns_coeffs must be three finite numbers"),
    ({"ns_steps": 2.5}, "ns_steps must be an integer"),
    ({"beta": 1.0}, "beta"),
    ({"others": "adamw"}, "others must be an optax transformation"),
])
def test_bad_arguments_are_refused_with_a_reason(kwargs: dict, message: str) -> None:
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    def build() -> None:
        jadam.muon(**kwargs).init(params)

    with pytest.raises(ValueError, match=message):
        build()


def test_others_in_nnx_optimizer_with_an_orbax_round_trip(tmp_path) -> None:
    """``others=`` makes optax's PartitionState (masked nodes included): nnx.Optimizer
    trains with it, and its nnx.state saved and restored with orbax halfway gives the
    run that never stopped."""
    from flax import nnx
    ocp = pytest.importorskip("orbax.checkpoint")
    x = jnp.asarray(np.random.default_rng(4).standard_normal((8, 4)), jnp.float32)

    def make():
        model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        tx = jadam.muon(1e-2, others=jadam.lion(1e-3))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)

    model, opt = make()
    for _ in range(4):
        step(model, opt)
    straight = nnx.state(model, nnx.Param)

    model, opt = make()
    for _ in range(2):
        step(model, opt)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "opt", nnx.state(opt))
    checkpointer.save(tmp_path / "model", nnx.state(model))
    checkpointer.wait_until_finished()
    model2, opt2 = make()
    nnx.update(opt2, checkpointer.restore(tmp_path / "opt", nnx.state(opt2)))
    nnx.update(model2, checkpointer.restore(tmp_path / "model", nnx.state(model2)))
    for _ in range(2):
        step(model2, opt2)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model2, nnx.Param), straight)
