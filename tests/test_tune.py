"""jadam.tune: sweeps as one program, the learning-rate range test, comparisons, JSON."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from jadam import tune
from tests.helpers import WITHOUT_FMA, assert_trees_within_scale_ulps

X = jnp.asarray(np.random.default_rng(0).standard_normal((64, 8)), jnp.float32)
Y = jnp.sin(X @ jnp.arange(1.0, 9.0) / 8)


def _mlp_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["w1"] + params["b1"][None])
    return jnp.mean(jnp.square(h @ params["w2"] - y))


def _init(seed) -> dict:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w1": jax.random.normal(k1, (8, 16)) / 3, "b1": jnp.zeros(16),
            "w2": jax.random.normal(k2, (16,)) / 4}


def train(hp: dict, seed) -> dict:
    """30 Adam steps of a small MLP regression, minibatches drawn from the seed."""
    tx = jadam.adam(learning_rate=hp["learning_rate"], b1=hp["b1"])
    params = _init(seed)
    idx = jax.random.randint(jax.random.key(seed), (30, 16), 0, 64)

    def step(carry, i):
        p, s = carry
        loss, g = jax.value_and_grad(_mlp_loss)(p, X[i], Y[i])
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), idx)
    return {"losses": losses, "final": _mlp_loss(params, X, Y), "w2": params["w2"]}


GRID = {"learning_rate": [1e-3, 1e-2], "b1": [0.8, 0.9]}


def _solo(lr: float, b1: float, seed: int, traced: bool) -> dict:
    if traced:
        return jax.jit(train)({"learning_rate": jnp.float32(lr), "b1": jnp.float32(b1)},
                              jnp.int32(seed))
    return jax.jit(lambda: train({"learning_rate": lr, "b1": b1}, seed))()


def test_sequential_sweep_is_the_solo_runs() -> None:
    """Runs one after another in the sweep's program give each configuration trained alone,
    with its hyperparameters as traced arrays or as Python numbers: bit for bit without FMA
    (tests/test_without_fma.py runs this test so), and to 4 ulps of each result's scale with
    the host's instruction set, where XLA compiles a Python number as a constant and may
    contract multiply-adds around it differently."""
    result = tune.sweep(train, GRID, seeds=(0, 1), vectorize=1)
    assert result["coords"] == {"learning_rate": [1e-3] * 4 + [1e-2] * 4,
                                "b1": [0.8, 0.8, 0.9, 0.9] * 2}
    assert result["seed"] == [0, 1] * 4
    for i, (lr, b1, seed) in enumerate(zip(result["coords"]["learning_rate"],
                                           result["coords"]["b1"], result["seed"],
                                           strict=True)):
        for traced in (True, False):
            solo = _solo(lr, b1, seed, traced)
            got = {key: result["results"][key][i] for key in solo}
            if WITHOUT_FMA:
                chex.assert_trees_all_equal(got, solo)
            else:
                assert_trees_within_scale_ulps(got, solo, ulps=4)


@pytest.mark.parametrize("width", [3, 8])
def test_vmapped_sweep_matches_solo_runs_within_rounding(width: int) -> None:
    """Side by side under vmap (3 wide: chunks plus a remainder), each run matches its solo
    run to 1e-5 of the value's scale: batched matrix products sum in another order, and 30
    Adam steps carry the difference (observed at most a few 1e-7)."""
    result = tune.sweep(train, GRID, seeds=(0, 1), vectorize=width)
    assert result["vectorize"] == width
    for i in range(8):
        solo = _solo(result["coords"]["learning_rate"][i], result["coords"]["b1"][i],
                     result["seed"][i], traced=True)
        for key in solo:
            np.testing.assert_allclose(result["results"][key][i], solo[key], rtol=0,
                                       atol=1e-5 * float(np.abs(solo[key]).max()), err_msg=key)


def test_sweep_compiles_once_however_many_points() -> None:
    traces = []

    def counted(hp, seed):
        traces.append(1)
        return train(hp, seed)

    grid = {"learning_rate": list(np.geomspace(1e-4, 1e-1, 8)), "b1": [0.8, 0.9]}
    result = tune.sweep(counted, grid, vectorize=1)
    assert len(result["seed"]) == 16
    assert len(traces) == 1


def test_default_vectorize_is_per_backend() -> None:
    assert tune.default_vectorize(16, "cpu") == 1
    assert tune.default_vectorize(16, "gpu") == 16
    assert tune.default_vectorize(1000, "tpu") == 64


def test_bad_sweeps_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no values for 'b1'"):
        tune.sweep(train, {"learning_rate": [1e-3], "b1": []})
    with pytest.raises(ValueError, match="vectorize must be >= 1"):
        tune.sweep(train, GRID, vectorize=0)
    with pytest.raises(ValueError, match="seeds is empty"):
        tune.sweep(train, GRID, seeds=())


def test_results_round_trip_through_json(tmp_path) -> None:
    result = tune.sweep(train, {"learning_rate": [1e-2], "b1": [0.9]})
    result["extra"] = {"nan": float("nan"), "pair": (1.0, 2.0), "ints": np.arange(3)}
    tune.save(result, str(tmp_path / "r.json"))
    back = tune.load(str(tmp_path / "r.json"))
    assert back["coords"] == result["coords"]
    assert back["extra"]["pair"] == (1.0, 2.0)
    assert np.isnan(back["extra"]["nan"])
    for key, value in result["results"].items():
        assert back["results"][key].dtype == value.dtype
        np.testing.assert_array_equal(back["results"][key], value)
    np.testing.assert_array_equal(back["extra"]["ints"], np.arange(3))


@pytest.mark.parametrize("curvature", [0.5, 4.0, 40.0])
def test_range_test_finds_the_known_best_rate(curvature: float) -> None:
    """SGD on the quadratic h/2 |x - c|^2 converges in one step at rate 1/h, the best rate:
    a fine grid of fixed rates confirms it, and the range test's suggestion is within a
    factor of 3 of it (observed 1.3-1.5x)."""

    def loss_fn(p, target):
        return 0.5 * curvature * jnp.sum(jnp.square(p - target))

    start, target = jnp.full(5, 3.0), jnp.zeros((1, 5))
    result = tune.lr_range_test(loss_fn, start, target, optimizer="sgd", min_lr=1e-6,
                                max_lr=100.0, steps=200)
    best = 1 / curvature
    assert best / 3 <= result["suggestion"] <= 3 * best, result["suggestion"]

    def final_loss(lr):
        tx = jadam.sgd(float(lr))
        p = start
        for _ in range(5):
            p = optax.apply_updates(p, tx.update(jax.grad(loss_fn)(p, target[0]),
                                                 tx.init(p))[0])
        return float(loss_fn(p, target[0]))

    grid = np.geomspace(best / 30, best * 1.9, 40)
    assert final_loss(best) <= min(final_loss(lr) for lr in grid) + 1e-12


def test_range_test_stops_when_the_loss_diverges() -> None:
    def loss_fn(p, _):
        return jnp.sum(jnp.square(p))

    result = tune.lr_range_test(loss_fn, jnp.ones(3), jnp.zeros((1, 1)), optimizer="sgd",
                                min_lr=1e-4, max_lr=1e3, steps=300)
    assert result["stopped_early"]
    assert len(result["losses"]) < 300
    assert result["learning_rates"][-1] > 1.0  # SGD diverges past rate 1 here
    assert np.all(np.diff(result["learning_rates"]) > 0)
    assert "steepest descent" in result["rule"]


def test_range_test_validates_its_range() -> None:
    with pytest.raises(ValueError, match="0 < min_lr < max_lr"):
        tune.lr_range_test(lambda p, b: jnp.sum(p), jnp.ones(2), jnp.zeros((1,)), min_lr=1.0,
                           max_lr=0.1)


def _train_curves(tx, seed) -> dict:
    params = _init(seed)
    idx = jax.random.randint(jax.random.key(seed), (40, 16), 0, 64)

    def step(carry, i):
        p, s = carry
        loss, g = jax.value_and_grad(_mlp_loss)(p, X[i], Y[i])
        u, s = tx.update(g, s, p)
        error = jnp.tanh(X[i] @ p["w1"] + p["b1"][None]) @ p["w2"] - Y[i]
        accuracy = jnp.mean(jnp.abs(error) < 0.1)
        return (optax.apply_updates(p, u), s), (loss, accuracy)

    _, (losses, accuracies) = jax.lax.scan(step, (params, tx.init(params)), idx)
    return {"loss": losses, "accuracy": accuracies}


def test_compare_curves_are_each_optimizer_trained_alone() -> None:
    result = tune.compare(_train_curves, {"sgd": {"learning_rate": 0.1},
                                          "adam-fast": {"name": "adam", "learning_rate": 1e-2}},
                          seeds=(0, 1), target_loss=0.3)
    assert set(result) == {"sgd", "adam-fast"}
    for label, tx in [("sgd", jadam.sgd(0.1)), ("adam-fast", jadam.adam(1e-2))]:
        entry = result[label]
        assert entry["curves"]["loss"].shape == (2, 40)
        for i, seed in enumerate((0, 1)):
            alone = jax.jit(lambda s, tx=tx: _train_curves(tx, s))(jnp.int32(seed))
            np.testing.assert_array_equal(entry["curves"]["loss"][i], alone["loss"])
        mean, std = entry["final_loss"]
        assert mean == pytest.approx(np.mean(entry["curves"]["loss"][:, -1]))
        assert std >= 0
        assert entry["best_accuracy"] is not None
        for steps, curve in zip(entry["steps_to_target"], entry["curves"]["loss"], strict=True):
            if steps is not None:
                assert curve[steps - 1] <= 0.3
                assert np.all(curve[:steps - 1] > 0.3)


# --- successive halving and search spaces --------------------------------------------------


def _mlp_start(hp: dict, seed) -> dict:
    params = _init(seed)
    tx = jadam.adam(learning_rate=hp["learning_rate"], b1=hp["b1"])
    return {"params": params, "state": tx.init(params), "t": jnp.zeros((), jnp.int32)}


def _mlp_advance(hp: dict, carry: dict, steps: int) -> tuple[dict, dict]:
    """The MLP of train(), its minibatches a function of the step count in the carry (so a
    paused run sees the batches it would have seen), the loss over all data at the end."""
    tx = jadam.adam(learning_rate=hp["learning_rate"], b1=hp["b1"])

    def step(c, _):
        i = jax.random.randint(jax.random.fold_in(jax.random.key(0), c["t"]), (16,), 0, 64)
        loss, g = jax.value_and_grad(_mlp_loss)(c["params"], X[i], Y[i])
        u, s = tx.update(g, c["state"], c["params"])
        return {"params": optax.apply_updates(c["params"], u), "state": s,
                "t": c["t"] + 1}, loss

    carry, losses = jax.lax.scan(step, carry, length=steps)
    return carry, {"losses": losses, "final": _mlp_loss(carry["params"], X, Y)}


MLP = tune.Trainable(_mlp_start, _mlp_advance)
SPACE = {"learning_rate": tune.log_uniform(1e-3, 3e-1), "b1": [0.0, 0.5, 0.9]}


def test_rung_schedule() -> None:
    assert tune.rung_schedule(27, 81) == [(27, 3), (9, 9), (3, 27), (1, 81)]
    assert tune.rung_schedule(30, 100, eta=2)[0] == (30, 6)
    assert tune.rung_schedule(30, 100, eta=2)[-1] == (1, 100)
    assert tune.rung_schedule(2, 50) == [(2, 50)]  # too few to halve: all train to the end
    assert tune.rung_schedule(27, 270, min_steps=30) == [(27, 30), (9, 90), (3, 270)]
    assert tune.rung_schedule(27, 270, min_steps=300) == [(27, 270)]


def test_halving_survivors_continue_as_if_never_paused() -> None:
    """Every configuration's recorded curve, up to where it stopped, is the curve of the same
    configuration trained straight (tune.sweep of the Trainable for max_steps): bit for bit
    without FMA (tests/test_without_fma.py runs this test so), to 4 ulps of scale with it; the
    survivor's final metric is the straight run's; the rungs are the schedule's, each
    keeping the best of the last, at most one compilation each."""
    result = tune.successive_halving(MLP, SPACE, max_steps=27, num_configs=9, seed=1,
                                     metric="final", vectorize=1)
    assert [(len(r["configs"]), r["steps"]) for r in result["rungs"]] == [(9, 3), (3, 9),
                                                                          (1, 27)]
    assert result["compilations"] == 3
    assert result["steps"] == 9 * 3 + 3 * 6 + 1 * 18
    for prev, rung in zip(result["rungs"], result["rungs"][1:], strict=False):
        kept = sorted(range(len(prev["metric"])), key=lambda i: prev["metric"][i])
        assert rung["configs"] == [prev["configs"][i] for i in kept[:len(rung["configs"])]]
    for i in range(9):
        one = tune.sweep(MLP, {k: [v[i]] for k, v in result["coords"].items()}, steps=27,
                         seeds=(1,), vectorize=1)["results"]
        stop = result["stopped_at"][i]
        got, want = result["curves"]["losses"][i, :stop], one["losses"][0, :stop]
        assert np.isnan(result["curves"]["losses"][i, stop:]).all()
        if WITHOUT_FMA:
            np.testing.assert_array_equal(got, want)
        else:
            assert_trees_within_scale_ulps(got, want, ulps=4)
        if stop == 27:
            np.testing.assert_allclose(result["best"]["metric"], one["final"][0], rtol=1e-6)


def test_random_spaces_are_reproducible_from_their_seed() -> None:
    a = tune.sample_space(SPACE, 200, seed=3)
    assert a == tune.sample_space(SPACE, 200, seed=3)
    assert a != tune.sample_space(SPACE, 200, seed=4)
    lr = np.asarray(a["learning_rate"])
    assert lr.min() >= 1e-3
    assert lr.max() <= 3e-1
    # log-uniform: each decade's share is its share of log(3e-1 / 1e-3) (+- 4 sigma of 200)
    share = np.mean(lr < 1e-2)
    expect = np.log(10) / np.log(300)
    assert abs(share - expect) < 4 * np.sqrt(expect * (1 - expect) / 200), share
    assert set(a["b1"]) == {0.0, 0.5, 0.9}
    grid = tune.sample_space({"a": [1, 2], "b": [3, 4, 5]})
    assert grid == tune.grid_points({"a": [1, 2], "b": [3, 4, 5]})
    with pytest.raises(ValueError, match="num_configs"):
        tune.sample_space(SPACE)
    with pytest.raises(ValueError, match="low"):
        tune.log_uniform(0.0, 1.0)
    with pytest.raises(ValueError, match="low"):
        tune.uniform(2.0, 1.0)


def _gd_start(hp: dict, seed) -> dict:
    return {"x": jnp.full((4,), 5.0)}


def _gd_advance(hp: dict, carry: dict, steps: int) -> tuple[dict, dict]:
    """Gradient descent on x^2: after t steps at rate r (r < 0.5), |x| = 5 |1 - 2r|^t, so the
    loss at any step falls as r grows: the largest rate is best at every rung."""
    tx = jadam.sgd(hp["learning_rate"])

    def step(c, _):
        x, s = c
        u, s = tx.update(2 * x, s, x)
        x = optax.apply_updates(x, u)
        return (x, s), jnp.sum(x ** 2)

    (x, _), losses = jax.lax.scan(step, (carry["x"], tx.init(carry["x"])), length=steps)
    return {"x": x}, {"loss": losses[-1]}


def test_halving_chooses_the_known_best() -> None:
    """A problem whose ranking is known at every budget: the largest of 27 rates wins, for
    11% of the grid's steps (3 x 81 against 27 x 81); with mode="max" the smallest."""
    rates = list(np.linspace(0.01, 0.4, 27))
    gd = tune.Trainable(_gd_start, _gd_advance)
    result = tune.successive_halving(gd, {"learning_rate": rates}, max_steps=81)
    assert result["best"]["coords"]["learning_rate"] == pytest.approx(0.4)
    assert result["steps"] == 27 * 3 + 9 * 6 + 3 * 18 + 1 * 54
    worst = tune.successive_halving(gd, {"learning_rate": rates}, max_steps=81, mode="max")
    assert worst["best"]["coords"]["learning_rate"] == pytest.approx(0.01)


