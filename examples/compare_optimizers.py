"""Compare optimizers on the MNIST example's CNN: the same data, seeds and batches for each,
a table of mean +- std over seeds, and a PNG of the training loss and test accuracy curves
with bands over the seeds.

    python -m examples.compare_optimizers                     # the classics and Adam, 3 seeds
    python -m examples.compare_optimizers --optimizers adam lion:learning_rate=3e-4 \\
        sgd:learning_rate=0.05,momentum=0.9 --seeds 5 --plot compare.png

    python -m examples.compare_optimizers --optimizers adamw,muon,prodigy   # Adam's rivals
    python -m examples.compare_optimizers --dataset fashion_mnist --epochs 3 --seeds 2

Each run is the example's CNN as a ``jadam.tune.Trainable`` (``make_trainable``), evaluated on
the test set after every epoch. On CPU each step is its own compiled call from Python
(``--steps-per-call 1``): XLA:CPU runs this CNN's step 7x-20x slower inside a compiled loop
than alone; elsewhere an epoch is one compiled call.

An optimizer is a name in jadam.optimizers, optionally followed by ``:key=value,...``; names
without arguments may also be given as one comma-separated list.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from examples import tools
from examples.mnist import train as mnist
from jadam import tune

DEFAULT = [
    "sgd:learning_rate=0.05",
    "sgd:learning_rate=0.05,momentum=0.9",
    "adam",
    "adamw",
    "adadelta",
    "rmsprop:learning_rate=1e-3",
    "adagrad",
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--optimizers", nargs="+", default=DEFAULT, metavar="NAME[:K=V,...]",
                        help="optimizers to compare")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per optimizer")
    tools.add_data_flags(parser, epochs=10)
    parser.add_argument("--plot", default="compare_optimizers.png", help="the PNG to write")
    parser.add_argument("--json", default=None, help="also save the results as JSON")
    parser.add_argument("--steps-per-call", type=int, default=None,
                        help="training steps per compiled call (default: 1 on CPU, an epoch "
                             "elsewhere)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    dataset = tools.load(args)
    specs = {}
    listed = [part for spec in args.optimizers
              for part in (spec.split(",") if ":" not in spec else [spec]) if part]
    for spec in listed:
        name, kwargs = tools.parse_spec(spec)
        specs[spec] = {"name": name, **kwargs}
    trainable = mnist.make_trainable(dataset, optimizer=None, batch_size=args.batch_size,
                                     train_size=args.train_size)
    per_epoch = len(dataset.train_labels[:args.train_size]) // args.batch_size
    per_call = args.steps_per_call or (1 if jax.default_backend() == "cpu" else per_epoch)
    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(specs) * args.seeds, desc="runs", unit="run", file=sys.stderr)
    results = tune.compare(trainable, specs, seeds=range(args.seeds), accuracy="test_accuracy",
                           steps=args.epochs * per_epoch, evaluate_every=per_epoch,
                           steps_per_call=per_call,
                           progress=(lambda _: bar.update()) if bar else None)
    if bar:
        bar.close()

    width = max(len(s) for s in specs)
    print(f"\n{'optimizer':<{width}}  final train loss     best test accuracy   seconds")
    for label, r in results.items():
        loss_mean, loss_std = r["final_loss"]
        acc_mean, acc_std = r["best_accuracy"]
        print(f"{label:<{width}}  {loss_mean:.4f} +- {loss_std:.4f}    "
              f"{100 * acc_mean:6.2f}% +- {100 * acc_std:.2f}%   {r['seconds']:.1f}")
    plot(results, args.plot, title=f"{dataset.name}, {args.seeds} seeds")
    print(f"wrote {args.plot}")
    if args.json:
        tune.save(results, args.json)
    return results


def plot(results: dict, path: str, title: str) -> None:
    plt = tools.pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, r) in enumerate(results.items()):
        color = plt.cm.tab10(i % 10)
        loss = r["curves"]["loss"]
        # A running mean over ~2% of the steps, so the curves can be told apart.
        k = max(1, loss.shape[1] // 50)
        kernel = np.ones(k) / k
        smooth = np.stack([np.convolve(c, kernel, mode="valid") for c in loss])
        steps = np.arange(smooth.shape[1]) + k
        ax_loss.plot(steps, smooth.mean(0), color=color, label=label)
        ax_loss.fill_between(steps, smooth.min(0), smooth.max(0), color=color, alpha=0.2)
        acc = 100 * r["curves"]["test_accuracy"]
        epochs = np.arange(1, acc.shape[1] + 1)
        ax_acc.plot(epochs, acc.mean(0), "o-", color=color, label=label)
        ax_acc.fill_between(epochs, acc.min(0), acc.max(0), color=color, alpha=0.2)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log",
                title="training loss (band: min-max over seeds)")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
