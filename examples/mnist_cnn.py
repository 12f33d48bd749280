"""Train a small CNN on handwritten digits with jadam's Adam, one jit-compiled step at a time.

The whole training step (forward pass, loss, gradients, ``tx.update``, applying the update) is
one ``jax.jit`` function whose parameters and optimizer state are donated, so XLA updates them
in place. The batch is sharded over every local device (a ``jax.sharding.Mesh`` with one
``data`` axis) and the parameters are replicated, so the same code runs data-parallel on a
multi-core CPU, several GPUs or a TPU. The optimizer is used through its ``(init, update)``
API in the open:

    state = tx.init(params)
    updates, state = tx.update(grads, state, params)

Data: ``--dataset auto`` (the default) takes MNIST if it is cached or downloadable, else
Fashion-MNIST if Debian's ``dataset-fashion-mnist`` is installed, else scikit-learn's 8x8
digits, and says which and why (see ``examples/data.py``).

    python examples/mnist_cnn.py                                # offline: the 8x8 digits
    python examples/mnist_cnn.py --dataset fashion_mnist --epochs 3 --plot curves.png
    python examples/mnist_cnn.py --optimizer lion --learning-rate 3e-4
    python examples/mnist_cnn.py --checkpoint-dir /tmp/ckpt     # then again with --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jadam

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from examples import data as datasets

# Epochs when --epochs is not given: the 8x8 digits are 1,437 images, the others 60,000.
DEFAULT_EPOCHS = {"digits": 40, "mnist": 3, "fashion_mnist": 3}


@dataclasses.dataclass
class Config:
    """Everything a run depends on; the command line sets it (see ``--help``)."""

    optimizer: str = "adam"
    learning_rate: float | None = None
    state: str = "plain"
    epochs: int | None = None
    batch_size: int = 64
    seed: int = 0
    dataset: str = "auto"
    data_dir: str | None = None
    train_size: int | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    plot: str | None = None
    log: str | None = None
    save_params: str | None = None
    progress: bool = True
    log_every: int = 0
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


class CNN(nnx.Module):
    """conv 32 - relu - pool - conv 64 - relu - pool - dense 256 - relu - dense 10, for images
    whose height and width are multiples of 4 (28x28 and 8x8)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *,
                 rngs: nnx.Rngs) -> None:
        height, width, channels = image_shape
        if height % 4 or width % 4:
            raise ValueError(f"image height and width must be multiples of 4, got {image_shape}")
        self.conv1 = nnx.Conv(channels, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.dense1 = nnx.Linear((height // 4) * (width // 4) * 64, 256, rngs=rngs)
        self.dense2 = nnx.Linear(256, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = max_pool_2x2(nnx.relu(self.conv1(x)))
        x = max_pool_2x2(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.dense2(nnx.relu(self.dense1(x)))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (NHWC, even height and width), as a reshape and a max.

    The same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``, but its gradient is a
    mask rather than XLA's select-and-scatter, which XLA:CPU runs slowly: the whole 28x28
    training step is 1.8x faster on a 2-core CPU (1,650-1,790 against 920-950 images/s).
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def make_optimizer(name: str, learning_rate: float | None) -> optax.GradientTransformation:
    """Any optimizer of ``jadam.optimizers`` by name, at its default learning rate unless one
    is given."""
    info = jadam.optimizers[name]
    return info.make() if learning_rate is None else info.make(learning_rate=learning_rate)


def loss_and_logits(graphdef: Any, params: Any, images: jax.Array,
                    labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = nnx.merge(graphdef, params)(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def train_step(graphdef: Any, tx: optax.GradientTransformation, params: Any, opt_state: Any,
               images: jax.Array, labels: jax.Array) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One step: loss, gradients, ``tx.update``, apply. Jitted with params and state donated."""
    grad_fn = jax.value_and_grad(functools.partial(loss_and_logits, graphdef), has_aux=True)
    (loss, logits), grads = grad_fn(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return params, opt_state, loss, accuracy


def eval_step(graphdef: Any, params: Any, images: jax.Array, labels: jax.Array,
              weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed loss and number correct over a (padded) batch; padding has weight 0."""
    logits = nnx.merge(graphdef, params)(images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jnp.sum(losses * weights), jnp.sum(correct * weights)


class Trainer:
    """The compiled steps of one run, for one model, optimizer and device mesh."""

    def __init__(self, config: Config, image_shape: tuple[int, int, int], num_classes: int,
                 tx: optax.GradientTransformation | None = None):
        self.config = config
        # Every device of every process: with several processes (jax.distributed), each feeds
        # its own devices their slice of every batch, and XLA sums the gradients across all.
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.devices = self.mesh.size
        if config.batch_size % self.devices:
            raise ValueError(
                f"--batch-size {config.batch_size} must be a multiple of the {self.devices} "
                "devices the batch is split over"
            )
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        model = CNN(image_shape, num_classes, rngs=nnx.Rngs(config.seed))
        self.graphdef, params = nnx.split(model, nnx.Param)
        if tx is None:
            tx = make_optimizer(config.optimizer, config.learning_rate)
            if config.state in ("packed", "packed-8bit"):
                tx = jadam.packed(tx)
            if config.state in ("8bit", "packed-8bit"):
                tx = jadam.quantized(tx)
        self.tx = tx
        self.params = jax.tree.map(lambda x: self.place(x, self.replicated), params)
        # Inside jit: with several processes, every array lives on devices of all of them.
        self.opt_state = jax.jit(self.tx.init, out_shardings=self.replicated)(self.params)
        self._train = jax.jit(
            functools.partial(train_step, self.graphdef, self.tx),
            donate_argnums=(0, 1), out_shardings=self.replicated,
        )
        self._eval = jax.jit(functools.partial(eval_step, self.graphdef),
                             out_shardings=self.replicated)

    @staticmethod
    def place(x: Any, sharding: NamedSharding) -> jax.Array:
        """A global array from a host array that every process holds: each process puts only
        the slices its own devices need (all of it, for a replicated sharding)."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def shard(self, *arrays: np.ndarray) -> list[jax.Array]:
        return [self.place(a, self.batch_sharding) for a in arrays]

    def compile(self, image_shape: tuple[int, ...]) -> float:
        """Compiles the training step ahead of the first batch; returns the seconds it took."""
        start = time.perf_counter()
        b = self.config.batch_size
        images = jax.ShapeDtypeStruct((b, *image_shape), jnp.float32, sharding=self.batch_sharding)
        labels = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=self.batch_sharding)
        self._train = self._train.lower(self.params, self.opt_state, images, labels).compile()
        return time.perf_counter() - start

    def step(self, images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
        images_, labels_ = self.shard(images, labels)
        self.params, self.opt_state, loss, accuracy = self._train(
            self.params, self.opt_state, images_, labels_
        )
        return loss, accuracy

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Mean loss and accuracy over a whole split, in batches of the training batch size."""
        b = self.config.batch_size
        total_loss, total_correct = 0.0, 0.0
        for start in range(0, len(labels), b):
            x, y = images[start:start + b], labels[start:start + b]
            weights = np.ones(len(y), np.float32)
            if len(y) < b:  # pad the last batch to the compiled shape
                pad = b - len(y)
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros(pad, y.dtype)])
                weights = np.concatenate([weights, np.zeros(pad, np.float32)])
            loss, correct = self._eval(self.params, *self.shard(x, y, weights))
            total_loss += float(loss)
            total_correct += float(correct)
        return total_loss / len(labels), total_correct / len(labels)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """The indices of each batch of one epoch: a permutation that depends only on the seed and
    the epoch (so a resumed run sees the same batches), without the last partial batch."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def make_curves_fn(
    dataset: datasets.Dataset,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    train_size: int | None = None,
    on_epoch: Any = None,
) -> Any:
    """A pure training function for ``jadam.tune.compare``: ``train(tx, seed)`` trains this
    CNN from scratch with the optax transformation ``tx``, entirely inside ``lax.scan``, and
    returns its curves: ``{"loss": per step, "test_loss": per epoch, "test_accuracy": per
    epoch}``. The seed sets the initialisation and the order of the batches.

    The data are closed over (embedded in the compiled program): right for the 8x8 digits,
    heavy for 60,000 images. ``on_epoch``, if given, is called (through
    ``jax.debug.callback``) after every epoch of every run: a progress bar's hook.
    """
    x_train = jnp.asarray(dataset.train_images[:train_size])
    y_train = jnp.asarray(dataset.train_labels[:train_size])
    x_test, y_test = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)
    n = len(y_train)
    steps = n // batch_size
    if steps < 1:
        raise ValueError(f"{n} training images is less than one batch of {batch_size}")

    def train(tx: optax.GradientTransformation, seed: jax.Array) -> dict[str, jax.Array]:
        key = jax.random.key(seed)
        model = CNN(dataset.image_shape, dataset.num_classes,
                    rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
        graphdef, params = nnx.split(model, nnx.Param)

        def step(carry: Any, idx: jax.Array) -> tuple[Any, jax.Array]:
            params, opt_state = carry
            params, opt_state, loss, _ = train_step(graphdef, tx, params, opt_state,
                                                    x_train[idx], y_train[idx])
            return (params, opt_state), loss

        def epoch(carry: Any, e: jax.Array) -> tuple[Any, tuple[jax.Array, ...]]:
            order = jax.random.permutation(jax.random.fold_in(key, e + 1), n)
            batches = order[:steps * batch_size].reshape(steps, batch_size)
            carry, losses = jax.lax.scan(step, carry, batches)
            logits = nnx.merge(graphdef, carry[0])(x_test)
            test_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_test).mean()
            accuracy = jnp.mean(jnp.argmax(logits, -1) == y_test)
            if on_epoch is not None:
                jax.debug.callback(lambda _: on_epoch(), e)
            return carry, (losses, test_loss, accuracy)

        _, (losses, test_loss, accuracy) = jax.lax.scan(
            epoch, (params, tx.init(params)), jnp.arange(epochs))
        return {"loss": losses.reshape(-1), "test_loss": test_loss, "test_accuracy": accuracy}

    return train


def make_train_fn(dataset: datasets.Dataset, *, optimizer: str = "adam", epochs: int = 5,
                  batch_size: int = 64, train_size: int | None = None, on_epoch: Any = None,
                  **fixed: Any) -> Any:
    """A pure training function for ``jadam.tune.sweep``: ``train(hyperparameters, seed)``
    builds ``jadam.optimizers[optimizer]`` from the (traced) hyperparameters and ``fixed``
    ones and trains as :func:`make_curves_fn` does."""
    curves = make_curves_fn(dataset, epochs=epochs, batch_size=batch_size,
                            train_size=train_size, on_epoch=on_epoch)
    make = jadam.optimizers[optimizer].make

    def train(hp: dict[str, jax.Array], seed: jax.Array) -> dict[str, jax.Array]:
        return curves(make(**fixed, **hp), seed)

    return train


class Checkpoints:
    """Orbax checkpoints of parameters, optimizer state and history, one per epoch. Orbax
    writes each into a temporary directory and renames it when complete, so a run killed
    mid-write leaves the previous checkpoint as the latest."""

    def __init__(self, directory: str) -> None:
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )

    def save(self, epoch: int, trainer: Trainer, history: list[dict[str, float]]) -> None:
        state = {"params": trainer.params, "opt_state": trainer.opt_state}
        self.manager.save(epoch, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardSave(state),
            history=self.ocp.args.JsonSave({"history": history}),
        ))
        self.manager.wait_until_finished()

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, epoch: int, trainer: Trainer) -> list[dict[str, float]]:
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            {"params": trainer.params, "opt_state": trainer.opt_state},
        )
        restored = self.manager.restore(epoch, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardRestore(target),
            history=self.ocp.args.JsonRestore(),
        ))
        trainer.params = restored.state["params"]
        trainer.opt_state = restored.state["opt_state"]
        return list(restored.history["history"])


def train_and_evaluate(config: Config, dataset: datasets.Dataset,
                       log: Any = print) -> dict[str, Any]:
    """Trains and evaluates; returns the summary and per-epoch history."""
    epochs = config.epochs or DEFAULT_EPOCHS.get(dataset.name, 3)
    train_x, train_y = dataset.train_images, dataset.train_labels
    if config.train_size is not None:
        train_x, train_y = train_x[:config.train_size], train_y[:config.train_size]
    if len(train_y) < config.batch_size:
        raise ValueError(f"{len(train_y)} training images is less than one batch")
    trainer = Trainer(config, dataset.image_shape, dataset.num_classes)
    checkpoints = Checkpoints(config.checkpoint_dir) if config.checkpoint_dir else None
    history: list[dict[str, float]] = []
    first = 1
    if config.resume:
        if checkpoints is None:
            raise ValueError("--resume needs --checkpoint-dir")
        latest = checkpoints.latest()
        if latest is not None:
            history = checkpoints.restore(latest, trainer)
            first = latest + 1
            log(f"resumed from the checkpoint of epoch {latest} in {config.checkpoint_dir}")
    compile_seconds = trainer.compile(dataset.image_shape)
    log(f"{config.optimizer} on {dataset.name} ({len(train_y)} training images), "
        f"{trainer.devices} device(s) [{jax.default_backend()}], "
        f"step compiled in {compile_seconds:.1f} s")

    steps = len(train_y) // config.batch_size
    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        losses, accuracies = [], []
        bar = _progress(steps, f"epoch {epoch}/{epochs}", config.progress)
        for i, idx in enumerate(batches(len(train_y), config.batch_size, config.seed, epoch)):
            loss, accuracy = trainer.step(train_x[idx], train_y[idx])
            losses.append(loss)
            accuracies.append(accuracy)
            if config.log_every and (i + 1) % config.log_every == 0:
                log(f"epoch {epoch} step {i + 1}/{steps}: loss {float(loss):.4f}")
            if bar is not None and (i % 10 == 9 or i == steps - 1):
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{float(loss):.4f}",
                                img_s=f"{(i + 1) * config.batch_size / elapsed:,.0f}")
                bar.update(i + 1 - bar.n)
        jax.block_until_ready(trainer.params)
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        test_loss, test_accuracy = trainer.evaluate(dataset.test_images, dataset.test_labels)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(jax.device_get(losses))),
            "train_accuracy": float(np.mean(jax.device_get(accuracies))),
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "images_per_second": steps * config.batch_size / seconds,
            "seconds": seconds,
        }
        history.append(record)
        log(f"epoch {epoch}/{epochs}: train loss {record['train_loss']:.4f}, test loss "
            f"{test_loss:.4f}, test accuracy {100 * test_accuracy:.2f}%, "
            f"{record['images_per_second']:,.0f} images/s")
        if config.log and jax.process_index() == 0:
            with open(config.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        if checkpoints is not None:
            checkpoints.save(epoch, trainer, history)
            log(f"saved the checkpoint of epoch {epoch} in {config.checkpoint_dir}")

    if config.save_params:
        # Replicated: every device holds all of it; take this process's first copy.
        flat = {jax.tree_util.keystr(path): np.asarray(x.addressable_data(0))
                for path, x in jax.tree_util.tree_leaves_with_path(trainer.params)}
        target = config.save_params
        if jax.process_count() > 1:  # one file per process, to compare them
            stem, suffix = os.path.splitext(target)
            target = f"{stem}.process{jax.process_index()}{suffix}"
        # Written whole or not at all: into a temporary file, then renamed over the target.
        partial = f"{target}.partial"
        with open(partial, "wb") as f:
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    if config.plot and history and jax.process_index() == 0:
        plot(history, config.plot, title=f"{config.optimizer} on {dataset.name}")
    timed = [h for h in history if h["epoch"] >= first]
    return {
        "dataset": dataset.name,
        "optimizer": config.optimizer,
        "epochs": epochs,
        "devices": trainer.devices,
        "test_accuracy": history[-1]["test_accuracy"] if history else math.nan,
        "images_per_second": (sum(h["images_per_second"] * h["seconds"] for h in timed)
                              / max(sum(h["seconds"] for h in timed), 1e-9)) if timed else 0.0,
        "train_seconds": sum(h["seconds"] for h in timed),
        "compile_seconds": compile_seconds,
        "history": history,
        "params": trainer.params,
    }


def _progress(total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False, file=sys.stderr)


def plot(history: list[dict[str, float]], path: str, title: str) -> None:
    """A PNG of the loss and accuracy curves, train and test, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="Train a small CNN on handwritten digits with a jadam optimizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--optimizer", default="adam", choices=sorted(jadam.optimizers),
                        help="any optimizer in jadam.optimizers")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="the optimizer's learning rate (default: its own default)")
    parser.add_argument("--state", default="plain",
                        choices=["plain", "packed", "8bit", "packed-8bit"],
                        help="how the optimizer keeps its state: one array per parameter, "
                             "small ones packed (jadam.packed), 8-bit moments "
                             "(jadam.quantized), or both")
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
                        default=_env_int("JAX_NUM_PROCESSES"),
                        help="several processes: how many (default $JAX_NUM_PROCESSES)")
    parser.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"),
                        help="several processes: this one's index, 0 to --num-processes - 1 "
                             "(default $JAX_PROCESS_ID)")
    args = parser.parse_args(argv)
    return Config(**vars(args))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def start_processes(config: Config) -> None:
    """Joins the other processes of a multi-process run (``jax.distributed.initialize``),
    before anything touches a device. On CPUs their collectives go through gloo."""
    given = [config.coordinator, config.num_processes, config.process_id]
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise ValueError("several processes need --coordinator, --num-processes and "
                         "--process-id (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and "
                         "$JAX_PROCESS_ID) together")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(config.coordinator, num_processes=config.num_processes,
                               process_id=config.process_id)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    start_processes(config)
    dataset, why = datasets.load(
        config.dataset, data_dir=pathlib.Path(config.data_dir) if config.data_dir else None
    )
    print(f"dataset: {dataset.name} from {dataset.source} ({why})", flush=True)
    start = time.perf_counter()
    summary = train_and_evaluate(config, dataset, log=functools.partial(print, flush=True))
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
