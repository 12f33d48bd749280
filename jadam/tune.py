"""Tuning: hyperparameter sweeps as one compiled program, the learning-rate range test, and
side-by-side comparisons of optimizers.

Everything here is pure JAX on the user's own training function; results are plain
dictionaries of NumPy arrays and Python values, which :func:`save` and :func:`load` write to
and read from JSON.

A sweep relies on jadam's guarantee that a hyperparameter passed as a traced array computes
exactly what the same Python number does (``jadam/hyperparams.py``), so a configuration of a
sweep is the configuration you would train alone.

>>> import jax, jax.numpy as jnp, optax, jadam
>>> def train(hp, seed):
...     tx = jadam.adam(learning_rate=hp["learning_rate"])
...     p = jnp.array([2.0, -3.0])
...     state = tx.init(p)
...     def step(carry, _):
...         p, state = carry
...         u, state = tx.update(2 * p, state, p)
...         return (optax.apply_updates(p, u), state), jnp.sum(p**2)
...     (p, _), losses = jax.lax.scan(step, (p, state), length=100)
...     return {"final_loss": jnp.sum(p**2), "losses": losses}
>>> result = jadam.tune.sweep(train, {"learning_rate": [1e-2, 1e-1]})
>>> result["coords"]["learning_rate"], result["results"]["losses"].shape
([0.01, 0.1], (2, 100))
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: The training function a sweep runs: hyperparameters (float32 scalars, traced) and a seed
#: (an int32 scalar, traced) in, a pytree of arrays out.
TrainFn = Callable[[dict[str, jax.Array], jax.Array], Any]


class Trainable(NamedTuple):
    """A training run that can stop and go on: what :func:`successive_halving` needs, and what
    :func:`sweep` and :func:`compare` also accept (with ``steps=``).

    Attributes:
      start: ``start(config, seed) -> carry``: the run before its first step (parameters,
        optimizer state, whatever else it carries, such as its step count for the data), a
        pytree of arrays. ``config`` is what the caller trains: a dict of traced float32
        hyperparameters for :func:`sweep` and :func:`successive_halving`, an optax
        transformation for :func:`compare`; ``seed`` a traced int32.
      advance: ``advance(config, carry, steps) -> (carry, metrics)``: ``steps`` (a Python
        int) more steps from ``carry``. ``metrics`` is a dict of arrays: curves with a leading
        axis of ``steps`` (recorded step by step) and scalars (the value at the end, such as a
        validation loss to rank by). Running ``advance`` for ``a`` steps and then ``b`` must
        be running it for ``a + b``: the carry holds everything the next step depends on.
      evaluate: optional, ``evaluate(config, carry) -> metrics``: scalars measured on the
        carry (a test loss, say), added to ``advance``'s metrics wherever a run stops. Kept
        apart from ``advance`` so that a run stepped from Python (:func:`compare`'s
        ``steps_per_call``) measures them only every ``evaluate_every`` steps, not after each
        call.
    """

    start: Callable[[Any, jax.Array], Any]
    advance: Callable[[Any, Any, int], tuple[Any, Mapping[str, jax.Array]]]
    evaluate: Callable[[Any, Any], Mapping[str, jax.Array]] | None = None

    def advance_and_evaluate(self, config: Any, carry: Any,
                             steps: int) -> tuple[Any, dict[str, jax.Array]]:
        """``advance`` for ``steps``, then ``evaluate`` (if given) at the end: the carry and
        both metrics in one dict."""
        carry, metrics = self.advance(config, carry, steps)
        metrics = dict(metrics)
        if self.evaluate is not None:
            metrics.update(self.evaluate(config, carry))
        return carry, metrics


def as_train_fn(trainable: Trainable, steps: int) -> Callable[[Any, jax.Array], Any]:
    """A :class:`Trainable` as a whole run of ``steps`` steps: ``train_fn(config, seed)``
    returning its metrics, for :func:`sweep`."""
    steps = _positive_int("as_train_fn", "steps", steps)

    def train_fn(config: Any, seed: jax.Array) -> Any:
        return trainable.advance_and_evaluate(config, trainable.start(config, seed), steps)[1]

    return train_fn


def _train_fn(fn: str, train_fn: Any, steps: int | None) -> Any:
    if isinstance(train_fn, Trainable):
        if steps is None:
            raise ValueError(f"jadam.tune.{fn}: a Trainable needs steps=")
        return as_train_fn(train_fn, steps)
    if steps is not None:
        raise ValueError(f"jadam.tune.{fn}: steps= is for a Trainable; train_fn runs whole")
    return train_fn


def _positive_int(fn: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"jadam.tune.{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


def default_vectorize(num_points: int, backend: str | None = None) -> int:
    """How many configurations a sweep runs side by side with ``jax.vmap`` by default.

    On CPU, 1: XLA:CPU runs batched convolutions and matrix products no faster than one after
    another (16 vmapped configurations of a small CNN took 1.34x the time of 16 sequential
    runs on a 2-core CPU), and one at a time is bitwise equal to training alone. On GPU and TPU,
    all of them (at most 64), which fills the device; memory grows with the width.
    """
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else max(1, min(num_points, 64))


def grid_points(grid: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """The cartesian product of a grid, as one list of values per hyperparameter (the first
    name varies slowest)."""
    names = list(grid)
    for name, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"jadam.tune: the grid gives no values for {name!r}")
    points = list(itertools.product(*(grid[n] for n in names)))
    return {n: [float(p[i]) for p in points] for i, n in enumerate(names)}


def sweep(
    train_fn: TrainFn,
    grid: Mapping[str, Sequence[float]],
    *,
    seeds: Sequence[int] = (0,),
    vectorize: int | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Trains every point of a hyperparameter grid, for every seed, as ONE compiled program.

    Args:
      train_fn: ``train_fn(hyperparameters, seed)``: trains once and returns a pytree of
        arrays (final loss, curves, ...). ``hyperparameters`` maps each name of ``grid`` to a
        traced float32 scalar and ``seed`` is a traced int32 scalar: pass them to a jadam
        optimizer and to ``jax.random.key``. It must be traceable (``jax.jit``-able).
      grid: name -> values; every combination is run.
      seeds: the seeds each combination is run with.
      vectorize: how many runs go side by side under ``jax.vmap``; the rest run one after
        another inside the same program (``jax.lax.map`` with that batch size), so memory
        stays bounded. ``None``: :func:`default_vectorize` for the backend. With 1, each run
        is bitwise the run ``train_fn`` makes alone. Vmapped runs differ by rounding, as
        batched products and convolutions sum in another order and training amplifies it:
        measured on CPU, a small MLP after 30 Adam steps within 1e-5 of each value's scale
        (``tests/test_tune.py`` checks it), the MNIST example's CNN on the digits after 110
        steps within 7.7e-4 (training losses) and 2.0e-4 (test loss), with the same test
        accuracy.
      steps: with a :class:`Trainable` for ``train_fn``, how many steps each run trains.

    Returns:
      ``{"coords": {name: [value per run]}, "seed": [seed per run], "results": pytree with a
      leading axis of runs (NumPy arrays), "vectorize": int, "seconds": wall time including
      compilation}``. Runs are ordered grid point by grid point, seeds fastest.
    """
    train_fn = _train_fn("sweep", train_fn, steps)
    if not callable(train_fn):
        raise TypeError("jadam.tune.sweep: train_fn must be a function (hyperparameters, seed)")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("jadam.tune.sweep: seeds is empty")
    points = grid_points(grid)
    n_points = len(next(iter(points.values()))) if points else 1
    coords = {n: [v for v in vals for _ in seeds] for n, vals in points.items()}
    seed_per_run = seeds * n_points
    n_runs = len(seed_per_run)
    width = default_vectorize(n_runs) if vectorize is None else int(vectorize)
    if width < 1:
        raise ValueError(f"jadam.tune.sweep: vectorize must be >= 1, got {vectorize}")
    width = min(width, n_runs)

    hp = {n: jnp.asarray(v, jnp.float32) for n, v in coords.items()}
    seed_array = jnp.asarray(seed_per_run, jnp.int32)

    @jax.jit
    def run_all(hp: dict[str, jax.Array], seed: jax.Array) -> Any:
        return _map_runs(lambda args: train_fn(*args), (hp, seed), width)

    start = time.perf_counter()
    results = jax.device_get(run_all(hp, seed_array))
    seconds = time.perf_counter() - start
    return {
        "coords": coords,
        "seed": seed_per_run,
        "results": jax.tree.map(np.asarray, results),
        "vectorize": width,
        "seconds": seconds,
    }


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Values drawn uniformly from ``[low, high]`` (see :func:`uniform`)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        return [float(x) for x in rng.uniform(self.low, self.high, n)]


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Values whose logarithm is uniform on ``[log low, log high]`` (see :func:`log_uniform`)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        return [float(x) for x in np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))]


