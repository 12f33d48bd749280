"""Sweep two hyperparameters of an optimizer on the MNIST example's CNN, every point of the
grid in ONE compiled program (jadam.tune.sweep), and draw a heatmap of the final test accuracy.

    python -m examples.sweep                                   # Adam: learning rate x b1
    python -m examples.sweep --optimizer lion --x learning_rate=1e-5,3e-5,1e-4,3e-4 \\
        --y b1=0.8,0.9,0.95 --seeds 2 --plot lion.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import jadam
from examples import tools
from examples.mnist import train as mnist
from jadam import tune


def _axis(text: str) -> tuple[str, list[float]]:
    name, _, values = text.partition("=")
    if not values:
        raise argparse.ArgumentTypeError(f"expected name=v1,v2,..., got {text!r}")
    return name, [float(v) for v in values.split(",")]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--optimizer", default="adam", choices=sorted(jadam.optimizers))
    parser.add_argument("--x", type=_axis, default="learning_rate=3e-4,1e-3,3e-3,1e-2",
                        metavar="NAME=V1,V2,...", help="the hyperparameter along x")
    parser.add_argument("--y", type=_axis, default="b1=0.5,0.8,0.9,0.95",
                        metavar="NAME=V1,V2,...", help="the hyperparameter along y")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    parser.add_argument("--vectorize", type=int, default=None,
                        help="runs side by side under vmap (default: per backend)")
    tools.add_data_flags(parser, epochs=5)
    parser.add_argument("--plot", default="sweep.png", help="the heatmap PNG to write")
    parser.add_argument("--json", default=None, help="also save the results as JSON")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    (x_name, xs), (y_name, ys) = args.x, args.y
    dataset = tools.load(args)
    n = len(xs) * len(ys) * args.seeds
    bar = None
    if args.progress:
        from tqdm import tqdm
        bar = tqdm(total=n * args.epochs, desc=f"{n} runs", unit="epoch", file=sys.stderr)
    train = mnist.make_train_fn(dataset, optimizer=args.optimizer, epochs=args.epochs,
                                    batch_size=args.batch_size, train_size=args.train_size,
                                    on_epoch=bar.update if bar else None)
    print(f"{n} runs of {args.optimizer} in one program...", flush=True)
    result = tune.sweep(train, {y_name: ys, x_name: xs}, seeds=range(args.seeds),
                        vectorize=args.vectorize)
    if bar:
        bar.close()
    final = result["results"]["test_accuracy"][:, -1].reshape(len(ys), len(xs), args.seeds)
    accuracy = final.mean(axis=2)
    print(f"{n} runs in {result['seconds']:.1f} s (compiled once, {result['vectorize']} side "
          "by side)")
    print(f"\n{y_name:>12} \\ {x_name}: " + "  ".join(f"{x:>8g}" for x in xs))
    for j, y in enumerate(ys):
        print(f"{y:>12g}   " + "  ".join(f"{100 * a:7.2f}%" for a in accuracy[j]))
    best = np.unravel_index(np.argmax(accuracy), accuracy.shape)
    print(f"best: {x_name}={xs[best[1]]:g}, {y_name}={ys[best[0]]:g}: "
          f"{100 * accuracy[best]:.2f}%")
    heatmap(accuracy, xs, ys, x_name, y_name, args.plot,
            title=f"{args.optimizer} on {dataset.name}: test accuracy after {args.epochs} "
                  f"epochs (mean of {args.seeds} seed(s))")
    print(f"wrote {args.plot}")
    if args.json:
        tune.save(result, args.json)
    return result


def heatmap(accuracy: np.ndarray, xs: list[float], ys: list[float], x_name: str, y_name: str,
            path: str, title: str) -> None:
    plt = tools.pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(xs) + 3, 1.0 * len(ys) + 2.5))
    image = ax.imshow(100 * accuracy, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    ax.set(xlabel=x_name, ylabel=y_name, title=title)
    middle = (accuracy.min() + accuracy.max()) / 2  # viridis is dark below, light above
    for j in range(len(ys)):
        for i in range(len(xs)):
            ax.text(i, j, f"{100 * accuracy[j, i]:.1f}", ha="center", va="center",
                    color="white" if accuracy[j, i] < middle else "black")
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
