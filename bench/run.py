"""jadam against optax.adam and torch.optim.Adam, on update-only and whole-training-step cases.

    python -m bench                      # everything, about 20 minutes on 2 cores
    python -m bench --cases mlp cnn      # cases whose name contains one of the words
    python -m bench --fuse --cases 50M --contenders optax one_pass fused   # only these
    python -m bench --list

All contenders of a case run in one process, in rounds: each round times a burst of steps of
every contender in turn, rotating who goes first, so noise on a shared machine hits them alike.
Per contender: median and minimum ms per step over the rounds (after warm-up), compile time,
optimizer-state bytes per parameter, the compiled step's temporary memory (XLA's own count of
the scratch buffers it allocates per call, beyond inputs and outputs), and ratios of the median
to optax.adam's and to torch fused's.

Update-only cases time ``params, state = apply(update(grads, state, params))`` in one jitted
function with parameters and state donated (for torch, ``opt.step()`` with the gradients in
place). Whole-step cases time loss, gradients, update and apply in one donated jit.

Contenders (where they apply):
  optax.adam                     optax 0.2's Adam, per leaf, donated.
  jadam.adam                     the plain (per-leaf) layout.
  jadam.packed(adam)             optimizer state packed (jadam.packed): small leaves updated
                                 as one buffer, gradients concatenated and updates sliced out.
  jadam.adam, packed params      the parameters packed too (jadam.pack / jadam.unpack in the
                                 model), so the update and apply are one loop over one buffer.
  jadam.quantized(adam)          8-bit block-wise moments (jadam.quantized), where a leaf
                                 has at least 4,096 elements.
  jadam.quantized(adam, bits=4)  the same with 4-bit moments.
  jadam.one_pass(adam)           the update from the old moments: on GPU and TPU, and on CPU
                                 with --fuse (XLA:CPU multi-output fusion for the whole
                                 process, every contender).
  torch Adam foreach / fused     torch.optim.Adam(foreach=True) and (fused=True).

Results: ``bench/results/run.json`` and the markdown table ``bench/results/run.md`` (quoted in
``bench/README.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jadam  # noqa: E402
from bench.mnist_cnn import machine_name  # noqa: E402

RESULTS = ROOT / "bench" / "results"


@dataclasses.dataclass
class Contender:
    """One way of running a case: ``step(burst)`` runs ``burst`` steps and returns seconds per
    step; the rest is measured once when it is built."""

    name: str
    step: Callable[[int], float]
    compile_s: float | None = None
    state_bytes: int | None = None
    temp_bytes: int | None = None


def named(name: str, build: Callable[[], Contender]) -> Callable[[], Contender]:
    """``build`` labelled with its contender's name, so a run can choose before building."""
    build.contender = name  # type: ignore[attr-defined]
    return build


@dataclasses.dataclass
class Case:
    name: str
    kind: str  # "update" or "step"
    build: Callable[[], tuple[int, list[Callable[[], Contender]]]]
    steps: int = 5


# ---------------------------------------------------------------------------------------------
# Parameter trees.


