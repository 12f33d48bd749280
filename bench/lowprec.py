"""bfloat16 parameters at float32 quality: what each combination of rounding and state format
costs in memory, and what it gives on real data.

``python -m bench.lowprec memory`` prints persistent bytes per parameter (parameters plus
optimizer state, read from the arrays ``init`` makes) for AdamW on the MNIST example's CNN
(28x28 images, 824,458 parameters).

``python -m bench.lowprec fashion [--seeds 3] [--epochs 3]`` trains that CNN on
Fashion-MNIST (Debian's ``dataset-fashion-mnist``) with AdamW at its defaults for each
combination: float32 parameters, and bfloat16 parameters rounded to nearest, Kahan-compensated
or stochastically rounded, each with float32, 8-bit and 4-bit moments. It appends each run to
``bench/results/lowprec-fashion.jsonl`` (a run already there is not repeated) and prints the
table of mean test accuracies.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jadam

RESULTS = pathlib.Path(__file__).parent / "results"
COMBOS = [("float32", "nearest", "plain")] + [
    ("bfloat16", rounding, state) for rounding in ("nearest", "kahan", "stochastic")
    for state in ("plain", "8bit", "4bit")]


def _cpu() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def cnn_params(dtype: Any) -> Any:
    from flax import nnx

    from examples.mnist.train import CNN
    model = CNN((28, 28, 1), 10, rngs=nnx.Rngs(0), dtype=dtype)
    return nnx.as_pure(nnx.state(model, nnx.Param))


def nbytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


def memory() -> None:
    from examples.mnist.train import make_optimizer
    f32, bf16 = cnn_params(jnp.float32), cnn_params(jnp.bfloat16)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(f32))
    rows: list[tuple[str, int]] = [
        ("optax.adamw, float32 parameters", nbytes(f32) + nbytes(
            jax.eval_shape(optax.adamw(1e-3).init, f32))),
        # Mixed precision: bfloat16 parameters for the model, a float32 master copy that the
        # optimizer updates, float32 moments.
        ("optax.adamw, bfloat16 parameters and a float32 master copy", nbytes(bf16) + nbytes(f32)
         + nbytes(jax.eval_shape(optax.adamw(1e-3).init, f32))),
        ("jadam.adamw, bfloat16 parameters and moments, nearest", nbytes(bf16) + nbytes(
            jax.eval_shape(jadam.adamw(1e-3).init, bf16))),
    ]
    names = {"nearest": "nearest", "kahan": "Kahan", "stochastic": "stochastic rounding"}
    states = {"plain": "float32 moments", "8bit": "8-bit moments", "4bit": "4-bit moments"}
    for _, rounding, state in COMBOS[1:]:
        tx = make_optimizer("adamw", None, state=state, param_dtype="bfloat16",
                            rounding=rounding)
        rows.append((f"jadam, bfloat16 parameters, {names[rounding]}, {states[state]}",
                     nbytes(bf16) + nbytes(jax.eval_shape(tx.init, bf16))))
    print(f"AdamW on the example's CNN for 28x28 images: {n:,} parameters\n")
    print("| parameters and state | bytes per parameter |")
    print("|---|---|")
    for name, total in rows:
        print(f"| {name} | {total / n:.2f} |")


def fashion(seeds: int, epochs: int) -> None:
    from examples import data
    from examples.mnist import train
    dataset, _ = data.load("fashion_mnist", log=lambda _: None)
    out = RESULTS / "lowprec-fashion.jsonl"
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["param_dtype"], r["rounding"], r["state"], r["seed"], r["epochs"]))
    for seed in range(seeds):
        for param_dtype, rounding, state in COMBOS:
            key = (param_dtype, rounding, state, seed, epochs)
            if key in done:
                continue
            config = train.Config(optimizer="adamw", dataset="fashion_mnist", epochs=epochs,
                                  seed=seed, progress=False, param_dtype=param_dtype,
                                  rounding=rounding, state=state)
            start = time.time()
            r = train.train_and_evaluate(config, dataset, log=lambda _: None)
            record = {"param_dtype": param_dtype, "rounding": rounding, "state": state,
                      "seed": seed, "epochs": epochs, "test_accuracy": r["test_accuracy"],
                      "test_loss": r["history"][-1]["test_loss"],
                      "seconds": time.time() - start, "date": time.strftime("%Y-%m-%d"),
                      "cpu": _cpu()}
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    table(out, epochs)


def table(path: pathlib.Path, epochs: int) -> None:
    runs = [json.loads(line) for line in path.read_text().splitlines()]
    runs = [r for r in runs if r["epochs"] == epochs]
    base = {r["seed"]: r["test_accuracy"] for r in runs if r["param_dtype"] == "float32"}
    print(f"\nFashion-MNIST, the example's CNN, AdamW, {epochs} epochs: mean test accuracy over "
          "seeds (and their spread, max - min), and the mean of each seed's difference from "
          "float32's run with the same seed\n")
    print("| parameters | rounding | moments | seeds | test accuracy % | spread | vs float32 |")
    print("|---|---|---|---|---|---|---|")
    for param_dtype, rounding, state in COMBOS:
        acc = {r["seed"]: r["test_accuracy"] for r in runs if (
            r["param_dtype"], r["rounding"], r["state"]) == (param_dtype, rounding, state)}
        if acc:
            paired = [acc[k] - base[k] for k in acc if k in base]
            diff = f"{100 * np.mean(paired):+.2f}" if paired else ""
            values = list(acc.values())
            print(f"| {param_dtype} | {rounding} | {state} | {len(acc)} | "
                  f"{100 * np.mean(values):.2f} | {100 * (max(values) - min(values)):.2f} | "
                  f"{diff} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lowprec")
    parser.add_argument("what", choices=["memory", "fashion", "table"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.what == "memory":
        memory()
    elif args.what == "fashion":
        fashion(args.seeds, args.epochs)
    else:
        table(RESULTS / "lowprec-fashion.jsonl", args.epochs)


if __name__ == "__main__":
    main()