def test_halving_and_trainables_refuse_bad_arguments() -> None:
    gd = tune.Trainable(_gd_start, _gd_advance)
    for kwargs, match in [({"eta": 1}, "eta"), ({"mode": "best"}, "mode"),
                          ({"max_steps": 0}, "max_steps"), ({"metric": "acc"}, "no metric")]:
        with pytest.raises(ValueError, match=match):
            tune.successive_halving(gd, {"learning_rate": [0.1, 0.2, 0.3]},
                                    **{"max_steps": 9, **kwargs})
    with pytest.raises(ValueError, match="steps="):
        tune.sweep(gd, {"learning_rate": [0.1]})
    with pytest.raises(ValueError, match="steps="):
        tune.sweep(train, GRID, steps=3)


def test_compare_accepts_a_trainable() -> None:
    """compare's config is the optimizer: the same Trainable protocol, start and advance
    taking the transformation."""
    def start(tx, seed):
        x = jnp.full((3,), 2.0)
        return {"x": x, "s": tx.init(x)}

    def advance(tx, carry, steps):
        def step(c, _):
            u, s = tx.update(2 * c["x"], c["s"], c["x"])
            x = optax.apply_updates(c["x"], u)
            return {"x": x, "s": s}, jnp.sum(x ** 2)
        carry, losses = jax.lax.scan(step, carry, length=steps)
        return carry, {"loss": losses}

    out = tune.compare(tune.Trainable(start, advance),
                       {"adam": {}, "sgd": {"learning_rate": 0.1}}, steps=12)
    assert out["adam"]["curves"]["loss"].shape == (1, 12)
    assert out["sgd"]["final_loss"][0] < 12.0


