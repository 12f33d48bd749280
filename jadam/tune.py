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

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: The training function a sweep runs: hyperparameters (float32 scalars, traced) and a seed
#: (an int32 scalar, traced) in, a pytree of arrays out.
TrainFn = Callable[[dict[str, jax.Array], jax.Array], Any]


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

    Returns:
      ``{"coords": {name: [value per run]}, "seed": [seed per run], "results": pytree with a
      leading axis of runs (NumPy arrays), "vectorize": int, "seconds": wall time including
      compilation}``. Runs are ordered grid point by grid point, seeds fastest.
    """
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

    def one(args: tuple[dict[str, jax.Array], jax.Array]) -> Any:
        return train_fn(*args)

    @jax.jit
    def run_all(hp: dict[str, jax.Array], seed: jax.Array) -> Any:
        return jax.lax.map(one, (hp, seed), batch_size=width if width > 1 else None)

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
) -> dict[str, Any]:
    """Trains the same model on the same data, seeds and batches with several optimizers.

    Args:
      train_fn: ``train_fn(tx, seed)`` trains with the optax transformation ``tx`` and returns
        curves, arrays over steps (or epochs): ``"loss"`` and optionally ``"accuracy"``. It is
        jitted once per optimizer, the seed traced.
      optimizers: names in ``jadam.optimizers``, or a mapping from a label to
        ``{"name": ..., **hyperparameters}`` (the label is the name if ``"name"`` is absent).
      seeds: the seeds each optimizer runs with (the same ones for all).
      target_loss: report the first step where the loss falls to this value.
      accuracy: the key of the accuracy curve, if ``train_fn`` returns one.
      progress: called with each label after its runs (a progress bar's hook).

    Returns:
      ``{label: {"curves": {key: array (seeds, steps)}, "final_loss": (mean, std),
      "best_accuracy": (mean, std) or None, "steps_to_target": [per seed, None where never],
      "seconds": wall time of the runs after compilation, "compile_seconds": ...}}``.
    """
    from jadam.registry import optimizers as registry

    specs = ({name: {"name": name} for name in optimizers} if not isinstance(optimizers, Mapping)
             else {label: {"name": label, **dict(spec)} for label, spec in optimizers.items()})
    out = {}
    for label, spec in specs.items():
        spec = dict(spec)
        tx = registry[spec.pop("name")].make(**spec)
        run = jax.jit(lambda seed, tx=tx: train_fn(tx, seed))
        start = time.perf_counter()
        compiled = run.lower(jnp.int32(seeds[0])).compile()
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        runs = [jax.device_get(compiled(jnp.int32(s))) for s in seeds]
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
        if progress is not None:
            progress(label)
    return out


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
