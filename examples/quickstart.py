"""A short Adam run on a toy model: a small MLP learns y = sin(3x) from noisy samples.

This is what `make demo` runs until the MNIST example lands. It shows the whole pattern: the
optimizer is an optax GradientTransformation (here jadam.adamw after optax's gradient clipping),
and one jitted, donated function computes the loss, its gradients, the update and the new
parameters.

    python examples/quickstart.py --steps 2000 --learning-rate 3e-3
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import optax

import jadam


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros((n,))}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(mlp(params, x) - y))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Adam's rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)

    key_data, key_noise, key_init = jax.random.split(jax.random.key(args.seed), 3)
    x = jax.random.uniform(key_data, (256, 1), minval=-1.0, maxval=1.0)
    y = jnp.sin(3.0 * x) + 0.05 * jax.random.normal(key_noise, x.shape)
    params = init_mlp(key_init, (1, 32, 32, 1))

    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        jadam.adamw(args.learning_rate, weight_decay=1e-4),
    )
    state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    start = time.perf_counter()
    first = None
    for step in range(1, args.steps + 1):
        params, state, loss = train_step(params, state, x, y)
        if first is None:
            first = float(loss)
        if step == 1 or step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {float(loss):.5f}")
    final = float(loss_fn(params, x, y))
    seconds = time.perf_counter() - start
    print(f"loss {first:.4f} -> {final:.4f} in {args.steps} steps, {seconds:.1f} s "
          f"(noise floor {0.05**2:.4f})")
    return final


if __name__ == "__main__":
    main()