def _shapes_tree(shapes: list[tuple[int, ...]], seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {f"p{i:05d}": jnp.asarray(rng.standard_normal(s, np.float32) * 0.02)
            for i, s in enumerate(shapes)}


def _cycle(shapes: list[tuple[int, ...]], n: int) -> list[tuple[int, ...]]:
    return [shapes[i % len(shapes)] for i in range(n)]


def transformer_shapes(layers: int = 12, d: int = 512, vocab: int = 4096) -> list[tuple]:
    """A GPT-style tree: embedding, then per layer two layer norms (scale, bias) and q, k, v,
    out, two MLP matrices with biases; a final norm. 12 layers of width 512: 195 leaves, 39.9M
    parameters."""
    shapes: list[tuple] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d,)]
        shapes += [(d, d), (d,)] * 4
        shapes += [(d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [*shapes, (d,), (d,)]


def cnn_params(image: int = 28) -> Any:
    from flax import nnx

    from examples.mnist.train import CNN

    model = CNN((image, image, 1), 10, rngs=nnx.Rngs(0))
    return nnx.state(model, nnx.Param)


# ---------------------------------------------------------------------------------------------
# Contenders.


def _tree_bytes(tree: Any) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes"))


def _jax_contender(name: str, step_fn: Callable, state: tuple, extra: tuple) -> Contender:
    """``step_fn(*state, *extra) -> state``, jitted with ``state`` donated."""
    jitted = jax.jit(step_fn, donate_argnums=tuple(range(len(state))))
    start = time.perf_counter()
    compiled = jitted.lower(*state, *extra).compile()
    compile_s = time.perf_counter() - start
    try:
        temp = compiled.memory_analysis().temp_size_in_bytes
    except Exception:  # not every backend reports it
        temp = None
    holder = {"state": state}

    def run(burst: int) -> float:
        s = holder["state"]
        jax.block_until_ready(s)
        start = time.perf_counter()
        for _ in range(burst):
            s = compiled(*s, *extra)
        jax.block_until_ready(s)
        holder["state"] = s
        return (time.perf_counter() - start) / burst

    run(3)  # warm up: first calls fault in fresh pages
    return Contender(name, run, compile_s, None, temp)


def update_contenders(params: Any, grads: Any) -> list:
    """Builders for the update-only contenders on one tree."""
    n_leaves = len(jax.tree.leaves(params))

    def tx_contender(name: str, tx: Any, pack: bool = False) -> Callable[[], Contender]:
        def build() -> Contender:
            p, g = params, grads
            if pack:  # the update never unpacks (the model would), so no index is kept
                p, _ = jadam.pack(params)
                g, _ = jadam.pack(grads)
            p = jax.tree.map(jnp.copy, p)
            s = tx.init(p)

            def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
                u, s = tx.update(g, s, p)
                return optax.apply_updates(p, u), s

            c = _jax_contender(name, step, (p, s), (g,))
            c.state_bytes = _tree_bytes(s)
            return c
        return named(name, build)

    out = [tx_contender("optax.adam", optax.adam(1e-3)),
           tx_contender("jadam.adam", jadam.adam(1e-3))]
    if any(x.size >= jadam.quantize.MIN_SIZE for x in jax.tree.leaves(params)):
        out.append(tx_contender("jadam.quantized(adam)", jadam.quantized(jadam.adam(1e-3))))
        out.append(tx_contender("jadam.quantized(adam, bits=4)",
                                jadam.quantized(jadam.adam(1e-3), bits=4)))
    if _fuses():
        out.append(tx_contender("jadam.one_pass(adam)", jadam.one_pass(jadam.adam(1e-3))))
    if n_leaves > 1:
        out.append(tx_contender("jadam.packed(adam)", jadam.packed(jadam.adam(1e-3))))
        out.append(tx_contender("jadam.adam, packed params", jadam.adam(1e-3), pack=True))
    out += torch_contenders(params, grads)
    return out


def _fuses() -> bool:
    """Whether XLA fuses sibling loops here, so that ``jadam.one_pass`` is worth timing: on
    GPU and TPU by default, on CPU only with the flag that ``--fuse`` sets."""
    return (jax.default_backend() != "cpu"
            or "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", ""))


def torch_device() -> str:
    """Where torch runs beside JAX: on the GPU when JAX runs on one and torch sees it
    (torch's CUDA build), else on the CPU."""
    import torch
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_sync(device: str) -> None:
    """Waits for torch's queued work on ``device`` (its GPU calls return before they run)."""
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def torch_contenders(params: Any, grads: Any) -> list:
    try:
        import torch
    except ImportError:
        return []

    device = torch_device()

    def build(fused: bool) -> Contender:
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.from_numpy(np.array(x, np.float32)).to(device))
              for x in jax.tree.leaves(params)]
        for p, g in zip(ps, jax.tree.leaves(grads), strict=True):
            p.grad = torch.from_numpy(np.array(g, np.float32)).to(device)
        opt = torch.optim.Adam(ps, lr=1e-3, fused=fused, foreach=not fused)

        def run(burst: int) -> float:
            torch_sync(device)
            start = time.perf_counter()
            for _ in range(burst):
                opt.step()
            torch_sync(device)
            return (time.perf_counter() - start) / burst

        run(3)
        state = sum(t.numel() * t.element_size() for s in opt.state.values()
                    for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
        return Contender(f"torch Adam {'fused' if fused else 'foreach'}", run, None, state)

    return [named("torch Adam foreach", lambda: build(False)),
            named("torch Adam fused", lambda: build(True))]


# ---------------------------------------------------------------------------------------------
# Whole training steps.


def step_contenders(params: Any, loss: Callable[..., jax.Array], batch: tuple) -> list:
    """Builders for whole-step contenders: ``loss(params, *batch)``."""

    def build_tx(name: str, tx: Any) -> Callable[[], Contender]:
        def build() -> Contender:
            p = jax.tree.map(jnp.copy, params)
            s = tx.init(p)

            def step(p: Any, s: Any, *batch: Any) -> tuple[Any, Any]:
                g = jax.grad(loss)(p, *batch)
                u, s = tx.update(g, s, p)
                return optax.apply_updates(p, u), s

            c = _jax_contender(name, step, (p, s), batch)
            c.state_bytes = _tree_bytes(s)
            return c
        return named(name, build)

    def build_packed_params() -> Contender:
        tx = jadam.adam(1e-3)
        p, index = jadam.pack(jax.tree.map(jnp.copy, params))
        s = tx.init(p)

        def step(p: Any, s: Any, index: Any, *batch: Any) -> tuple[Any, Any]:
            g = jax.grad(lambda q: loss(jadam.unpack(q, index), *batch))(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        c = _jax_contender("jadam.adam, packed params", step, (p, s), (index, *batch))
        c.state_bytes = _tree_bytes(s)
        return c

    return [build_tx("optax.adam", optax.adam(1e-3)),
            build_tx("jadam.adam", jadam.adam(1e-3)),
            build_tx("jadam.packed(adam)", jadam.packed(jadam.adam(1e-3))),
            build_tx("jadam.quantized(adam)", jadam.quantized(jadam.adam(1e-3))),
            build_tx("jadam.quantized(adam, bits=4)", jadam.quantized(jadam.adam(1e-3), bits=4)),
            named("jadam.adam, packed params", build_packed_params)]


def residual_mlp(layers: int = 500, width: int = 32, batch: int = 64) -> tuple:
    """500 residual layers ``h + tanh(h W + b)`` of width 32: 1,000 leaves, 528K parameters."""
    keys = jax.random.split(jax.random.key(0), layers)
    params = {f"layer{i:03d}": {"w": jax.random.normal(k, (width, width)) * 0.05,
                                "b": jnp.zeros(width)} for i, k in enumerate(keys)}

    def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        h = x
        for i in range(layers):
            layer = params[f"layer{i:03d}"]
            h = h + jnp.tanh(h @ layer["w"] + layer["b"])
        return jnp.mean((h - y) ** 2)

    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, width))
    return params, loss, (x, y)


