"""The MNIST example's training library: config, model, training, evaluation.

``train_step`` is one step (forward pass, loss, gradients, ``tx.update``, apply), written once:
the :class:`Trainer` jits it with parameters and state donated and calls it per batch
(data-parallel over every device of every process), and ``train_steps`` scans it over batches
inside one compiled program for :func:`make_curves_fn`, which the tuning tools vmap over
optimizers, seeds and hyperparameters (``train_steps`` says why the Trainer does not scan).
:func:`train_and_evaluate` is a whole run: epochs, evaluation, logs, checkpoints
(``checkpoints.py``) and plots (``plots.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jadam
from examples import data as datasets
from examples.mnist import checkpoints as ckpt
from examples.mnist import plots
from jadam import tune

# Epochs when --epochs is not given: the 8x8 digits are 1,437 images, the others 60,000.
DEFAULT_EPOCHS = {"digits": 40, "mnist": 3, "fashion_mnist": 3}


@dataclasses.dataclass
class Config:
    """Everything a run depends on; the command line sets it (see ``--help``)."""

    optimizer: str = "adam"
    learning_rate: float | None = None
    state: str = "plain"
    param_dtype: str = "float32"
    rounding: str = "nearest"
    packed: bool = False
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
                 rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        height, width, channels = image_shape
        if height % 4 or width % 4:
            raise ValueError(f"image height and width must be multiples of 4, got {image_shape}")
        # Parameters and arithmetic in ``dtype`` (bfloat16: a model trained in half the bytes).
        kw = {"param_dtype": dtype, "dtype": dtype, "rngs": rngs}
        self.conv1 = nnx.Conv(channels, 32, (3, 3), **kw)
        self.conv2 = nnx.Conv(32, 64, (3, 3), **kw)
        self.dense1 = nnx.Linear((height // 4) * (width // 4) * 64, 256, **kw)
        self.dense2 = nnx.Linear(256, num_classes, **kw)

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


def make_optimizer(name: str, learning_rate: float | None, *, state: str = "plain",
                   param_dtype: str = "float32", rounding: str = "nearest"
                   ) -> optax.GradientTransformation:
    """Any optimizer of ``jadam.optimizers`` by name, at its default learning rate unless one
    is given, with its state kept as ``state`` says (``plain``, ``packed``, ``8bit``, ``4bit``,
    ``packed-8bit``) and, for bfloat16 or float16 parameters, their sums rounded to nearest,
    Kahan-compensated or stochastically rounded (``rounding``). With such parameters the
    moments are float32 where the optimizer lets them be (``mu_dtype``, ``nu_dtype``): only
    the parameters, and the state formats asked for, are narrow."""
    info = jadam.optimizers[name]
    kwargs: dict[str, Any] = {} if learning_rate is None else {"learning_rate": learning_rate}
    if param_dtype != "float32":
        kwargs.update({k: jnp.float32 for k in ("mu_dtype", "nu_dtype") if k in info.defaults})
    tx = info.make(**kwargs)
    if state in ("packed", "packed-8bit"):
        tx = jadam.packed(tx)
    if state in ("8bit", "4bit", "packed-8bit"):
        tx = jadam.quantized(tx, bits=4 if state == "4bit" else 8)
    if rounding == "kahan":
        tx = jadam.kahan_summation(tx)
    elif rounding == "stochastic":
        tx = jadam.stochastic_rounding(tx, seed=0)
    elif rounding != "nearest":
        raise ValueError(f"rounding must be nearest, kahan or stochastic, got {rounding!r}")
    return tx


def loss_and_logits(graphdef: Any, params: Any, images: jax.Array,
                    labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model_loss_and_logits(nnx.merge(graphdef, params), images, labels)


def model_loss_and_logits(model: nnx.Module, images: jax.Array,
                          labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean cross-entropy of a batch and the (float32) logits."""
    logits = model(images).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def train_step(graphdef: Any, tx: optax.GradientTransformation, params: Any, opt_state: Any,
               images: jax.Array, labels: jax.Array) -> tuple[Any, Any, jax.Array, jax.Array]:
    """One step: loss, gradients, ``tx.update``, apply."""
    grad_fn = jax.value_and_grad(functools.partial(loss_and_logits, graphdef), has_aux=True)
    (loss, logits), grads = grad_fn(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return params, opt_state, loss, accuracy


def loss_and_accuracy(model: nnx.Module, images: jax.Array,
                      labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The loss and, as its aux, the batch's accuracy: :func:`train_step`'s, for
    ``jadam.PackedModel.step`` (``--packed``), and the test metrics of the tuning functions."""
    loss, logits = model_loss_and_logits(model, images, labels)
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def train_steps(graphdef: Any, tx: optax.GradientTransformation, params: Any, opt_state: Any,
                batches: Any, fetch: Callable[[Any], tuple[jax.Array, jax.Array]] | None = None,
                ) -> tuple[Any, Any, jax.Array, jax.Array]:
    """:func:`train_step` on each of ``batches`` in turn, inside one compiled program
    (``lax.scan``): the loop of :func:`make_curves_fn`, which the tuning tools vmap.

    ``batches`` is stacked over the steps: ``(images, labels)`` of shapes ``(steps, batch,
    ...)``, or anything ``fetch`` turns one step of into an ``(images, labels)`` batch (the
    curves function passes indices into data it holds). Returns the new parameters and state
    and each step's loss and accuracy.

    The :class:`Trainer` does not use it: on XLA:CPU this CNN's step inside a compiled loop
    ran 7x (8x8 images) to 20x (28x28) slower than the same step jitted alone (2 cores, batch
    64, 10 steps: 19 against 2.6 ms, 572 against 28 ms), and a loop of one step as slowly;
    unrolled, 10 steps were as fast but compiled 5x longer. So the Trainer calls the jitted
    :func:`train_step` once per batch, from Python, which also feeds its progress bar."""

    def step(carry: Any, batch: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        images, labels = batch if fetch is None else fetch(batch)
        params, opt_state, loss, accuracy = train_step(graphdef, tx, *carry, images, labels)
        return (params, opt_state), (loss, accuracy)

    (params, opt_state), (losses, accuracies) = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, losses, accuracies


def eval_step(graphdef: Any, params: Any, images: jax.Array, labels: jax.Array,
              weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed loss and number correct over a (padded) batch; padding has weight 0."""
    logits = nnx.merge(graphdef, params)(images).astype(jnp.float32)
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
        model = CNN(image_shape, num_classes, rngs=nnx.Rngs(config.seed),
                    dtype=jnp.dtype(config.param_dtype))
        self.graphdef, params = nnx.split(model, nnx.Param)
        if tx is None:
            tx = make_optimizer(config.optimizer, config.learning_rate, state=config.state,
                                param_dtype=config.param_dtype, rounding=config.rounding)
        self.tx = tx
        self.packed_model: jadam.PackedModel | None = None
        if config.packed:
            # The parameters in a few flat buffers, the step differentiating them
            # (jadam.PackedModel); params and opt_state below read and write through it.
            self.packed_model = jadam.PackedModel(model, tx)
            pm = self.packed_model
            pm.state = jax.tree.map(lambda x: self.place(x, self.replicated), pm.state)
            pm.index = jax.tree.map(lambda x: self.place(x, self.replicated), pm.index)
            self._train = None
        else:
            self._params = jax.tree.map(lambda x: self.place(x, self.replicated), params)
            # Inside jit: with several processes, every array lives on devices of all of them.
            self._opt_state = jax.jit(self.tx.init, out_shardings=self.replicated)(self._params)
            self._train = jax.jit(
                functools.partial(train_step, self.graphdef, self.tx),
                donate_argnums=(0, 1), out_shardings=self.replicated,
            )
        self._eval = jax.jit(functools.partial(eval_step, self.graphdef),
                             out_shardings=self.replicated)

    @property
    def params(self) -> Any:
        """The parameters, as ``nnx.split(model, nnx.Param)`` gives them (unpacked)."""
        return self._params if self.packed_model is None else self.packed_model.params

    @params.setter
    def params(self, value: Any) -> None:
        if self.packed_model is None:
            self._params = value
        else:
            self.packed_model.params = value

    @property
    def opt_state(self) -> Any:
        """The optimizer's state (over the packed buffers with ``--packed``)."""
        return self._opt_state if self.packed_model is None else self.packed_model.opt_state

    @opt_state.setter
    def opt_state(self, value: Any) -> None:
        if self.packed_model is None:
            self._opt_state = value
        else:
            self.packed_model.opt_state = value

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
        if self.packed_model is not None:
            self.packed_model.compile(loss_and_accuracy, images, labels, has_aux=True)
        else:
            self._train = self._train.lower(self.params, self.opt_state, images,
                                            labels).compile()
        return time.perf_counter() - start

    def step(self, images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
        images_, labels_ = self.shard(images, labels)
        if self.packed_model is not None:
            loss, accuracy = self.packed_model.step(loss_and_accuracy, images_, labels_,
                                                    has_aux=True)
            return loss, accuracy
        self._params, self._opt_state, loss, accuracy = self._train(
            self._params, self._opt_state, images_, labels_
        )
        return loss, accuracy

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Mean loss and accuracy over a whole split, in batches of the training batch size."""
        b = self.config.batch_size
        total_loss, total_correct = 0.0, 0.0
        params = self.params
        for start in range(0, len(labels), b):
            x, y = images[start:start + b], labels[start:start + b]
            weights = np.ones(len(y), np.float32)
            if len(y) < b:  # pad the last batch to the compiled shape
                pad = b - len(y)
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros(pad, y.dtype)])
                weights = np.concatenate([weights, np.zeros(pad, np.float32)])
            loss, correct = self._eval(params, *self.shard(x, y, weights))
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
    CNN from scratch with the optax transformation ``tx``, entirely inside ``lax.scan`` (an
    epoch is :func:`train_steps` over its batches), and
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

        def fetch(idx: jax.Array) -> tuple[jax.Array, jax.Array]:
            return x_train[idx], y_train[idx]

        def epoch(carry: Any, e: jax.Array) -> tuple[Any, tuple[jax.Array, ...]]:
            order = jax.random.permutation(jax.random.fold_in(key, e + 1), n)
            batches = order[:steps * batch_size].reshape(steps, batch_size)
            params, opt_state, losses, _ = train_steps(graphdef, tx, *carry, batches, fetch)
            carry = (params, opt_state)
            test_loss, accuracy = loss_and_accuracy(nnx.merge(graphdef, params), x_test,
                                                    y_test)
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


def make_trainable(dataset: datasets.Dataset, *, optimizer: str | None = "adam",
                   batch_size: int = 64, train_size: int | None = None,
                   **fixed: Any) -> tune.Trainable:
    """This CNN as a ``jadam.tune.Trainable``: ``start(config, seed)`` initialises it,
    ``advance(config, carry, steps)`` trains ``steps`` more steps (the batches a function of
    the seed and the step count in the carry: epoch ``t // steps_per_epoch`` is a permutation
    of the training set, so a paused run goes on with the batches it would have had) and
    returns ``{"loss": per step}``, and ``evaluate(config, carry)`` returns ``{"test_loss",
    "test_accuracy"}``.

    The config is a dict of traced hyperparameters, from which ``jadam.optimizers[optimizer]``
    is built with ``fixed`` (for ``tune.successive_halving`` and ``tune.sweep``), or, with
    ``optimizer=None``, the optax transformation itself (for ``tune.compare``). One step
    (``steps=1``) is traced without a loop around it: ``tune.compare``'s ``steps_per_call=1``
    then runs this CNN at the speed of the example's own jitted step on CPU (see
    :func:`train_steps`)."""
    x_train = jnp.asarray(dataset.train_images[:train_size])
    y_train = jnp.asarray(dataset.train_labels[:train_size])
    x_test, y_test = jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)
    n = len(y_train)
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"{n} training images is less than one batch of {batch_size}")
    if optimizer is None and fixed:
        raise ValueError(f"make_trainable: {sorted(fixed)} need an optimizer name; with "
                         "optimizer=None the config is the transformation")
    make = None if optimizer is None else jadam.optimizers[optimizer].make
    graphdef = nnx.graphdef(CNN(dataset.image_shape, dataset.num_classes, rngs=nnx.Rngs(0)))

    def transformation(config: Any) -> optax.GradientTransformation:
        return config if make is None else make(**fixed, **config)

    def start(config: Any, seed: jax.Array) -> dict[str, Any]:
        key = jax.random.key(seed)
        model = CNN(dataset.image_shape, dataset.num_classes,
                    rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        return {"params": params, "opt_state": transformation(config).init(params),
                "t": jnp.zeros((), jnp.int32), "key": jax.random.key_data(key),
                "order": epoch_order(key, jnp.zeros((), jnp.int32))}

    def epoch_order(key: jax.Array, epoch: jax.Array) -> jax.Array:
        return jax.random.permutation(jax.random.fold_in(key, epoch + 1), n)

    def advance(config: Any, carry: dict[str, Any],
                steps: int) -> tuple[dict[str, Any], dict[str, jax.Array]]:
        tx = transformation(config)
        key = jax.random.wrap_key_data(carry["key"])

        def step(c: dict[str, Any], _: Any) -> tuple[dict[str, Any], jax.Array]:
            epoch, at = c["t"] // per_epoch, c["t"] % per_epoch
            # The epoch's order is kept in the carry and drawn again only when an epoch
            # starts: drawing a permutation of 60,000 took 34 ms, more than the step's 30.
            order = jax.lax.cond(at == 0, lambda: epoch_order(key, epoch), lambda: c["order"])
            idx = jax.lax.dynamic_slice(order, (at * batch_size,), (batch_size,))
            params, opt_state, loss, _ = train_step(graphdef, tx, c["params"], c["opt_state"],
                                                    x_train[idx], y_train[idx])
            return {**c, "params": params, "opt_state": opt_state, "t": c["t"] + 1,
                    "order": order}, loss

        if steps == 1:
            carry, loss = step(carry, None)
            return carry, {"loss": loss[None]}
        carry, losses = jax.lax.scan(step, carry, length=steps)
        return carry, {"loss": losses}

    def evaluate(config: Any, carry: dict[str, Any]) -> dict[str, jax.Array]:
        test_loss, accuracy = loss_and_accuracy(nnx.merge(graphdef, carry["params"]), x_test,
                                                y_test)
        return {"test_loss": test_loss, "test_accuracy": accuracy}

    return tune.Trainable(start, advance, evaluate)


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
    checkpoints = ckpt.Checkpoints(config.checkpoint_dir) if config.checkpoint_dir else None
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
    steps = len(train_y) // config.batch_size
    compile_seconds = trainer.compile(dataset.image_shape)
    log(f"{config.optimizer} on {dataset.name} ({len(train_y)} training images), "
        f"{trainer.devices} device(s) [{jax.default_backend()}], "
        f"step compiled in {compile_seconds:.1f} s")

    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        losses, accuracies = [], []
        bar = plots.progress(steps, f"epoch {epoch}/{epochs}", config.progress)
        for i, idx in enumerate(batches(len(train_y), config.batch_size, config.seed, epoch)):
            loss, accuracy = trainer.step(train_x[idx], train_y[idx])
            losses.append(loss)
            accuracies.append(accuracy)
            if config.log_every and (i + 1) % config.log_every == 0:
                log(f"epoch {epoch} step {i + 1}/{steps}: loss {float(loss):.4f}")
            if bar is not None and (i % 10 == 9 or i == steps - 1):
                last = float(loss)  # waits for the step to finish
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{last:.4f}",
                                img_s=f"{(i + 1) * config.batch_size / elapsed:,.0f}")
                bar.update(i + 1 - bar.n)
        jax.block_until_ready(trainer.opt_state)  # (the same step made the parameters)
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
        ckpt.save_params(trainer.params, config.save_params)
    if config.plot and history and jax.process_index() == 0:
        plots.curves(history, config.plot, title=f"{config.optimizer} on {dataset.name}")
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


