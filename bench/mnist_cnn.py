"""Throughput of the MNIST example's training step: jadam.adam against optax.adam in the same
process, and against the same CNN trained with torch.optim.Adam (foreach and fused) where torch
is installed.

    python bench/mnist_cnn.py [--rounds 40] [--steps 5]

Each round times a burst of ``--steps`` donated, jitted steps of every contender in turn
(rotating who goes first), so that noise on a shared machine hits them alike. The table gives
images per second at the median burst (and at the fastest, in brackets: the least disturbed),
and jadam's speed over optax's, burst against burst in the same round: the median and the
quartiles. Image content does not change the cost, so the 28x28 case uses random images; the
8x8 case uses scikit-learn's digits. Results go to ``bench/results/mnist_cnn.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jadam  # noqa: E402
from examples import data  # noqa: E402
from examples.mnist import train as mnist_cnn  # noqa: E402


def _jax_timer(tx, images, labels, batch_size):
    config = mnist_cnn.Config(batch_size=batch_size, progress=False)
    trainer = mnist_cnn.Trainer(config, images.shape[1:], 10, tx=tx)
    trainer.compile(images.shape[1:])
    rng = np.random.default_rng(0)

    def run(steps: int) -> float:
        idx = [rng.integers(0, len(labels), batch_size) for _ in range(steps)]
        batches = [trainer.shard(images[i], labels[i]) for i in idx]
        jax.block_until_ready(trainer.params)
        start = time.perf_counter()
        for x, y in batches:
            trainer.params, trainer.opt_state, loss, _ = trainer._train(
                trainer.params, trainer.opt_state, x, y)
        jax.block_until_ready((trainer.params, loss))
        return (time.perf_counter() - start) / steps

    run(5)  # warm up
    return run


def _torch_timer(images, labels, batch_size, fused):
    import torch
    from torch import nn

    h, w = images.shape[1:3]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear((h // 4) * (w // 4) * 64, 256), nn.ReLU(), nn.Linear(256, 10),
    )
    from bench.run import torch_device, torch_sync

    device = torch_device()
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused, foreach=not fused)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    y_all = torch.from_numpy(labels.astype(np.int64)).to(device)
    rng = np.random.default_rng(0)

    def run(steps: int) -> float:
        idx = [torch.from_numpy(rng.integers(0, len(labels), batch_size)).to(device)
               for _ in range(steps)]
        torch_sync(device)
        start = time.perf_counter()
        for i in idx:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x_all[i]), y_all[i])
            loss.backward()
            opt.step()
        torch_sync(device)
        return (time.perf_counter() - start) / steps

    run(5)
    return run


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_name() -> str:
    """The CPU, its cores and, when JAX runs on an accelerator, which one and how many."""
    name = f"{_cpu_name()}, {os.cpu_count()} cores ({platform.machine()})"
    if jax.default_backend() != "cpu":
        name += f", {jax.local_device_count()} x {jax.devices()[0].device_kind}"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mnist_cnn.json"))
    args = parser.parse_args()

    digits = data.load_digits()
    rng = np.random.default_rng(0)
    cases = {
        "8x8 digits": (digits.train_images, digits.train_labels),
        "28x28 (MNIST size)": (rng.random((4096, 28, 28, 1), np.float32),
                               rng.integers(0, 10, 4096).astype(np.int32)),
    }
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None

    results = []
    for case, (images, labels) in cases.items():
        timers = {
            "jadam.adam": _jax_timer(jadam.adam(1e-3), images, labels, args.batch_size),
            "optax.adam": _jax_timer(optax.adam(1e-3), images, labels, args.batch_size),
        }
        if torch_version:
            timers["torch Adam (foreach)"] = _torch_timer(images, labels, args.batch_size, False)
            timers["torch Adam (fused)"] = _torch_timer(images, labels, args.batch_size, True)
        seconds = {name: [] for name in timers}
        names = list(timers)
        for r in range(args.rounds):
            # Rotate who goes first: the burst after torch's threads wake up runs slower.
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds[name].append(timers[name](args.steps))
        median = {name: statistics.median(t) for name, t in seconds.items()}
        # jadam's speed over optax's, burst by burst within each round: the median and the
        # quartiles show how much of a difference is noise.
        per_round = sorted(o / j for o, j in zip(seconds["optax.adam"], seconds["jadam.adam"],
                                                 strict=True))
        ratio = statistics.median(per_round)
        quartiles = statistics.quantiles(per_round, n=4)
        row = {"case": case, "ratio_jadam_to_optax": ratio,
               "ratio_quartiles": [quartiles[0], quartiles[2]],
               **{name: args.batch_size / t for name, t in median.items()},
               "fastest": {name: args.batch_size / min(t) for name, t in seconds.items()}}
        results.append(row)
        print(f"{case}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in row.items()
                                      if isinstance(v, float) and k != "ratio_jadam_to_optax")
              + f"; jadam/optax {ratio:.3f}", flush=True)

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_name(),
        "python": platform.python_version(),
        "jax": jax.__version__, "optax": optax.__version__, "torch": torch_version,
        "backend": jax.default_backend(), "devices": jax.local_device_count(),
        "batch_size": args.batch_size, "rounds": args.rounds, "steps": args.steps,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    names = [k for k in results[0]
             if k not in ("case", "ratio_jadam_to_optax", "ratio_quartiles", "fastest")]
    print("\n| input | " + " | ".join(names) + " | jadam / optax (quartiles) |")
    print("|---|" + "---|" * (len(names) + 1))
    for r in results:
        print(f"| {r['case']} | "
              + " | ".join(f"{r[n]:,.0f} ({r['fastest'][n]:,.0f})" for n in names)
              + f" | {r['ratio_jadam_to_optax']:.2f} ({r['ratio_quartiles'][0]:.2f}-"
              f"{r['ratio_quartiles'][1]:.2f}) |")
    print(f"\n{meta}")


if __name__ == "__main__":
    main()
