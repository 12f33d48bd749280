"""The shared battery: every optimizer in tests/optimizers.py against its paper, optax, and the
contracts every jadam optimizer keeps (dtypes, tracing, fixed-vs-traced hyperparameters)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import helpers
from tests.optimizers import CASES, Case

STEPS = 200
ids = [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_trajectory_matches_paper_float64(case: Case) -> None:
    """200 float32 steps against the float64 reference, on a tree of mixed ranks and scales.

    The reference gets the hyperparameters rounded to float32, as jadam holds them: b3 = 0.9999
    is 0.99989998 in float32, so 1 - b3 is 1.7e-4 (relative) larger, which an uncorrected
    average (AdEMAMix's slow one) carries straight into the update; see
    helpers.float32_hyperparams. Tolerance: 2e-6 of the leaf's largest |parameter| over the
    run. The parameters are stored in float32 after every step, and 200 roundings of half an
    ulp (6e-8 relative) walk by about 1e-6; observed at most 8.6e-7. A wrong formula (eps
    inside the root, a missing bias correction) is off by 1e-3 or more. (A case may state a
    reason for more.)
    """
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, STEPS)
    ours, _ = helpers.run_jadam(case.make(), params, grads)
    ref = helpers.run_reference(helpers.float32_hyperparams(case.reference), params, grads)
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    for i, path in enumerate(paths):
        got = np.stack([np.asarray(jax.tree.leaves(a)[i], np.float64) for a in ours])
        want = np.stack([jax.tree.leaves(b)[i] for b in ref])
        if want.size:
            np.testing.assert_allclose(
                got, want, rtol=0, atol=case.trajectory_tol * np.abs(want).max(),
                err_msg=f"leaf {jax.tree_util.keystr(path)}",
            )


# name: (parameter dtype, state dtype overrides)
PRECISIONS = {
    "f32": (jnp.float32, {}),
    "bf16": (jnp.bfloat16, {}),
    "bf16-f32-state": (jnp.bfloat16, {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32}),
    "f16-f32-nu": (jnp.float16, {"nu_dtype": jnp.float32}),
    "f16-f32-state": (jnp.float16, {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32}),
}


PRECISION_CASES = [
    pytest.param(case, name, id=f"{case.id}-{name}")
    for case in CASES
    for name, (_, overrides) in PRECISIONS.items()
    if all(case.accepts(k) for k in overrides) and name not in case.unsupported_precisions
]


@pytest.mark.parametrize(("case", "precision"), PRECISION_CASES)
def test_each_step_matches_paper(case: Case, precision: str) -> None:
    """Every one of 200 steps, fed jadam's own state, matches the reference step.

    The reference gets the hyperparameters rounded to float32, as jadam holds them (see
    helpers.float32_hyperparams). Tolerance, normwise per leaf: one ulp of the dtype each output
    is stored in (rounding to it costs half), and 4 ulps for a float32 update, which goes through
    about ten float32 operations (observed at most 2.3). A case may state a reason for more,
    for the update or for its moments.
    """
    dtype, state_dtypes = PRECISIONS[precision]
    params = helpers.random_tree(np.random.default_rng(0), dtype)
    grads = helpers.gradient_sequence(1, STEPS, dtype)
    tx = case.make(**state_dtypes)
    errors = helpers.per_step_errors(
        tx, helpers.float32_hyperparams(case.reference), params, grads
    )
    state = tx.init(params)
    for name, error in errors.items():
        out = dtype if name == "update" else jax.tree.leaves(getattr(state, name))[0].dtype
        ulps = case.update_ulps if name == "update" and out == jnp.float32 else (
            1 if name == "update" else case.state_ulps)
        assert error <= ulps * float(jnp.finfo(out).eps), (name, error)


@pytest.mark.parametrize("case", [c for c in CASES if c.optax is not None], ids=lambda c: c.id)
@pytest.mark.usefixtures("standard_promotion")
def test_matches_optax(case: Case) -> None:
    """Where the semantics coincide, optax's trajectory is jadam's.

    Not bitwise: optax computes ``1 - b1`` in Python float64 but ``1 - b1**t`` in float32, and
    its bias correction loses up to 6e-5 (relative) to cancellation where jadam's does not.
    Tolerance 1e-5 of the largest |parameter| after 200 steps.
    """
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, STEPS)
    ours, _ = helpers.run_jadam(case.make(), params, grads)
    theirs, _ = helpers.run_jadam(case.optax(), params, grads)
    scale = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(theirs[-1]) if x.size)
    chex.assert_trees_all_close(ours[-1], theirs[-1], rtol=0, atol=case.optax_tol * scale)


def _run(case: Case, params: dict, grads: list, hp: dict) -> dict:
    """Trains from ``params`` on ``grads`` (inside one lax.scan) with hyperparameters ``hp``."""
    tx = case.make(**hp)

    def step(carry, g):
        p, state = carry
        u, state = tx.update(g, state, p)
        return (optax.apply_updates(p, u), state), None

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), stacked)
    return params


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_traced_hyperparameters_match_fixed(case: Case) -> None:
    """The same values as Python floats and as traced jit arguments give the same results:
    bit for bit without FMA (tests/test_without_fma.py). Here, with the host's instruction
    set, XLA copies a fixed value into each loop as a constant expression and a traced one
    as an argument, and LLVM may contract a multiply-add differently in the two (seen: NAdam,
    1 ulp): 4 float32 ulps of each leaf's largest |parameter| after 20 steps."""
    numeric = case.numeric_kwargs
    params = helpers.random_tree(np.random.default_rng(0))
    run = functools.partial(_run, case, params, helpers.gradient_sequence(1, 20))
    fixed = jax.jit(lambda: run(numeric))()
    traced = jax.jit(run)({k: jnp.float32(v) for k, v in numeric.items()})
    helpers.assert_trees_within_scale_ulps(traced, fixed, ulps=4)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_vmapped_hyperparameters_match_solo_runs(case: Case) -> None:
    """A vmapped sweep over hyperparameters gives each configuration's solo result.

    Not bitwise: batched arrays are fused differently by XLA, which changes where it contracts a
    multiply and an add into one FMA (one rounding instead of two). Tolerance: 4 float32 ulps of
    the leaf's largest |parameter| after 20 steps; observed at most 1.
    """
    numeric = case.numeric_kwargs
    params = helpers.random_tree(np.random.default_rng(0))
    run = functools.partial(_run, case, params, helpers.gradient_sequence(1, 20))
    solo = jax.jit(lambda: run(numeric))()
    sweep = {k: jnp.array([v, v * 0.5], jnp.float32) for k, v in numeric.items()}
    swept = jax.tree.map(lambda x: x[0], jax.jit(jax.vmap(run))(sweep))
    helpers.assert_trees_within_scale_ulps(swept, solo, ulps=4)


def _parabola(p: dict) -> jax.Array:
    return jnp.sum(jnp.square(p["x"] - 3.0))


def _rosenbrock(p: dict) -> jax.Array:
    x, y = p["xy"][0], p["xy"][1]
    return jnp.square(1.0 - x) + 100.0 * jnp.square(y - jnp.square(x))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_converges(case: Case) -> None:
    """Minimises a parabola and Rosenbrock's valley from a bad start (maximises their negation
    for ``maximize`` cases; ``scale_by_adam`` is followed by ``optax.scale(-lr)``)."""
    maximize = case.kwargs.get("maximize", False)
    problems = {
        "parabola": (_parabola, {"x": jnp.array([-4.0, 10.0, 0.0])}, (0.05, 1500, 1e-3)),
        "rosenbrock": (_rosenbrock, {"xy": jnp.array([-1.5, 2.0])}, (0.02, 6000, 1e-2)),
    }
    for name, (loss, start, default) in problems.items():
        lr, steps, tol = case.converge.get(name, default)
        direction_only = case.ctor.__name__.startswith("scale_by")
        overrides = {} if direction_only else {"learning_rate": lr}
        if "weight_decay" in case.kwargs:
            overrides["weight_decay"] = 0.0  # decay would move the minimum off the optimum
        tx = case.make(**overrides)
        if direction_only:
            tx = optax.chain(tx, optax.scale(-lr))
        objective = (lambda p, f=loss: -f(p)) if maximize else loss

        def body(_, carry, objective=objective, tx=tx):
            params, state = carry
            updates, state = tx.update(jax.grad(objective)(params), state, params)
            return optax.apply_updates(params, updates), state

        params, _ = jax.jit(
            lambda p, tx=tx, body=body, steps=steps: jax.lax.fori_loop(
                0, steps, body, (p, tx.init(p))
            )
        )(start)
        assert float(loss(params)) < tol, (loss.__name__, float(loss(params)))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_dtypes_are_kept(case: Case) -> None:
    """Updates have each parameter's dtype; state dtypes are fixed at init and never drift,
    also for bfloat16 parameters with float32 gradients and inside lax.scan."""
    params = {"bf16": jnp.ones((3,), jnp.bfloat16), "f32": jnp.ones((2, 2), jnp.float32),
              "f16": jnp.ones((), jnp.float16)}
    grads = {"bf16": jnp.full((3,), 0.1, jnp.float32), "f32": jnp.full((2, 2), 0.1, jnp.float32),
             "f16": jnp.full((), 0.1, jnp.float32)}
    variants = [{}, {"mu_dtype": jnp.float32, "nu_dtype": jnp.bfloat16}]
    for state_dtypes in [v for v in variants if all(case.accepts(k) for k in v)]:
        tx = case.make(**state_dtypes)
        state0 = tx.init(params)

        def body(carry, _, tx=tx):
            p, s = carry
            u, s = tx.update(grads, s, p)
            chex.assert_trees_all_equal_dtypes(u, p)
            return (optax.apply_updates(p, u), s), None

        (p, state), _ = jax.lax.scan(body, (params, state0), length=5)
        chex.assert_trees_all_equal_shapes_and_dtypes(p, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
        checked = 0
        for field, value in state._asdict().items():
            if jax.tree.structure(value) != jax.tree.structure(params):
                continue  # the count, scalars carried between steps
            knob = ("mu_dtype" if field in _MU_FIELDS
                    else "nu_dtype" if field in _NU_FIELDS else None)
            for name, leaf in value.items():
                want = state_dtypes.get(knob, params[name].dtype)
                assert leaf.dtype == want, (field, name, leaf.dtype, want)
                checked += 1
        assert checked >= len(params) * len(_moments(case)), (checked, case.name)


#: The state fields whose dtype ``mu_dtype`` sets (the averages of gradients) and those
#: ``nu_dtype`` sets (of their squares, Adafactor's factors among them); every other field
#: that holds one array per parameter has the parameter's dtype.
_MU_FIELDS = {"mu", "mu_diff", "mu_slow", "s"}  # (Prodigy's s: a weighted sum of gradients)
_NU_FIELDS = {"nu", "nu_max", "v_row", "v_col", "v"}


def _moments(case: Case) -> list[str]:
    """The state fields of ``case`` that hold one array per parameter."""
    params = {"w": jnp.ones((2, 2))}
    state = case.make().init(params)
    return [k for k, v in state._asdict().items()
            if jax.tree.structure(v) == jax.tree.structure(params)]


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_second_call_does_not_retrace(case: Case) -> None:
    traces = []
    tx = case.make()

    @jax.jit
    def step(grads, state, params):
        traces.append(1)
        return tx.update(grads, state, params)

    params = helpers.random_tree(np.random.default_rng(0))
    state = tx.init(params)
    for g in helpers.gradient_sequence(1, 3):
        _, state = step(g, state, params)
    assert len(traces) == 1


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_edge_trees_pass_through(case: Case) -> None:
    """Empty trees, None leaves, scalars and zero-size leaves."""
    tx = case.make()
    for params in [{}, (), {"a": None, "b": jnp.ones(2)}, {"s": jnp.float32(1.0)},
                   {"z": jnp.zeros((0, 4))}, [jnp.ones(()), None, {"deep": jnp.zeros((2, 0))}]]:
        state = tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        chex.assert_tree_all_finite(updates)
        chex.assert_tree_all_finite(state)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_zero_gradients_give_zero_updates(case: Case) -> None:
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    tx = case.make()
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))


