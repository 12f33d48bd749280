"""Complex parameters: every optimizer whose math has a complex form trains them, by optax's
convention (first moments complex, second moments the real average of |g|^2), against the
complex extension of its paper reference and against optax where optax has it; Lion refuses
them by name."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from tests import helpers
from tests.optimizers import CASES, Case, inject

STEPS = 100

#: The optimizers whose update is a sign (Lion and its cautious form), which refuse.
REFUSED = ("lion", "cautious_lion")
COMPLEX_CASES = [c for c in CASES if not c.id.startswith(REFUSED)]
#: Cases whose optax transformation has no complex form: adadelta squares with ``g**2``
#: (complex, not |g|^2; optax's own alias tests skip complex for it), and contrib.adopt's
#: clipping raises on complex values (unclipped, it matches).
OPTAX_NOT_COMPLEX = {"adadelta", "adopt",
                     # optax's Prodigy squares a complex gradient as g * g, not |g|^2
                     "prodigy-bias-corrected-decay"}


def _complex_tree(seed: int) -> dict:
    return helpers.random_tree(np.random.default_rng(seed), np.complex64)


def _complex_grads(steps: int) -> list[dict]:
    return helpers.gradient_sequence(1, steps, np.complex64)


@pytest.mark.parametrize("case", COMPLEX_CASES, ids=lambda c: c.id)
def test_complex_trajectory_matches_paper(case: Case) -> None:
    """100 complex64 steps against the complex128 reference (tests/reference.py extends each
    paper by optax's convention). Tolerance as for real parameters (test_battery): a few 1e-6
    of the leaf's largest |parameter|, from float32 roundings of the real and imaginary parts;
    a real-part-only or conj-swapped formula is off by 1e-2 or more."""
    params = _complex_tree(0)
    grads = _complex_grads(STEPS)
    ours, states = helpers.run_jadam(case.make(), params, grads)
    ref = helpers.run_reference(helpers.float32_hyperparams(case.reference), params, grads)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(ours[-1]),
                                 jax.tree.leaves(ref[-1]), strict=True):
        assert got.dtype == jnp.complex64, (path, got.dtype)
        if want.size:
            np.testing.assert_allclose(
                np.asarray(got, np.complex128), want, rtol=0,
                atol=2 * case.trajectory_tol * np.abs(want).max(),
                err_msg=f"leaf {jax.tree_util.keystr(path)}")
    _assert_moment_dtypes(case, states[-1])


def _assert_moment_dtypes(case: Case, state: object) -> None:
    """Magnitudes (second moments, accumulators) are float32; the rest complex64."""
    rule_moments = {m.name: m for m in _rule_of(case).moments}
    for name, moment in rule_moments.items():
        want = jnp.float32 if moment.nonnegative else jnp.complex64
        for x in jax.tree.leaves(getattr(state, name)):
            assert x.dtype == want, (name, x.dtype)


def _rule_of(case: Case) -> jadam.rule.Rule:
    """The case's rule, read from the optimizer's recipe (a partial of layout.per_leaf)."""
    tx = case.make()
    return tx.recipe.args[0]


@pytest.mark.parametrize(
    "case", [c for c in COMPLEX_CASES
             if c.optax is not None and c.id not in OPTAX_NOT_COMPLEX],
    ids=lambda c: c.id)
@pytest.mark.usefixtures("standard_promotion")
def test_complex_matches_optax(case: Case) -> None:
    """optax's complex trajectory is jadam's, to test_matches_optax's tolerance (1e-5 of the
    largest |parameter| after the run, from optax's float32 bias corrections)."""
    params = _complex_tree(0)
    grads = _complex_grads(STEPS)
    ours, _ = helpers.run_jadam(case.make(), params, grads)
    theirs, _ = helpers.run_jadam(case.optax(), params, grads)
    scale = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(theirs[-1]) if x.size)
    chex.assert_trees_all_close(ours[-1], theirs[-1], rtol=0, atol=case.optax_tol * scale)