def _quadratic_trainable() -> tune.Trainable:
    """Adam (or any transformation) on sum(x^2): the loss after each step as the curve, the
    loss of the carry as ``evaluate``'s scalar, and a scalar from ``advance`` (the step
    count) to show that advance's scalars are kept at each evaluation too."""
    def start(tx, seed):
        x = jnp.linspace(-2.0, 3.0, 5) + seed.astype(jnp.float32)
        return {"x": x, "s": tx.init(x), "t": jnp.zeros((), jnp.int32)}

    def advance(tx, carry, steps):
        def step(c, _):
            u, s = tx.update(2 * c["x"], c["s"], c["x"])
            x = optax.apply_updates(c["x"], u)
            return {"x": x, "s": s, "t": c["t"] + 1}, jnp.sum(x ** 2)
        if steps == 1:
            carry, loss = step(carry, None)
            losses = loss[None]
        else:
            carry, losses = jax.lax.scan(step, carry, length=steps)
        return carry, {"loss": losses, "t": carry["t"]}

    def evaluate(tx, carry):
        return {"value": jnp.sum(carry["x"] ** 2)}

    return tune.Trainable(start, advance, evaluate)


def test_compare_steps_a_trainable_from_python() -> None:
    """steps_per_call=1 (a compiled step per Python call, each continuing from the last
    carry) trains as one compiled call of every step does: bit for bit without FMA, to 4 ulps
    of scale with it (XLA may contract a step inside a loop otherwise); the scalars are
    recorded every evaluate_every steps, at the step the curve says; the progress hook fires
    once per run."""
    trainable = _quadratic_trainable()
    specs = {"adam": {"learning_rate": 0.1}, "sgd": {"learning_rate": 0.05}}
    calls = []
    stepped = tune.compare(trainable, specs, seeds=(0, 1), steps=12, evaluate_every=4,
                           steps_per_call=1, progress=calls.append)
    assert calls == ["adam", "adam", "sgd", "sgd"]
    whole = tune.compare(trainable, specs, seeds=(0, 1), steps=12)
    for label in specs:
        got, want = stepped[label]["curves"], whole[label]["curves"]
        assert got["loss"].shape == want["loss"].shape == (2, 12)
        assert got["value"].shape == got["t"].shape == (2, 3)
        assert want["value"].shape == (2, 1)
        np.testing.assert_array_equal(got["t"], [[4, 8, 12]] * 2)
        if WITHOUT_FMA:
            np.testing.assert_array_equal(got["loss"], want["loss"])
        else:
            assert_trees_within_scale_ulps(got["loss"], want["loss"], ulps=4)
        np.testing.assert_array_equal(got["value"], got["loss"][:, 3::4])
        np.testing.assert_array_equal(got["value"][:, -1], want["value"][:, 0])
    assert stepped["adam"]["final_loss"][0] < 0.5 * float(np.sum(np.linspace(-2, 3, 5) ** 2))


def test_compare_refuses_bad_stepping() -> None:
    trainable = _quadratic_trainable()
    for kwargs in [{"steps": 12, "evaluate_every": 5}, {"steps": 12, "evaluate_every": 4,
                                                          "steps_per_call": 3},
                   {"steps": 12, "steps_per_call": 0}]:
        with pytest.raises(ValueError, match=r"steps_per_call|evaluate_every"):
            tune.compare(trainable, ["adam"], **kwargs)
    with pytest.raises(ValueError, match="Trainable"):
        tune.compare(trainable, ["adam"])
    with pytest.raises(ValueError, match="for a Trainable"):
        tune.compare(lambda tx, seed: {"loss": jnp.zeros(3)}, ["adam"], evaluate_every=1)
    with pytest.raises(ValueError, match="seeds"):
        tune.compare(trainable, ["adam"], steps=4, seeds=())
