"""What the tuning tools share: the dataset flags, optimizer specs with hyperparameters, and
matplotlib set up for files."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from examples import data


def add_data_flags(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    parser.add_argument("--dataset", default="digits",
                        choices=["auto", "mnist", "fashion_mnist", "digits"],
                        help="the data (see examples/data.py); the digits need no network")
    parser.add_argument("--data-dir", default=None, help="MNIST files you already have")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on the first N training images only")
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")


def load(args: argparse.Namespace) -> data.Dataset:
    ds, why = data.load(args.dataset,
                        data_dir=pathlib.Path(args.data_dir) if args.data_dir else None)
    print(f"dataset: {ds.name} from {ds.source} ({why})", flush=True)
    return ds


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name:key=value,key=value"`` -> (name, hyperparameters)."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: expected key=value after ':', got {item!r}")
        kwargs[key.strip()] = _number(value.strip())
    return name.strip(), kwargs


def _number(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
