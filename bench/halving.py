"""Successive halving against the full grid, on the MNIST example's CNN and the 8x8 digits.

The same 27 configurations of Adam (9 learning rates, log-spaced, x 3 values of b1), the same
seed and batches: ``jadam.tune.successive_halving`` (each ``--variants``: a reduction factor
and a shortest rung; up to ``--steps`` steps) against
``jadam.tune.sweep`` of the same Trainable, every configuration trained to ``--steps``. Wall
time including compilation, steps trained, compilations, and the test loss of the
configuration each picks against the best of the grid.

    python -m bench.halving [--steps 270]

Results go to ``bench/results/halving.json``.
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
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mnist_cnn import _cpu_name  # noqa: E402
from examples import data  # noqa: E402
from examples.mnist import train as mnist_cnn  # noqa: E402
from jadam import tune  # noqa: E402

SPACE = {"learning_rate": [float(x) for x in np.geomspace(1e-4, 3e-2, 9)],
         "b1": [0.5, 0.9, 0.95]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=270)
    parser.add_argument("--variants", nargs="*", default=["3", "3:30", "2:30"],
                        metavar="ETA[:MIN_STEPS]",
                        help="successive halving's reduction factor and shortest rung (none: "
                             "as many rungs as leave one configuration)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "halving.json"))
    args = parser.parse_args(argv)
    trainable = mnist_cnn.make_trainable(data.load_digits())

    variants = {}
    for variant in args.variants:
        eta, _, min_steps = variant.partition(":")
        start = time.perf_counter()
        variants[variant] = (tune.successive_halving(
            trainable, SPACE, max_steps=args.steps, eta=int(eta),
            min_steps=int(min_steps) if min_steps else None, metric="test_loss",
            progress=print), time.perf_counter() - start)
    start = time.perf_counter()
    grid = tune.sweep(trainable, {"b1": SPACE["b1"], "learning_rate": SPACE["learning_rate"]},
                      steps=args.steps)
    grid_s = time.perf_counter() - start

    grid_loss = np.asarray(grid["results"]["test_loss"])
    best = int(np.nanargmin(grid_loss))
    report: dict = {
        "meta": {"date": datetime.date.today().isoformat(),
                 "machine": f"{_cpu_name()}, {os.cpu_count()} cores ({platform.machine()})",
                 "python": platform.python_version(), "jax": jax.__version__,
                 "backend": jax.default_backend(), "steps": args.steps,
                 "command": "python -m bench.halving " + " ".join(argv or sys.argv[1:])},
        "grid": {"seconds": grid_s, "steps": len(grid_loss) * args.steps, "compilations": 1,
                 "best": {k: grid["coords"][k][best] for k in grid["coords"]},
                 "test_loss": float(grid_loss[best]),
                 "test_loss_by_config": [float(x) for x in grid_loss],
                 "coords": grid["coords"]},
        "halving": [],
    }
    g = report["grid"]
    print("\n| | wall s | steps | compilations | picked | test loss |\n|---|---|---|---|---|---|")
    for variant, (result, seconds) in variants.items():
        picked = result["best"]["coords"]
        # The grid's run of the configuration halving picked is the same training.
        same = next(i for i in range(len(grid_loss))
                if all(grid["coords"][k][i] == v for k, v in picked.items()))
        rank = int(np.sum(grid_loss < grid_loss[same])) + 1
        h = {"variant": variant, "rungs": [(len(r["configs"]), r["steps"])
                                               for r in result["rungs"]],
             "seconds": seconds, "steps": result["steps"],
             "compilations": result["compilations"] + 1,  # (and its start)
             "picked": picked, "test_loss": result["best"]["metric"],
             "grid_test_loss_of_picked": float(grid_loss[same]), "rank_in_grid": rank,
             "loss_over_grid_best": result["best"]["metric"] / g["test_loss"],
             "steps_share": result["steps"] / g["steps"]}
        report["halving"].append(h)
        share = 100 * h["steps_share"]
        eta = variant.split(":")[0]
        print(f"| successive halving, eta {eta}, rungs {h['rungs']} | {seconds:.1f} | {h['steps']} "
              f"({share:.0f}%) | {h['compilations']} | {picked} | {h['test_loss']:.4f} "
              f"({h['loss_over_grid_best']:.3f}x the grid's best, rank {rank} of 27) |")
    print(f"| full grid (tune.sweep) | {g['seconds']:.1f} | {g['steps']} | 1 | {g['best']} | "
          f"{g['test_loss']:.4f} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
