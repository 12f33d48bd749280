"""Sweep two hyperparameters of an optimizer on the MNIST example's CNN, every point of the
grid in ONE compiled program (jadam.tune.sweep), and draw a heatmap of the final test accuracy.

    python -m examples.sweep                                   # Adam: learning rate x b1
    python -m examples.sweep --optimizer lion --x learning_rate=1e-5,3e-5,1e-4,3e-4 \\
        --y b1=0.8,0.9,0.95 --seeds 2 --plot lion.png
    python -m examples.sweep --halving                         # successive halving instead:
        # 27 random configurations (learning rate log-uniform, b1 from 0.5, 0.9, 0.95), the
        # best half going on twice as far each rung, and a plot of the rungs
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
    parser.add_argument("--halving", action="store_true",
                        help="successive halving (jadam.tune.successive_halving) over random "
                             "configurations instead of the grid; plots its rungs")
    parser.add_argument("--configs", type=int, default=27, help="--halving: configurations")
    parser.add_argument("--max-steps", type=int, default=270,
                        help="--halving: steps the last survivor trains")
    parser.add_argument("--eta", type=int, default=2,
                        help="--halving: keep the best 1/eta of each rung")
    parser.add_argument("--min-steps", type=int, default=None,
                        help="--halving: the shortest rung (default: a ninth of --max-steps; "
                             "on the digits, shorter first rungs favoured fast starters that "
                             "ended worse, bench/README.md)")
    args = parser.parse_args(argv)
    if args.halving:
        return halving(args)

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


def halving(args: argparse.Namespace) -> dict:
    """--halving: 27 random configurations by default, test loss ranks them at each rung."""
    dataset = tools.load(args)
    trainable = mnist.make_trainable(dataset, optimizer=args.optimizer,
                                     batch_size=args.batch_size, train_size=args.train_size)
    space = {"learning_rate": tune.log_uniform(1e-4, 3e-2), "b1": [0.5, 0.9, 0.95]}
    print(f"successive halving: {args.configs} configurations of {args.optimizer}, up to "
          f"{args.max_steps} steps, eta {args.eta}", flush=True)  # (min_steps below)
    min_steps = args.min_steps or max(1, args.max_steps // 9)
    result = tune.successive_halving(trainable, space, max_steps=args.max_steps, eta=args.eta,
                                     min_steps=min_steps, num_configs=args.configs,
                                     metric="test_loss", progress=print)
    best = result["best"]
    print("best: " + ", ".join(f"{k}={v:.4g}" for k, v in best["coords"].items())
          + f": test loss {best['metric']:.4f}; {result['steps']} steps trained in all "
          f"({result['seconds']:.1f} s, {result['compilations']} rung compilations), against "
          f"{args.configs * args.max_steps} for every configuration to the end")
    plot_rungs(result, args.plot, title=f"successive halving of {args.optimizer} on "
                                        f"{dataset.name}")
    print(f"wrote {args.plot}")
    if args.json:
        tune.save(result, args.json)
    return result


def plot_rungs(result: dict, path: str, title: str) -> None:
    """Training loss against steps (a trailing mean of 10), each configuration a line that
    ends where it was stopped, coloured by how far it went; the winner in black."""
    plt = tools.pyplot()
    curves = np.asarray(result["curves"]["loss"], np.float64)
    stops = sorted({r["steps"] for r in result["rungs"]})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(stops)))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, stop in enumerate(result["stopped_at"]):
        y = curves[i, :stop]
        # A trailing mean of up to 10 steps, from the first step (a short rung stays visible).
        total = np.concatenate([[0.0], np.cumsum(y)])
        t = np.arange(1, stop + 1)
        smooth = (total[t] - total[np.maximum(t - 10, 0)]) / np.minimum(t, 10)
        x = t
        winner = i == result["best"]["index"]
        ax.plot(x, smooth, lw=2.5 if winner else 1,
                color="black" if winner else colours[stops.index(stop)],
                alpha=1 if winner else 0.7, zorder=3 if winner else 2)
    for stop in stops[:-1]:
        ax.axvline(stop, color="grey", lw=0.8, ls=":")
    for stop, colour in zip(stops, colours, strict=True):  # one legend entry per rung
        n = sum(s == stop for s in result["stopped_at"])
        ax.plot([], [], color=colour, label=f"{n} stopped at step {stop}")
    ax.plot([], [], color="black", lw=2.5, label="the winner")
    ax.legend(loc="lower left", fontsize=9)
    ax.set(xscale="log", yscale="log", xlabel="step",
           ylabel="training loss (trailing mean of 10 steps)", title=title)
    best = ", ".join(f"{k}={v:.3g}" for k, v in result["best"]["coords"].items())
    ax.text(0.99, 0.98, f"winner: {best}", transform=ax.transAxes, ha="right", va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