def uniform(low: float, high: float) -> Uniform:
    """A search-space range sampled uniformly (a momentum, a warmup fraction)."""
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"jadam.tune.uniform: low must be below high, got {low}, {high}")
    return Uniform(low, high)


def log_uniform(low: float, high: float) -> LogUniform:
    """A search-space range sampled log-uniformly (a learning rate, a weight decay): each
    factor of 10 between ``low`` and ``high`` gets the same share of samples."""
    low, high = float(low), float(high)
    if not 0 < low < high:
        raise ValueError(
            f"jadam.tune.log_uniform: need 0 < low < high, got {low}, {high}")
    return LogUniform(low, high)


#: A search space: per hyperparameter, a list of values (a grid axis) or a range.
Space = Mapping[str, "Sequence[float] | Uniform | LogUniform"]


def sample_space(space: Space, num_configs: int | None = None, *,
                 seed: int = 0) -> dict[str, list[float]]:
    """Configurations from a search space, one list of values per hyperparameter.

    Without ranges and with ``num_configs`` ``None``, the whole grid (:func:`grid_points`).
    Otherwise ``num_configs`` random configurations (Bergstra & Bengio, 2012): each range
    sampled, each list's values drawn uniformly, independently per hyperparameter, from a
    generator seeded with ``seed`` (the same seed, the same configurations)."""
    if num_configs is None:
        if any(isinstance(v, (Uniform, LogUniform)) for v in space.values()):
            raise ValueError("jadam.tune: a space with ranges needs num_configs")
        return grid_points(cast(Mapping[str, Sequence[float]], space))
    n = _positive_int("sample_space", "num_configs", num_configs)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for name, values in space.items():  # in the space's order, so the stream is fixed
        if isinstance(values, (Uniform, LogUniform)):
            out[name] = values.sample(rng, n)
        else:
            if len(values) == 0:
                raise ValueError(f"jadam.tune: the space gives no values for {name!r}")
            out[name] = [float(values[i]) for i in rng.integers(0, len(values), n)]
    return out