@pytest.mark.parametrize("make", [jadam.lion, jadam.cautious_lion])
def test_sign_optimizers_refuse_complex_parameters(make) -> None:
    with pytest.raises(TypeError, match=r"\['z'\] is complex \(complex64\).*sign"):
        make(1e-3).init({"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)})


def test_state_dtypes_follow_the_parameter() -> None:
    """A state dtype sets a precision; the parameter decides whether a moment is complex,
    and a second moment is always real."""
    params = {"w": jnp.ones(3), "z": jnp.ones(3, jnp.complex64)}
    for mu_dtype in (None, jnp.float32, "complex64"):
        state = jadam.adam(mu_dtype=mu_dtype, nu_dtype="complex64").init(params)
        assert state.mu["w"].dtype == jnp.float32
        assert state.mu["z"].dtype == jnp.complex64
        assert state.nu["w"].dtype == state.nu["z"].dtype == jnp.float32
    with pytest.raises(TypeError, match=r"\['z'\] is complex.*bfloat16.*no complex"):
        jadam.adam(mu_dtype=jnp.bfloat16).init(params)
    with pytest.raises(ValueError, match="mu_dtype must be a floating or complex dtype"):
        jadam.adam(mu_dtype=jnp.int32)


def test_complex_and_real_must_not_mix() -> None:
    tx = jadam.adam(1e-2)
    params = {"z": jnp.ones(3, jnp.complex64)}
    state = tx.init(params)
    with pytest.raises(TypeError, match=r"gradient at \['z'\] has dtype float32 but the "
                                        r"parameter complex64.*jnp.conj"):
        tx.update({"z": jnp.ones(3)}, state, params)
    # Without params the state says what the parameters were.
    with pytest.raises(TypeError, match=r"state.mu at \['z'\] has dtype complex64, but the "
                                        r"gradient is float32.*made for complex parameters"):
        tx.update({"z": jnp.ones(3)}, state)


def _fit(tx: optax.GradientTransformation, steps: int = 300) -> tuple[float, float]:
    """Least squares with a complex matrix: a real loss of complex parameters, the gradient
    conjugated as optax's convention asks. Returns the first and the last loss."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((16, 4)) + 1j * rng.standard_normal((16, 4)),
                    jnp.complex64)
    target = jnp.asarray(rng.standard_normal(4) + 1j * rng.standard_normal(4), jnp.complex64)
    y = a @ target

    def loss(p: dict) -> jax.Array:
        r = a @ p["z"] - y
        return jnp.sum(r.real * r.real + r.imag * r.imag)

    @jax.jit
    def step(p, state):
        value, g = jax.value_and_grad(loss)(p)
        updates, state = tx.update(jax.tree.map(jnp.conj, g), state, p)
        return optax.apply_updates(p, updates), state, value

    p = {"z": jnp.zeros(4, jnp.complex64)}
    state = tx.init(p)
    first = None
    for _ in range(steps):
        p, state, value = step(p, state)
        first = float(value) if first is None else first
    return first, float(loss(p))


@pytest.mark.parametrize("name", sorted(set(jadam.optimizers) - set(REFUSED)))
def test_every_optimizer_fits_complex_least_squares(name: str) -> None:
    """Each optimizer (at a rate that suits it) brings a complex least-squares loss down by
    100x in 300 steps: a wrong sign or a dropped imaginary part would not."""
    # (RAdam's first steps are plain momentum SGD, unnormalised: a small rate.)
    rates = {"sgd": 0.01, "adadelta": 10.0, "adagrad": 0.5, "adafactor": 0.1, "radam": 0.01}
    info = jadam.optimizers[name]
    first, last = _fit(info.make(learning_rate=rates.get(name, 0.05)))
    assert last < first / 100, (first, last)


@pytest.mark.parametrize("wrapper", ["packed", "one_pass", "skip_nonfinite"])
def test_layouts_keep_complex_updates(wrapper: str) -> None:
    """Packed state (complex leaves in their own buffers, apart from real ones), one_pass and
    skip_nonfinite give plain AdamW's complex updates: bit for bit without FMA
    (tests/test_without_fma.py runs this so), to 2 ulps of scale with it (a buffer and a leaf
    may contract multiply-adds differently, see jadam.packed)."""
    params = {"z": _complex_tree(0)["layer"], "w": helpers.random_tree(
        np.random.default_rng(2))["layer"]}
    grads = [{"z": g["layer"], "w": g["layer"]} for g in _complex_grads(20)]
    grads = [{"z": g["z"], "w": jax.tree.map(lambda x: x.real, g["w"])} for g in grads]
    plain = jadam.adamw(1e-2, weight_decay=0.1)
    wrapped = {"packed": lambda tx: jadam.packed(tx, min_size=1 << 20),
               "one_pass": lambda tx: tx.with_options(one_pass_min_size=1),
               "skip_nonfinite": jadam.skip_nonfinite}[wrapper](plain)
    ours, _ = helpers.run_jadam(wrapped, params, grads)
    want, _ = helpers.run_jadam(plain, params, grads)
    if helpers.WITHOUT_FMA:
        chex.assert_trees_all_equal(ours[-1], want[-1])
    else:
        helpers.assert_trees_within_scale_ulps(ours[-1], want[-1], 2)
    if wrapper == "packed":
        state = wrapped.init(params)
        kinds = sorted(str(b.dtype) for b in state.inner.mu.buffers)
        assert kinds == ["complex64", "float32"], kinds


def test_8bit_state_keeps_complex_first_moments() -> None:
    """8-bit storage quantizes the real second moment of a complex parameter and keeps its
    complex first moment as it is (the 8-bit maps are of real numbers); it still trains."""
    tx = jadam.quantized(jadam.adam(0.05), min_size=4)
    state = tx.init({"z": jnp.zeros(4, jnp.complex64)})
    assert state.mu["z"].dtype == jnp.complex64
    assert state.nu["z"].dtype == jnp.uint8
    first, last = _fit(tx)
    assert last < first / 100, (first, last)


def test_complex_state_round_trips_through_checkpoints(tmp_path) -> None:
    """jadam.checkpoint and plain orbax keep complex moments exactly."""
    import orbax.checkpoint as ocp

    tx = jadam.adam(1e-2)
    params = _complex_tree(0)
    del params["empty"]  # (orbax refuses zero-size arrays, the parameters' own too)
    state = tx.init(params)
    for g in _complex_grads(3):
        g = {k: v for k, v in g.items() if k != "empty"}
        _, state = tx.update(g, state, params)
    jadam.checkpoint.save(tmp_path / "jadam", state)
    restored = jadam.checkpoint.restore(tmp_path / "jadam", tx.init(params))
    chex.assert_trees_all_equal(restored, state)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "orbax", state)
    with ocp.StandardCheckpointer() as ckpt:
        back = ckpt.restore(tmp_path / "orbax", tx.init(params))
    chex.assert_trees_all_equal(back, state)


def test_nnx_optimizer_trains_complex_parameters(tmp_path) -> None:
    """A flax NNX module with a complex weight beside real ones, in ``nnx.Optimizer`` with
    8-bit Adam, under ``nnx.jit`` with an orbax round trip of its state halfway, trains as the
    functional loop (1e-5 of scale; 2e-2 where a rounding may pick the neighbouring 8-bit
    code, as in tests/test_nnx.py)."""
    nnx = pytest.importorskip("flax.nnx")
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((32, 8)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((32, 16)), jnp.float32)

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.inp = nnx.Linear(8, 16, rngs=rngs)
            kr, ki = jax.random.split(rngs.params())
            self.mix = nnx.Param(jax.lax.complex(jax.random.normal(kr, (16, 16)),
                                                 jax.random.normal(ki, (16, 16))) / 4)

        def __call__(self, x: jax.Array) -> jax.Array:
            return jnp.abs(self.inp(x).astype(jnp.complex64) @ self.mix[...])

    def loss_fn(model: Model) -> jax.Array:
        return jnp.mean(jnp.square(model(x) - y))

    tx = jadam.quantized(jadam.adam(1e-2), min_size=256)
    graphdef, params = nnx.split(Model(nnx.Rngs(0)), nnx.Param)
    params = nnx.as_pure(params)

    @jax.jit
    def functional(params, state):
        grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p)))(params)
        updates, state = tx.update(jax.tree.map(jnp.conj, grads), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    assert state.nu["mix"].dtype == jnp.uint8
    assert state.mu["mix"].dtype == jnp.complex64
    first = float(loss_fn(nnx.merge(graphdef, params)))
    for _ in range(20):
        params, state = functional(params, state)
    want = jax.tree.leaves(params)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, jax.tree.map(jnp.conj, grads))

    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(10):
        step(model, optimizer)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "state", nnx.state((model, optimizer)))
    model = Model(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    abstract = jax.tree.map(jnp.zeros_like, nnx.state((model, optimizer)))
    with ocp.StandardCheckpointer() as ckpt:
        nnx.update((model, optimizer), ckpt.restore(tmp_path / "state", abstract))
    for _ in range(10):
        step(model, optimizer)
    got = jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param)))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-2 * float(np.abs(b).max()))
    assert float(loss_fn(model)) < 0.9 * first


@pytest.mark.parametrize("name", sorted(set(jadam.optimizers) - set(REFUSED)))
def test_inject_hyperparams_with_complex_parameters(name: str) -> None:
    """``optax.inject_hyperparams`` gives the hyperparameters the parameters' dtype, complex
    here: jadam takes their real part, and the injected optimizer gives the plain one's
    updates (to 4 ulps of scale, as tests/test_inject.py; traced scalars may round alike or
    not), jitted, for 5 steps."""
    info = jadam.optimizers[name]
    kwargs = {} if "learning_rate" in info.defaults else {"learning_rate": 1e-2}
    params = _complex_tree(0)
    grads = _complex_grads(5)
    plain, _ = helpers.run_jadam(info.make(**kwargs), params, grads)
    injected, _ = helpers.run_jadam(inject(info.make, kwargs), params, grads)
    helpers.assert_trees_within_scale_ulps(injected[-1], plain[-1], 4)


def test_a_complex_hyperparameter_must_be_real() -> None:
    with pytest.raises(ValueError, match=r"b1 must be a real number, got \(0\.89"):
        jadam.adam(b1=jnp.asarray(0.9 + 0.1j, jnp.complex64))
    # A complex value with no imaginary part (inject_hyperparams's) is its real part.
    jadam.adam(b1=jnp.asarray(0.9, jnp.complex64))
