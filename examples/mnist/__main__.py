"""Train a small CNN on handwritten digits with jadam's Adam, one jit-compiled step at a time.

The whole training step (forward pass, loss, gradients, ``tx.update``, applying the update) is
one ``jax.jit`` function whose parameters and optimizer state are donated, so XLA updates them
in place. Each batch is sharded over every device (a
``jax.sharding.Mesh`` with one ``data`` axis) and the parameters are replicated, so the same
code runs data-parallel on a multi-core CPU, several GPUs or a TPU. The optimizer is used
through its ``(init, update)`` API in the open:

    state = tx.init(params)
    updates, state = tx.update(grads, state, params)

Data: ``--dataset auto`` (the default) takes MNIST if it is cached or downloadable, else
Fashion-MNIST if Debian's ``dataset-fashion-mnist`` is installed, else scikit-learn's 8x8
digits, and says which and why (see ``examples/data.py``).

The example is a small library: ``train.py`` (config, model, ``train_step``, ``eval_step``,
``train_and_evaluate``, and the scanned runs the tuning tools vmap), ``checkpoints.py`` (orbax
resume, the saved parameters), ``distributed.py`` (several processes), ``plots.py`` (progress
bar, curves), and ``__main__.py``, the command line. Run it from the repository's root.

    python -m examples.mnist                                    # offline: the 8x8 digits
    python -m examples.mnist --dataset fashion_mnist --epochs 3 --plot curves.png
    python -m examples.mnist --optimizer lion --learning-rate 3e-4
    python -m examples.mnist --checkpoint-dir /tmp/ckpt     # then again with --resume
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import time
from typing import Any

import jadam
from examples import data as datasets
from examples.mnist import distributed, train


def parse_args(argv: list[str] | None = None) -> train.Config:
    parser = argparse.ArgumentParser(
        prog="python -m examples.mnist",
        description="Train a small CNN on handwritten digits with a jadam optimizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--optimizer", default="adam", choices=sorted(jadam.optimizers),
                        help="any optimizer in jadam.optimizers")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="the optimizer's learning rate (default: its own default)")
    parser.add_argument("--state", default="plain",
                        choices=["plain", "packed", "8bit", "4bit", "packed-8bit"],
                        help="how the optimizer keeps its state: one array per parameter, "
                             "small ones packed (jadam.packed), 8-bit or 4-bit moments "
                             "(jadam.quantized), or packed and 8-bit")
    parser.add_argument("--packed", action="store_true",
                        help="train the parameters packed into a few flat buffers "
                             "(jadam.PackedModel): one kernel for all small leaves; the "
                             "optimizer must be elementwise")
    parser.add_argument("--param-dtype", default="float32",
                        choices=["float32", "bfloat16", "float16"],
                        help="the model's parameters and arithmetic (the optimizer's moments "
                             "stay float32 unless --state quantizes them)")
    parser.add_argument("--rounding", default="nearest",
                        choices=["nearest", "kahan", "stochastic"],
                        help="how a bfloat16 or float16 parameter takes its update: rounded to "
                             "nearest, Kahan-compensated (jadam.kahan_summation) or rounded "
                             "at random (jadam.stochastic_rounding)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the training set (default: 40 for digits, 3 else)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per step, split over the local devices")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initialisation and the order of the batches")
    parser.add_argument("--dataset", default="auto",
                        choices=["auto", "mnist", "fashion_mnist", "digits"],
                        help="auto: MNIST if cached or downloadable, else Fashion-MNIST if "
                             "installed, else scikit-learn's digits")
    parser.add_argument("--data-dir", default=None,
                        help="a directory holding the four MNIST (or Fashion-MNIST) .gz files")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on the first N training images only")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="write an orbax checkpoint here after every epoch")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in --checkpoint-dir")
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="write a PNG of the loss and accuracy curves")
    parser.add_argument("--log", default=None, metavar="PATH",
                        help="append one JSON line per epoch")
    parser.add_argument("--save-params", default=None, metavar="PATH",
                        help="write the final parameters to an .npz file")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.add_argument("--log-every", type=int, default=0, metavar="N",
                        help="print the loss every N steps (0: only per epoch)")
    parser.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                        metavar="HOST:PORT",
                        help="several processes: the address of process 0, which all of them "
                             "connect to (jax.distributed); default $JAX_COORDINATOR_ADDRESS")
    parser.add_argument("--num-processes", type=int,
                        default=distributed.env_int("JAX_NUM_PROCESSES"),
                        help="several processes: how many (default $JAX_NUM_PROCESSES)")
    parser.add_argument("--process-id", type=int, default=distributed.env_int("JAX_PROCESS_ID"),
                        help="several processes: this one's index, 0 to --num-processes - 1 "
                             "(default $JAX_PROCESS_ID)")
    args = parser.parse_args(argv)
    return train.Config(**vars(args))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    distributed.start_processes(config.coordinator, config.num_processes, config.process_id)
    dataset, why = datasets.load(
        config.dataset, data_dir=pathlib.Path(config.data_dir) if config.data_dir else None
    )
    print(f"dataset: {dataset.name} from {dataset.source} ({why})", flush=True)
    start = time.perf_counter()
    summary = train.train_and_evaluate(config, dataset,
                                       log=functools.partial(print, flush=True))
    print(
        f"\ntest accuracy {100 * summary['test_accuracy']:.2f}% after {summary['epochs']} "
        f"epochs; {summary['images_per_second']:,.0f} images/s on {summary['devices']} "
        f"device(s); {summary['train_seconds']:.1f} s training, "
        f"{summary['compile_seconds']:.1f} s compiling, {time.perf_counter() - start:.1f} s "
        "in all",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main()
