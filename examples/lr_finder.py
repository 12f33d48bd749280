"""The learning-rate range test (L. Smith, 2017) on the MNIST example's CNN: train with an
exponentially increasing learning rate, plot the loss against it, mark the suggestion.

    python -m examples.lr_finder                          # Adam, 1e-6 .. 1
    python -m examples.lr_finder --optimizer sgd --max-lr 10 --plot sgd_lr.png
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import optax
from flax import nnx

import jadam
from examples import tools
from examples.mnist import train as mnist
from jadam import tune


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--optimizer", default="adam", choices=sorted(jadam.optimizers))
    parser.add_argument("--min-lr", type=float, default=1e-6)
    parser.add_argument("--max-lr", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=300, help="steps of the test")
    parser.add_argument("--seed", type=int, default=0)
    tools.add_data_flags(parser, epochs=1)
    parser.add_argument("--plot", default="lr_finder.png", help="the PNG to write")
    parser.add_argument("--json", default=None, help="also save the results as JSON")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    dataset = tools.load(args)
    x = dataset.train_images[:args.train_size]
    y = dataset.train_labels[:args.train_size]
    model = mnist.CNN(dataset.image_shape, dataset.num_classes,
                          rngs=nnx.Rngs(args.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(y), (args.steps, args.batch_size))
    batches = (x[idx], y[idx])

    def loss_fn(params, batch):
        images, labels = batch
        logits = nnx.merge(graphdef, params)(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    print(f"{args.steps} steps of {args.optimizer}, rate {args.min_lr:g} to {args.max_lr:g}...",
          flush=True)
    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=args.steps, desc="range test", unit="step", file=sys.stderr)
    result = tune.lr_range_test(loss_fn, params, jax.tree.map(np.asarray, batches),
                                optimizer=args.optimizer, min_lr=args.min_lr,
                                max_lr=args.max_lr, steps=args.steps,
                                progress=(lambda n: bar.update(n - bar.n)) if bar else None)
    if bar:
        bar.close()
    print(f"suggested learning rate: {result['suggestion']:.3g} ({result['rule']}); "
          f"minimum / 10: {result['min_loss_lr_over_10']:.3g}"
          + ("; stopped early: the loss diverged" if result["stopped_early"] else ""))
    plot(result, args.plot, title=f"{args.optimizer} on {dataset.name}: range test")
    print(f"wrote {args.plot}")
    if args.json:
        tune.save(result, args.json)
    return result


def plot(result: dict, path: str, title: str) -> None:
    plt = tools.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(result["learning_rates"], result["losses"], color="0.75", lw=0.8, label="loss")
    ax.plot(result["learning_rates"], result["smoothed"], color="C0", label="smoothed")
    ax.axvline(result["suggestion"], color="C3", ls="--",
               label=f"suggestion {result['suggestion']:.2g}")
    ax.axvline(result["min_loss_lr_over_10"], color="C2", ls=":",
               label=f"minimum / 10 {result['min_loss_lr_over_10']:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=title)
    low, high = np.nanmin(result["smoothed"]), np.nanmax(result["smoothed"][:10])
    ax.set_ylim(max(low * 0.8, 1e-8), high * 1.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
