"""A small character-level language model on real text, trained with AdamW in each
combination of parameter dtype, rounding and state format (the quality run of issue 17).

The text is the Python standard library's own top-level source files (4.7 MB in Python
3.11), read as bytes: every tenth file (sorted by name) is held out for validation. The model
is a decoder-only transformer (pre-LayerNorm, learned positions, causal attention), by
default 4 layers of width 128 with 4 heads, 0.87M parameters, on windows of 128 bytes (a
model of a few million parameters, width 256, took 2 s a step on this 2-core CPU: too slow
for ten combinations of a few thousand steps each).
AdamW with a warmup and a cosine decay to 1e-5 (the end of a schedule is where bfloat16
rounding stalls). Each run appends its validation curve to ``bench/results/charlm.jsonl``
(a run already there is not repeated); ``python -m bench.charlm --plot`` draws every curve in
one figure and prints the final losses.

Run: ``python -m bench.charlm --steps 2000`` (on this 2-core CPU, 5-15 minutes per
combination). The combinations run in the order of ``ORDER``, most telling first: float32,
plain bfloat16, then Kahan with 8-bit moments (the issue's target).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sysconfig
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench.lowprec import COMBOS, _cpu
from examples.mnist.train import make_optimizer

RESULTS = pathlib.Path(__file__).parent / "results"
ORDER = [COMBOS[i] for i in (0, 1, 5, 4, 7, 6, 9, 8, 2, 3)]


def text() -> tuple[np.ndarray, np.ndarray]:
    """The training and validation bytes: the standard library's top-level ``.py`` files."""
    files = sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train = [f.read_bytes() for i, f in enumerate(files) if i % 10]
    valid = [f.read_bytes() for i, f in enumerate(files) if not i % 10]
    return (np.frombuffer(b"".join(train), np.uint8), np.frombuffer(b"".join(valid), np.uint8))


class Block(nnx.Module):
    def __init__(self, width: int, heads: int, *, dtype: Any, rngs: nnx.Rngs) -> None:
        kw = {"param_dtype": dtype, "dtype": dtype, "rngs": rngs}
        self.norm1 = nnx.LayerNorm(width, **kw)
        self.attention = nnx.MultiHeadAttention(heads, width, decode=False, **kw)
        self.norm2 = nnx.LayerNorm(width, **kw)
        self.up = nnx.Linear(width, 4 * width, **kw)
        self.down = nnx.Linear(4 * width, width, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x), mask=mask)
        return x + self.down(nnx.gelu(self.up(self.norm2(x))))


class CharLM(nnx.Module):
    def __init__(self, *, layers: int, width: int, heads: int, length: int, dtype: Any,
                 rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(256, width, param_dtype=dtype, dtype=dtype, rngs=rngs)
        self.position = nnx.Param(
            jax.random.normal(rngs.params(), (length, width), dtype) * 0.02)
        self.blocks = nnx.List([Block(width, heads, dtype=dtype, rngs=rngs)
                                for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, param_dtype=dtype, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(width, 256, param_dtype=dtype, dtype=dtype, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        n = tokens.shape[1]
        x = self.embed(tokens) + self.position[...][:n]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.out(self.norm(x)).astype(jnp.float32)


def loss_fn(graphdef: Any, params: Any, window: jax.Array) -> jax.Array:
    logits = nnx.merge(graphdef, params)(window[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, window[:, 1:]).mean()


def run(param_dtype: str, rounding: str, state: str, *, seed: int, steps: int, batch: int,
        length: int, layers: int, width: int, eval_every: int) -> dict[str, Any]:
    train_text, valid_text = text()
    dtype = jnp.dtype(param_dtype)
    model = CharLM(layers=layers, width=width, heads=4, length=length, dtype=dtype,
                   rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.as_pure(params)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, steps // 20, steps, 1e-5)
    tx = make_optimizer("adamw", schedule, state=state, param_dtype=param_dtype,
                        rounding=rounding)
    opt_state = tx.init(params)

    def step(params: Any, opt_state: Any, window: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, params, window)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    valid_loss = jax.jit(lambda p, w: loss_fn(graphdef, p, w))
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(1234)
    starts = fixed.integers(0, len(valid_text) - length - 1, 256)
    valid = np.stack([valid_text[s:s + length + 1] for s in starts]).astype(np.int32)
    curve, start = [], time.time()
    for t in range(1, steps + 1):
        s = rng.integers(0, len(train_text) - length - 1, batch)
        window = np.stack([train_text[i:i + length + 1] for i in s]).astype(np.int32)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(window))
        if t % eval_every == 0 or t == steps:
            v = float(np.mean([valid_loss(params, jnp.asarray(valid[i:i + 64]))
                               for i in range(0, len(valid), 64)]))
            curve.append([t, float(loss), v])
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return {"param_dtype": param_dtype, "rounding": rounding, "state": state, "seed": seed,
            "steps": steps, "parameters": n, "layers": layers, "width": width, "batch": batch,
            "length": length, "curve": curve, "valid_loss": curve[-1][2],
            "seconds": time.time() - start, "date": time.strftime("%Y-%m-%d"), "cpu": _cpu()}


def plot(runs: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        c = np.asarray(r["curve"])
        ax.plot(c[:, 0], c[:, 2], label=f"{r['param_dtype']} {r['rounding']} {r['state']}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per byte)")
    ax.set_title("Character LM on the Python standard library, AdamW")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.charlm")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "charlm.jsonl"))
    parser.add_argument("--plot", action="store_true", help="only plot and tabulate")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    runs = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    if not args.plot:
        for combo in ORDER:
            if any((r["param_dtype"], r["rounding"], r["state"], r["seed"], r["steps"])
                   == (*combo, args.seed, args.steps) for r in runs):
                continue
            r = run(*combo, seed=args.seed, steps=args.steps, batch=args.batch,
                    length=args.length, layers=args.layers, width=args.width,
                    eval_every=args.eval_every)
            runs.append(r)
            with out.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{' '.join(combo)}: validation loss {r['valid_loss']:.4f} "
                  f"({r['seconds']:.0f} s)", flush=True)
    runs = [r for r in runs if r["steps"] == args.steps and r["seed"] == args.seed]
    plot(runs, out.with_suffix(".png"))
    base = [r["valid_loss"] for r in runs if r["param_dtype"] == "float32"]
    print("| parameters | rounding | moments | validation loss | vs float32 |")
    print("|---|---|---|---|---|")
    for r in runs:
        rel = f"{100 * (r['valid_loss'] / base[0] - 1):+.2f}%" if base else ""
        print(f"| {r['param_dtype']} | {r['rounding']} | {r['state']} | "
              f"{r['valid_loss']:.4f} | {rel} |")


if __name__ == "__main__":
    main()