def rung_schedule(num_configs: int, max_steps: int, eta: int = 3,
                  min_steps: int | None = None) -> list[tuple[int, int]]:
    """Successive halving's rungs: ``(configurations, steps trained by the end of the rung)``
    for each rung. Each rung keeps the best ``1/eta`` of the last and trains them ``eta``
    times as far; the last rung trains what is left to ``max_steps``. As many rungs as leave
    one configuration at the end, or, with ``min_steps``, as many as keep the first rung at
    least that long (then several may reach the end, and the best of them wins)."""
    rungs = 0
    while num_configs // eta ** (rungs + 1) >= 1 and (
            min_steps is None or min_steps * eta ** (rungs + 1) <= max_steps):
        rungs += 1
    return [(num_configs // eta ** k, max(1, round(max_steps / eta ** (rungs - k))))
            for k in range(rungs + 1)]


def successive_halving(
    trainable: Trainable,
    space: Space,
    *,
    max_steps: int,
    eta: int = 3,
    min_steps: int | None = None,
    num_configs: int | None = None,
    seed: int = 0,
    metric: str = "loss",
    mode: str = "min",
    vectorize: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Successive halving (Jamieson & Talwalkar, 2016; the inner loop of Li et al.'s
    Hyperband, 2018) inside compiled JAX: every configuration trains a short while, the best
    ``1/eta`` go on ``eta`` times as far *from where they stopped*, and so on until one has
    trained ``max_steps``.

    Each rung is one compiled call over its surviving configurations (``jax.lax.map``, side by
    side under ``vmap`` as in :func:`sweep`), continuing each from its own carry (parameters,
    optimizer state): a configuration that reaches the end has trained exactly as it would
    have alone. Rungs of the same size and length share a compilation; there is at most one
    per rung. The configurations come from :func:`sample_space` (the whole grid, or
    ``num_configs`` random ones from ``seed``).

    Args:
      trainable: the run to tune, its config a dict of traced float32 hyperparameters.
      space: name -> list of values or :func:`uniform` / :func:`log_uniform` range.
      max_steps: the steps the last survivor trains.
      eta: the reduction factor, >= 2.
      min_steps: the first rung's length at least (:func:`rung_schedule`): fewer rungs, so
        that a ranking after very few steps does not decide; ``None``: as many rungs as leave
        one configuration.
      num_configs: how many configurations to sample (``None``: the whole grid).
      seed: seeds the sampling and is every run's training seed.
      metric: the scalar in ``advance``'s (or ``evaluate``'s) metrics to rank by, its value at
        the end of a rung (NaN ranks last).
      mode: ``"min"`` or ``"max"``.
      vectorize: runs side by side, as in :func:`sweep`.
      progress: called with a line after each rung.

    Returns:
      ``{"coords": {name: [value per configuration]}, "rungs": [{"configs": [indices],
      "steps": steps trained by its end, "metric": [values]}], "curves": {name: array
      (configurations, max_steps), NaN after where each stopped}, "stopped_at": [steps per
      configuration], "best": {"index", "coords", "metric"}, "steps": steps trained in all,
      "compilations": int, "seconds": wall time including compilation}``.
    """
    fn = "successive_halving"
    max_steps = _positive_int(fn, "max_steps", max_steps)
    eta = _positive_int(fn, "eta", eta)
    if eta < 2:
        raise ValueError(f"jadam.tune.{fn}: eta must be >= 2, got {eta}")
    if mode not in ("min", "max"):
        raise ValueError(f"jadam.tune.{fn}: mode must be 'min' or 'max', got {mode!r}")
    coords = sample_space(space, num_configs, seed=seed)
    n = len(next(iter(coords.values()))) if coords else 1
    if min_steps is not None:
        min_steps = _positive_int(fn, "min_steps", min_steps)
    schedule = rung_schedule(n, max_steps, eta, min_steps)
    width = default_vectorize(n) if vectorize is None else int(vectorize)
    hp_all = {name: jnp.asarray(v, jnp.float32) for name, v in coords.items()}
    start_time = time.perf_counter()

    @jax.jit
    def start_all(hp: dict[str, jax.Array], seeds: jax.Array) -> Any:
        return _map_runs(lambda a: trainable.start(*a), (hp, seeds), min(width, n))

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=1)
    def advance_all(hp: dict[str, jax.Array], carry: Any, steps: int) -> Any:
        size = jax.tree.leaves((hp, carry))[0].shape[0]  # (every leaf stacks the runs)
        return _map_runs(lambda a: trainable.advance_and_evaluate(a[0], a[1], steps),
                         (hp, carry), min(width, size))

    alive = np.arange(n)
    carry = start_all(hp_all, jnp.full((n,), seed, jnp.int32))
    curves: dict[str, np.ndarray] = {}
    stopped_at = np.zeros(n, np.int64)
    rungs: list[dict[str, Any]] = []
    shapes: set[tuple[int, int]] = set()
    done = trained = 0
    for k, (size, until) in enumerate(schedule):
        steps = until - done
        if k:  # the survivors of the last rung: its best `size`
            order = _ranking(rungs[-1]["metric"], mode)[:size]
            alive = alive[order]
            carry = jax.tree.map(lambda x, order=order: x[jnp.asarray(order)], carry)
        hp = {name: v[jnp.asarray(alive)] for name, v in hp_all.items()}
        shapes.add((len(alive), steps))
        carry, metrics = advance_all(hp, carry, steps)
        trained += len(alive) * steps
        metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
        if metric not in metrics:
            raise ValueError(f"jadam.tune.{fn}: advance returned no metric {metric!r}; it "
                             f"returned {sorted(metrics)}")
        values = np.asarray(metrics[metric], np.float64).reshape(len(alive), -1)[:, -1]
        for name, x in metrics.items():
            if x.ndim >= 2 and x.shape[1] == steps:  # a curve over this rung's steps
                dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
                out = curves.setdefault(
                    name, np.full((n, max_steps, *x.shape[2:]), np.nan, dtype))
                out[alive, done:until] = x
        stopped_at[alive] = until
        rungs.append({"configs": [int(i) for i in alive], "steps": until,
                      "metric": [float(v) for v in values]})
        done = until
        if progress is not None:
            progress(f"rung {k + 1}/{len(schedule)}: {len(alive)} configurations to step "
                     f"{until}, best {metric} {values[_ranking(values, mode)[0]]:.4g}")
    last = rungs[-1]
    best_at = _ranking(last["metric"], mode)[0]
    best = last["configs"][best_at]
    return {
        "coords": coords,
        "rungs": rungs,
        "curves": curves,
        "stopped_at": [int(s) for s in stopped_at],
        "best": {"index": best, "coords": {k: v[best] for k, v in coords.items()},
                 "metric": last["metric"][best_at]},
        "steps": trained,
        "compilations": len(shapes),
        "seconds": time.perf_counter() - start_time,
    }


def _map_runs(f: Callable[[Any], Any], xs: Any, width: int) -> Any:
    """``f`` over the runs stacked in ``xs`` (leading axis), ``width`` side by side under
    ``vmap`` and the rest one after another (``jax.lax.map``); width 1 runs each alone."""
    return jax.lax.map(f, xs, batch_size=width if width > 1 else None)


def _ranking(values: Any, mode: str) -> np.ndarray:
    """Indices from best to worst; NaN last, ties in order."""
    v = np.asarray(values, np.float64)
    key = np.where(np.isnan(v), np.inf, v if mode == "min" else -v)
    return np.argsort(key, kind="stable")


def lr_range_test(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batches: Any,
    *,
    optimizer: Callable[..., optax.GradientTransformation] | str = "adam",
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int | None = None,
    smoothing: float = 0.98,
    diverge: float = 4.0,
    progress: Callable[[int], None] | None = None,
    **hyperparams: Any,
) -> dict[str, Any]:
    """The learning-rate range test (L. Smith, 2017): train with an exponentially increasing
    learning rate and watch the loss.

    The rate goes from ``min_lr`` to ``max_lr`` over ``steps`` steps inside one ``lax.scan``;
    the loss is smoothed with an exponential moving average (bias-corrected); once the smoothed
    loss exceeds ``diverge`` times its minimum the run stops (later steps do nothing and are
    dropped).

    Suggestion rule: the rate at the steepest descent of the loss against log(rate), on a
    moving average centred on each step (5% of the run wide; the running average lags behind
    the rising rate by a decade or more), looked for before that average's minimum and after
    the first tenth of the run; also returned, the rate at the minimum divided by 10 (the
    other common rule).

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar.
      params: the starting parameters.
      batches: a pytree of arrays whose leading axis indexes batches; step ``t`` uses batch
        ``t % n``.
      optimizer: a name in ``jadam.optimizers`` or a constructor taking ``learning_rate``.
      min_lr, max_lr: the range of rates, 0 < min_lr < max_lr.
      steps: the number of steps (default: the number of batches, at least 100).
      smoothing: the decay of the loss average, in [0, 1).
      diverge: stop once the smoothed loss exceeds this multiple of its minimum (> 1).
      progress: called with the number of steps done, every 10 steps, from inside the compiled
        run (``jax.debug.callback``): a progress bar's hook.
      **hyperparams: passed to the optimizer.

    Returns:
      ``{"learning_rates", "losses", "smoothed"}`` (NumPy arrays up to the stop; "smoothed" is
      the centred average),
      ``"suggestion"``, ``"rule"``, ``"min_loss_lr_over_10"``, ``"stopped_early"``.
    """
    from jadam.registry import optimizers

    make = optimizers[optimizer].make if isinstance(optimizer, str) else optimizer
    if not 0 < min_lr < max_lr or not math.isfinite(max_lr):
        raise ValueError(f"jadam.tune.lr_range_test: need 0 < min_lr < max_lr, got "
                         f"{min_lr}, {max_lr}")
    if not 0 <= smoothing < 1 or not diverge > 1:
        raise ValueError("jadam.tune.lr_range_test: need 0 <= smoothing < 1 and diverge > 1")
    batches = jax.tree.map(jnp.asarray, batches)
    n_batches = jax.tree.leaves(batches)[0].shape[0]
    steps = int(steps or max(n_batches, 100))
    ratio = max_lr / min_lr

    def rate(count: jax.Array) -> jax.Array:
        return min_lr * ratio ** (count / max(steps - 1, 1))

    tx = make(learning_rate=rate, **hyperparams)

    def step(carry: Any, t: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array, jax.Array]]:
        params, state, avg, best, stopped = carry
        batch = jax.tree.map(lambda x: x[t % n_batches], batches)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, new_state = tx.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        avg = smoothing * avg + (1 - smoothing) * loss
        smoothed = avg / (1 - smoothing ** (t + 1).astype(jnp.float32))
        best = jnp.minimum(best, smoothed)
        now_stopped = stopped | (smoothed > diverge * best) | ~jnp.isfinite(smoothed)
        keep = lambda new, old: jax.tree.map(  # noqa: E731
            lambda a, b: jnp.where(stopped, b, a), new, old)
        carry = (keep(new_params, params), keep(new_state, state), avg, best, now_stopped)
        if progress is not None:
            jax.lax.cond((t + 1) % 10 == 0,
                         lambda: jax.debug.callback(lambda n: progress(int(n)), t + 1),
                         lambda: None)
        return carry, (loss, smoothed, stopped)

    @jax.jit
    def run(params: Any) -> Any:
        init = (params, tx.init(params), jnp.zeros([], jnp.float32),
                jnp.asarray(jnp.inf, jnp.float32), jnp.asarray(False))
        _, out = jax.lax.scan(step, init, jnp.arange(steps))
        return out

    losses, _, was_stopped = map(np.asarray, jax.device_get(run(params)))
    lrs = np.asarray(rate(cast(Any, np.arange(steps, dtype=np.float64))))
    end = int(np.argmax(was_stopped)) if was_stopped.any() else steps
    lrs, losses = lrs[:end], losses[:end]
    suggestion, min_over_10, curve = _suggest(lrs, losses)
    return {
        "learning_rates": lrs,
        "losses": losses,
        "smoothed": curve,
        "suggestion": suggestion,
        "rule": "steepest descent of the loss (centred moving average over 5% of the run) "
                "against log(learning rate), before its minimum",
        "min_loss_lr_over_10": min_over_10,
        "stopped_early": end < steps,
    }


def _centered_average(x: np.ndarray, width: int) -> np.ndarray:
    """A moving average centred on each point (the window shrinks at the ends): unlike the
    running average that decides when to stop, it does not lag behind the rate."""
    half = width // 2
    cumsum = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    lo = np.clip(np.arange(len(x)) - half, 0, len(x))
    hi = np.clip(np.arange(len(x)) + half + 1, 0, len(x))
    return (cumsum[hi] - cumsum[lo]) / (hi - lo)


def _suggest(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The steepest descent of the centred average of the loss against log(rate), before its
    minimum and after the first tenth of the run; the rate at the minimum over 10; the
    average."""
    if len(lrs) < 10:
        return float("nan"), float("nan"), losses.astype(np.float64)
    curve = _centered_average(losses, max(5, len(lrs) // 20))
    lowest = int(np.nanargmin(curve))
    first = len(lrs) // 10
    if lowest - first < 2:
        return float(lrs[lowest]), float(lrs[lowest] / 10), curve
    window = slice(first, lowest + 1)
    # In log-log terms: a relative fall, which batch-to-batch noise on a flat start mimics far
    # less than an absolute one.
    slopes = np.gradient(np.log(np.maximum(curve[window], 1e-30)), np.log(lrs[window]))
    return float(lrs[first + int(np.nanargmin(slopes))]), float(lrs[lowest] / 10), curve


def compare(
    train_fn: Callable[[optax.GradientTransformation, jax.Array], Mapping[str, jax.Array]],
    optimizers: Mapping[str, Mapping[str, Any]] | Sequence[str],
    *,
    seeds: Sequence[int] = (0,),
    target_loss: float | None = None,
    accuracy: str = "accuracy",
    progress: Callable[[str], None] | None = None,
    steps: int | None = None,
    evaluate_every: int | None = None,
    steps_per_call: int | None = None,
) -> dict[str, Any]:
    """Trains the same model on the same data, seeds and batches with several optimizers.

    Args:
      train_fn: ``train_fn(tx, seed)`` trains with the optax transformation ``tx`` and returns
        curves, arrays over steps (or epochs): ``"loss"`` and optionally ``"accuracy"``. It is
        jitted once per optimizer, the seed traced. Or a :class:`Trainable` whose config is
        the transformation, with ``steps=``.
      optimizers: names in ``jadam.optimizers``, or a mapping from a label to
        ``{"name": ..., **hyperparameters}`` (the label is the name if ``"name"`` is absent).
      seeds: the seeds each optimizer runs with (the same ones for all).
      target_loss: report the first step where the loss falls to this value.
      accuracy: the key of the accuracy curve, if ``train_fn`` returns one.
      progress: called with the label after each run, one per seed (a progress bar's hook).
      steps: with a :class:`Trainable`, how many steps each run trains.
      evaluate_every: with a :class:`Trainable`, its scalar metrics (``evaluate``'s, and
        ``advance``'s scalars) are recorded every this many steps (an epoch, say), as curves
        of ``steps // evaluate_every`` points; it must divide ``steps``. ``None``: once, at
        the end.
      steps_per_call: with a :class:`Trainable`, how many steps one compiled call trains; the
        calls are made from Python, each continuing from the last carry (donated), and must
        divide ``evaluate_every``. ``None``: ``evaluate_every`` steps. Use 1 where a step
        inside a compiled loop is slower than alone: on XLA:CPU, a CNN's convolutions (the
        MNIST example's step ran 7x-20x slower inside ``lax.scan`` than jitted alone).

    Returns:
      ``{label: {"curves": {key: array (seeds, steps)}, "final_loss": (mean, std),
      "best_accuracy": (mean, std) or None, "steps_to_target": [per seed, None where never],
      "seconds": wall time of the runs after compilation, "compile_seconds": ...}}``.
    """
    from jadam.registry import optimizers as registry

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("jadam.tune.compare: seeds is empty")
    if isinstance(train_fn, Trainable):
        if steps is None:
            raise ValueError("jadam.tune.compare: a Trainable needs steps=")
        runner = _stepped_runner(train_fn, _positive_int("compare", "steps", steps),
                                 evaluate_every, steps_per_call)
    else:
        if steps is not None or evaluate_every is not None or steps_per_call is not None:
            raise ValueError("jadam.tune.compare: steps=, evaluate_every= and steps_per_call="
                             " are for a Trainable; train_fn runs whole")
        runner = _whole_runner(train_fn)
    specs = ({name: {"name": name} for name in optimizers} if not isinstance(optimizers, Mapping)
             else {label: {"name": label, **dict(spec)} for label, spec in optimizers.items()})
    out = {}
    for label, spec in specs.items():
        spec = dict(spec)
        tx = registry[spec.pop("name")].make(**spec)
        start = time.perf_counter()
        run = runner(tx, seeds[0])
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        runs = []
        for s in seeds:
            runs.append(run(s))
            if progress is not None:
                progress(label)
        seconds = time.perf_counter() - start
        curves = {k: np.stack([np.asarray(r[k]) for r in runs]) for k in runs[0]}
        final = curves["loss"][:, -1]
        entry: dict[str, Any] = {
            "curves": curves,
            "final_loss": (float(np.mean(final)), float(np.std(final))),
            "best_accuracy": None,
            "steps_to_target": None,
            "seconds": seconds,
            "compile_seconds": compile_seconds,
        }
        if accuracy in curves:
            best = curves[accuracy].max(axis=1)
            entry["best_accuracy"] = (float(np.mean(best)), float(np.std(best)))
        if target_loss is not None:
            entry["steps_to_target"] = [
                int(np.argmax(c <= target_loss)) + 1 if (c <= target_loss).any() else None
                for c in curves["loss"]
            ]
        out[label] = entry
    return out


def _whole_runner(train_fn: Callable[[Any, jax.Array], Any]) -> Callable[..., Any]:
    """``runner(tx, seed)`` compiles ``train_fn`` for ``tx`` and returns ``run(seed)``."""

    def runner(tx: optax.GradientTransformation, seed: int) -> Callable[[int], Any]:
        compiled = jax.jit(lambda s: train_fn(tx, s)).lower(jnp.int32(seed)).compile()
        return lambda s: jax.device_get(compiled(jnp.int32(s)))

    return runner


def _stepped_runner(trainable: Trainable, steps: int, evaluate_every: int | None,
                    steps_per_call: int | None) -> Callable[..., Any]:
    """A :class:`Trainable` run from Python: ``steps_per_call`` steps per compiled call, the
    scalars every ``evaluate_every`` steps."""
    fn = "compare"
    every = steps if evaluate_every is None else _positive_int(fn, "evaluate_every",
                                                               evaluate_every)
    per_call = every if steps_per_call is None else _positive_int(fn, "steps_per_call",
                                                                  steps_per_call)
    if steps % every or every % per_call:
        raise ValueError(f"jadam.tune.{fn}: steps_per_call ({per_call}) must divide "
                         f"evaluate_every ({every}), which must divide steps ({steps})")

    def runner(tx: optax.GradientTransformation, seed: int) -> Callable[[int], Any]:
        lowered = jax.jit(lambda s: trainable.start(tx, s)).lower(jnp.int32(seed))
        start, carry_shape = lowered.compile(), lowered.out_info
        advance = jax.jit(lambda c: trainable.advance(tx, c, per_call),
                          donate_argnums=0).lower(carry_shape).compile()
        evaluate = None
        if (evaluate_fn := trainable.evaluate) is not None:
            evaluate = jax.jit(lambda c: evaluate_fn(tx, c)).lower(carry_shape).compile()

        def run(s: int) -> dict[str, np.ndarray]:
            carry = start(jnp.int32(s))
            curves: dict[str, list[Any]] = {}
            points: dict[str, list[Any]] = {}
            for _ in range(steps // every):
                for _ in range(every // per_call):
                    carry, metrics = advance(carry)
                    for k, v in metrics.items():
                        if jnp.ndim(v):
                            curves.setdefault(k, []).append(v)
                scalars = {k: v for k, v in metrics.items() if not jnp.ndim(v)}
                if evaluate is not None:
                    scalars.update(evaluate(carry))
                for k, v in scalars.items():
                    points.setdefault(k, []).append(v)
            out = {k: np.concatenate(jax.device_get(v)) for k, v in curves.items()}
            out.update({k: np.stack(jax.device_get(v)) for k, v in points.items()})
            return out

        return run

    return runner


def save(result: Any, path: str) -> None:
    """Writes a result of this module (dicts, lists, numbers, arrays) to a JSON file; arrays
    keep their dtype and shape."""
    with open(path, "w") as f:
        json.dump(_to_json(result), f)


def load(path: str) -> Any:
    """Reads what :func:`save` wrote, with NumPy arrays back."""
    with open(path) as f:
        return _from_json(json.load(f))


def _to_json(x: Any) -> Any:
    if isinstance(x, (np.ndarray, jax.Array, np.generic)):
        a = np.asarray(x)
        return {"__array__": a.tolist(), "dtype": str(a.dtype), "shape": list(a.shape)}
    if isinstance(x, Mapping):
        return {str(k): _to_json(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return {"__tuple__": [_to_json(v) for v in x]}
    if isinstance(x, list):
        return [_to_json(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return {"__float__": repr(x)}
    return x


def _from_json(x: Any) -> Any:
    if isinstance(x, dict):
        if "__array__" in x:
            return np.asarray(x["__array__"], dtype=x["dtype"]).reshape(x["shape"])
        if "__tuple__" in x:
            return tuple(_from_json(v) for v in x["__tuple__"])
        if "__float__" in x:
            return float(x["__float__"])
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x