@pytest.mark.parametrize("case", [c for c in CASES if c.torch is not None], ids=lambda c: c.id)
def test_matches_torch(case: Case) -> None:
    """Given the same hyperparameters, torch.optim's float32 trajectory is jadam's: 1e-5
    relative over 100 steps, elementwise, with an absolute floor of 1e-5 of the leaf's starting
    magnitude for entries that pass near zero (where float32 rounding in a different order
    leaves a few 1e-7 of absolute difference)."""
    torch = pytest.importorskip("torch", reason="torch is not installed (CI installs 2.13.0)")
    params = helpers.random_tree(np.random.default_rng(0))
    grads = helpers.gradient_sequence(1, 100)
    ours, _ = helpers.run_jadam(case.make(), params, grads)

    leaves, treedef = jax.tree.flatten(params)
    paths = [jax.tree_util.keystr(q) for q, _ in jax.tree_util.tree_leaves_with_path(params)]
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    name, kwargs = case.torch
    # Empty tensors stay out: torch.optim.Adafactor divides by their size.
    opt = getattr(torch.optim, name)([t for t in tensors if t.numel()], **kwargs)
    for step, g in enumerate(grads):
        for tensor, grad in zip(tensors, treedef.flatten_up_to(g), strict=True):
            tensor.grad = torch.tensor(np.asarray(grad))
        opt.step()
        mine = treedef.flatten_up_to(ours[step])
        for path, start, got, theirs in zip(paths, leaves, mine, tensors, strict=True):
            want = theirs.detach().numpy()
            if want.size:
                scale = max(np.abs(want).max(), np.abs(np.asarray(start)).max())
                np.testing.assert_allclose(
                    np.asarray(got), want, rtol=1e-5, atol=1e-5 * scale,
                    err_msg=f"step {step + 1}, leaf {path}",
                )