def nnx_residual_mlp(layers: int = 500, width: int = 32, batch: int = 64) -> tuple:
    """The residual MLP above as a ``flax.nnx`` module (1,000 leaves): ``(model, loss_fn,
    batch)``, ``loss_fn(model, x, y)``."""
    from flax import nnx

    class ResidualMLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            init = nnx.initializers.normal(0.05)
            self.layers = nnx.List([nnx.Linear(width, width, kernel_init=init, rngs=rngs)
                                    for _ in range(layers)])

        def __call__(self, h: jax.Array) -> jax.Array:
            for layer in self.layers:
                h = h + jnp.tanh(layer(h))
            return h

    def loss_fn(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    x = jax.random.normal(jax.random.key(1), (batch, width))
    y = jax.random.normal(jax.random.key(2), (batch, width))
    return ResidualMLP(nnx.Rngs(0)), loss_fn, (x, y)


def nnx_step_contenders(model: Any, loss_fn: Callable[..., jax.Array], batch: tuple) -> list:
    """An NNX model's whole step, as flax users write it for speed (``nnx.split``, a jitted
    step that merges) with optax.adam and jadam.adam; the packed-parameter step written by
    hand (``jadam.pack``, a step differentiating the buffers); and ``jadam.PackedModel``."""
    from flax import nnx

    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.as_pure(params)

    def loss(p: Any, *batch: Any) -> jax.Array:
        return loss_fn(nnx.merge(graphdef, p), *batch)

    every = step_contenders(params, loss, batch)
    # optax.adam, jadam.adam, and the packed-parameter step written by hand
    plain = [b for b in every if b.contender in  # type: ignore[attr-defined]
             ("optax.adam", "jadam.adam", "jadam.adam, packed params")]

    def build_packed_model() -> Contender:
        trainer = jadam.PackedModel(model, jadam.adam(1e-3))
        start = time.perf_counter()
        trainer.compile(loss_fn, *batch)
        compile_s = time.perf_counter() - start

        def run(burst: int) -> float:
            jax.block_until_ready(trainer.state)
            start = time.perf_counter()
            for _ in range(burst):
                trainer.step(loss_fn, *batch)
            jax.block_until_ready(trainer.state)
            return (time.perf_counter() - start) / burst

        run(3)
        return Contender("jadam.PackedModel(adam)", run, compile_s,
                         _tree_bytes(trainer.opt_state))

    return [*plain, named("jadam.PackedModel(adam)", build_packed_model)]


def cnn_step(batch: int = 64, image: int = 28) -> tuple:
    from flax import nnx

    from examples.mnist.train import CNN

    graphdef, params = nnx.split(CNN((image, image, 1), 10, rngs=nnx.Rngs(0)), nnx.Param)

    def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, image, image, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    return params, loss, (x, y)


def small_transformer(layers: int = 4, d: int = 128, heads: int = 4, vocab: int = 256,
                      seq: int = 64, batch: int = 8) -> tuple:
    """A 4-layer causal transformer of width 128 (67 leaves, 0.83M parameters), next-token loss
    on random tokens."""
    shapes = transformer_shapes(layers, d, vocab)
    params = _shapes_tree(shapes, seed=1)

    def norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * (1 + scale) + bias

    def loss(params: Any, tokens: jax.Array) -> jax.Array:
        w = list(params.values())
        emb, w = w[0], w[1:]
        x = emb[tokens[:, :-1]]
        t = x.shape[1]
        causal = jnp.tril(jnp.ones((t, t), bool))
        for _ in range(layers):
            (s1, b1, wq, bq, wk, bk, wv, bv, wo, bo, s2, b2, w1, c1, w2, c2), w = w[:16], w[16:]
            h = norm(x, s1, b1)
            q, k, v = (h @ wq + bq, h @ wk + bk, h @ wv + bv)
            split = lambda a: a.reshape(a.shape[0], t, heads, d // heads)  # noqa: E731
            att = jnp.einsum("bqhc,bkhc->bhqk", split(q), split(k)) / np.sqrt(d // heads)
            att = jax.nn.softmax(jnp.where(causal, att, -1e9), -1)
            x = x + jnp.einsum("bhqk,bkhc->bqhc", att, split(v)).reshape(x.shape) @ wo + bo
            h = norm(x, s2, b2)
            x = x + jax.nn.gelu(h @ w1 + c1) @ w2 + c2
        x = norm(x, *w)
        logits = x @ emb.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    tokens = jnp.asarray(np.random.default_rng(2).integers(0, vocab, (batch, seq + 1)), jnp.int32)
    return params, loss, (tokens,)


# ---------------------------------------------------------------------------------------------
# Cases.


def _update_case(name: str, shapes_or_tree: Any, steps: int = 5) -> Case:
    def build() -> tuple[int, list]:
        tree = (_shapes_tree(shapes_or_tree) if isinstance(shapes_or_tree, list)
                else shapes_or_tree())
        grads = jax.tree.map(lambda x: jnp.sin(x * 7.0 + 1.0) * 1e-2, tree)
        n = sum(x.size for x in jax.tree.leaves(tree))
        return n, update_contenders(tree, grads)
    return Case(name, "update", build, steps)


def _step_case(name: str, make: Callable[[], tuple], steps: int = 5) -> Case:
    def build() -> tuple[int, list]:
        params, loss, batch = make()
        n = sum(x.size for x in jax.tree.leaves(params))
        return n, step_contenders(params, loss, batch)
    return Case(name, "step", build, steps)


def _nnx_step_case(name: str, make: Callable[[], tuple], steps: int = 5) -> Case:
    def build() -> tuple[int, list]:
        model, loss_fn, batch = make()
        from flax import nnx
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        return n, nnx_step_contenders(model, loss_fn, batch)
    return Case(name, "step", build, steps)


# Leaf shapes of the many-leaf cases: a few shapes repeated, as layers of a network repeat.
_K1 = [(32, 32), (32,), (40, 40), (40,), (64, 16), (16,), (1000,), (3264,)]  # 1,000 avg
_K01 = [(10, 10), (100,), (5, 20), (20, 5), (98,), (102,)]  # 100 avg

CASES = [
    _update_case("update: 1 leaf of 1M", [(1_000_000,)], 20),
    _update_case("update: 1 leaf of 10M", [(10_000_000,)], 5),
    _update_case("update: 1 leaf of 50M", [(50_000_000,)], 3),
    _update_case("update: 1M in 1,000 leaves", _cycle(_K1, 1000), 10),
    _update_case("update: 1M in 10,000 leaves", _cycle(_K01, 10_000), 3),
    _update_case("update: 48 leaves of 4,096", [(4096,)] * 48, 20),
    _update_case("update: MNIST CNN tree", lambda: cnn_params(28), 20),
    _update_case("update: transformer 40M, 195 leaves", transformer_shapes(), 3),
    _step_case("step: residual MLP, 1,000 leaves", residual_mlp, 5),
    _nnx_step_case("step: NNX residual MLP, 1,000 leaves", nnx_residual_mlp, 5),
    _step_case("step: MNIST CNN 28x28, batch 64", cnn_step, 5),
    _step_case("step: small transformer", small_transformer, 5),
]


# ---------------------------------------------------------------------------------------------


def run_case(case: Case, rounds: int, only: list[str] | None = None,
             reverse: bool = False) -> dict[str, Any]:
    n, builders = case.build()
    contenders = []
    for build in reversed(builders) if reverse else builders:
        if only and not any(w in build.contender for w in only):
            continue
        c = build()
        print(f"  built {c.name}" + (f" (compile {c.compile_s:.1f} s)" if c.compile_s else ""),
              flush=True)
        contenders.append(c)
    if reverse:
        contenders.reverse()  # (the table keeps its order)
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            times[c.name].append(c.step(case.steps))
    rows = {}
    for c in contenders:
        rows[c.name] = {
            "median_ms": 1e3 * statistics.median(times[c.name]),
            "min_ms": 1e3 * min(times[c.name]),
            "compile_s": c.compile_s,
            "state_bytes_per_param": None if c.state_bytes is None else c.state_bytes / n,
            "temp_mb": None if c.temp_bytes is None else c.temp_bytes / 2**20,
        }
    for base in ("optax.adam", "torch Adam fused"):
        if base in rows:
            for row in rows.values():
                row[f"vs {base}"] = row["median_ms"] / rows[base]["median_ms"]
    del contenders
    gc.collect()
    return {"params": n, "kind": case.kind, "rounds": rounds, "steps_per_burst": case.steps,
            "results": rows}


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; Python {meta['python']}, jax "
        f"{meta['jax']}, optax {meta['optax']}, torch {meta['torch'] or 'not installed'}. "
        f"Median and minimum ms per step over {meta['rounds']} interleaved rounds; ratios are "
        "medians over optax.adam's and torch fused's (below 1 is faster)."
        + (" Contenders built in the reverse order (`--reverse`)."
           if meta.get("built") == "in reverse" else ""),
        *([f"Command: `{meta['command']}`."] if meta.get("command") else []),
        "",
        "| case | contender | median ms | min ms | compile s | state B/param | temp MB "
        "| / optax | / torch fused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x: float | None, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    for name, case in report["cases"].items():
        for cname, r in case["results"].items():
            lines.append(
                f"| {name} ({case['params']:,} params) | {cname} | {f(r['median_ms'], '.2f')} | "
                f"{f(r['min_ms'], '.2f')} | {f(r['compile_s'], '.1f')} | "
                f"{f(r['state_bytes_per_param'], '.2f')} | {f(r['temp_mb'], '.1f')} | "
                f"{f(r.get('vs optax.adam'), '.2f')} | {f(r.get('vs torch Adam fused'), '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=[],
                        help="run only cases whose name contains one of these words")
    parser.add_argument("--contenders", nargs="*", default=[],
                        help="run only contenders whose name contains one of these words "
                             "(the others are not built, so they cannot disturb the rest)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--out", default=None,
                        help="default: bench/results/run.json, or run-fused.json with --fuse")
    parser.add_argument("--fuse", action="store_true",
                        help="start XLA:CPU with multi-output fusion (XLA_FLAGS), for every "
                             "contender, and add jadam.one_pass(adam)")
    parser.add_argument("--reverse", action="store_true",
                        help="build the contenders in the reverse order: on 1,000 small leaves "
                             "the first one built runs 15-20%% faster than a copy of itself "
                             "built after it, so compare the two orders")
    args = parser.parse_args(argv)
    if args.fuse:  # before JAX's first computation, or XLA ignores it
        flag = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    if args.out is None:
        args.out = str(RESULTS / ("run-fused.json" if args.fuse else "run.json"))
    if args.list:
        print("\n".join(c.name for c in CASES))
        return
    chosen = [c for c in CASES if not args.cases or any(w in c.name for w in args.cases)]
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    report: dict[str, Any] = {"meta": {
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(),
        "machine": f"{machine_name()}, backend {jax.default_backend()}",
        "python": platform.python_version(), "jax": jax.__version__,
        "optax": optax.__version__, "torch": torch_version, "rounds": args.rounds,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "contenders": args.contenders,
        "built": "in reverse" if args.reverse else "in order",
    }, "cases": {}}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in chosen:
        print(case.name, flush=True)
        report["cases"][case.name] = result = run_case(case, args.rounds, args.contenders,
                                                       args.reverse)
        for cname, r in result["results"].items():
            print(f"    {cname:28s} {r['median_ms']:9.2f} ms  (min {r['min_ms']:.2f})  "
                  f"x optax {r.get('vs optax.adam', float('nan')):.2f}", flush=True)
        # Written after every case, so a long run that is stopped keeps what it measured.
        out.write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
