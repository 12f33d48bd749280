"""A hyperparameter sweep as one program against separate runs.

16 configurations (4 learning rates x 4 values of b1) of Adam on the MNIST example's CNN,
trained on scikit-learn's digits for ``--epochs`` epochs:

* ``jadam.tune.sweep`` at several ``vectorize`` widths: one compiled program each;
* 16 separate runs with the hyperparameters as Python numbers: one compilation per run (what
  a loop over ``jadam.adam(lr)`` or ``optax.adam(lr)`` does under ``jax.jit``);
* 16 calls of one jitted function with the hyperparameters as traced arguments (the reuse that
  ``optax.inject_hyperparams`` gives): one compilation.

Wall time of each, including compilation, in one process, and the number of compilations.

    python bench/sweep.py [--epochs 3]

Results go to ``bench/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mnist_cnn import _cpu_name  # noqa: E402
from examples import data  # noqa: E402
from examples.mnist import train as mnist_cnn  # noqa: E402
from jadam import tune  # noqa: E402

LRS = [3e-4, 1e-3, 3e-3, 1e-2]
B1S = [0.5, 0.8, 0.9, 0.95]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    digits = data.load_digits()
    compiles = []
    train = mnist_cnn.make_train_fn(digits, epochs=args.epochs)

    def counted(hp, seed):
        compiles.append(1)  # traced once per compilation
        return train(hp, seed)

    grid = {"b1": B1S, "learning_rate": LRS}
    rows = []

    def record(name, seconds, n_compiles, accuracy):
        rows.append({"method": name, "seconds": seconds, "compilations": n_compiles,
                     "mean_final_accuracy": float(np.mean(accuracy))})
        print(f"{name}: {seconds:.1f} s, {n_compiles} compilation(s)", flush=True)

    for width in args.widths:
        compiles.clear()
        result = tune.sweep(counted, grid, vectorize=width)
        record(f"sweep, vectorize={width}", result["seconds"], len(compiles),
               result["results"]["test_accuracy"][:, -1])
        if width == 1:
            reference = result["results"]["test_accuracy"][:, -1]

    points = tune.grid_points(grid)
    compiles.clear()
    start = time.perf_counter()
    accuracy = []
    for lr, b1 in zip(points["learning_rate"], points["b1"], strict=True):
        out = jax.jit(lambda lr=lr, b1=b1: counted({"learning_rate": lr, "b1": b1}, 0))()
        accuracy.append(float(out["test_accuracy"][-1]))
    record("16 runs, Python numbers (a jit each)", time.perf_counter() - start, len(compiles),
           accuracy)
    assert np.array_equal(np.float32(accuracy), reference), "separate runs differ"

    compiles.clear()
    start = time.perf_counter()
    step = jax.jit(counted)
    accuracy = []
    for lr, b1 in zip(points["learning_rate"], points["b1"], strict=True):
        out = step({"learning_rate": jnp.float32(lr), "b1": jnp.float32(b1)}, jnp.int32(0))
        accuracy.append(float(out["test_accuracy"][-1]))
    record("16 runs, traced arguments (one jit)", time.perf_counter() - start, len(compiles),
           accuracy)

    meta = {"date": datetime.date.today().isoformat(), "machine": _cpu_name(),
            "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(), "epochs": args.epochs,
            "configurations": 16}
    out = ROOT / "bench" / "results" / "sweep.json"
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    base = next(r["seconds"] for r in rows if r["method"].startswith("16 runs, Python"))
    print("\n| method | wall time (s) | compilations | vs 16 separate jits |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.1f} | {r['compilations']} | "
              f"{r['seconds'] / base:.2f} |")
    print(f"\n{meta}")


if __name__ == "__main__":
    main()
