"""Records every optimizer's updates and states, in every wrapper, and checks a later version
of the code gives the same bytes: for refactors that must not change a bit.

    python -m bench.same_bits record /tmp/before.npz    # on the commit before
    python -m bench.same_bits compare /tmp/before.npz   # on the commit after
    python -m bench.same_bits --hlo record /tmp/before-hlo.npz   # the programs, not run
    python -m bench.same_bits diff /tmp/before.npz /tmp/after.npz   # two records

With ``--hlo`` each step is only lowered, and the SHA-256 of its StableHLO text is kept: the
same text is the same program for XLA, so the same compile time and step time whatever the
Python around it (minutes instead of the half hour the runs take on two cores).

Both on the same machine (XLA contracts multiply-adds by CPU, see shared/notes/cpus-and-bits.md).
Each case of the test table (tests/optimizers.py) runs four jitted steps plain, packed (where
elementwise), 8-bit (with a leaf large enough for the chunked CPU path), one-pass, cautious,
under skip_nonfinite (a NaN gradient at step 3) and (float32 only) under
optax.inject_hyperparams, on real float32 and on complex64 parameters; every parameter and
state leaf of every step is kept (as a SHA-256 of its dtype, shape and bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jadam
from tests.helpers import gradient_sequence, random_tree
from tests.optimizers import CASES

STEPS = 4
_BIG = 2 * 1024 * 256 + 1000  # over two 8-bit chunks, and a tail


def _trees(dtype: type) -> tuple[dict, list[dict]]:
    def with_big(tree: dict, seed: int) -> dict:
        x = np.random.default_rng(seed).standard_normal(_BIG)
        return {**tree, "big": jnp.asarray(x, dtype)}

    params = with_big(random_tree(np.random.default_rng(0), dtype), 1)
    grads = [with_big(g, 2 + i) for i, g in enumerate(gradient_sequence(1, STEPS, dtype))]
    grads[2] = jax.tree.map(
        lambda x: x.reshape(-1).at[0].set(jnp.nan).reshape(x.shape) if x.size else x, grads[2])
    return params, grads


def _variants(case: object, dtype: type) -> dict:
    tx = case.make()
    out = {"plain": tx,
           "one_pass": tx.with_options(one_pass_min_size=1),
           "quantized": jadam.quantized(tx, min_size=256),
           "skip_nonfinite": jadam.skip_nonfinite(tx)}
    if dtype == np.float32:  # (inject_hyperparams's complex hyperparameters: since ffc8813)
        out["injected"] = case.injected()
    with contextlib.suppress(ValueError):  # not elementwise
        out["packed"] = jadam.packed(tx, min_size=1000)
    with contextlib.suppress(ValueError, TypeError):
        out["cautious"] = jadam.cautious(tx)
    return out


def _run(tx: optax.GradientTransformation, params: dict, grads: list,
         hlo: bool = False) -> list[np.ndarray]:
    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    if hlo:
        text = step.lower(p, s, grads[0]).as_text()
        return [np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)]
    out = []
    for g in grads:
        p, s = step(p, s, g)
        # A digest of each array's dtype, shape and bytes: keeping the arrays themselves took
        # tens of GB (the 8-bit case's large leaf in every variant, step and dtype).
        out += [_digest(np.asarray(x)) for x in jax.tree.leaves((p, s))]
    return out


def _digest(x: np.ndarray) -> np.ndarray:
    h = hashlib.sha256(f"{x.dtype}{x.shape}".encode() + x.tobytes())
    return np.frombuffer(h.digest(), np.uint8)


def record(hlo: bool = False) -> dict[str, np.ndarray]:
    results: dict[str, np.ndarray] = {}
    for dtype in (np.float32, np.complex64):
        params, grads = _trees(dtype)
        for case in CASES:
            if dtype == np.complex64 and "lion" in case.id:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variants = _variants(case, dtype)
            for name, tx in variants.items():
                for i, x in enumerate(_run(tx, params, grads, hlo)):
                    results[f"{np.dtype(dtype)}/{case.id}/{name}/{i}"] = x
            print(f"{np.dtype(dtype)} {case.id}: {', '.join(variants)}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["record", "compare", "diff"])
    parser.add_argument("file")
    parser.add_argument("after", nargs="?", help="diff: the second record")
    parser.add_argument("--hlo", action="store_true", help="compare the programs, not run")
    args = parser.parse_args()
    now = dict(np.load(args.after)) if args.mode == "diff" else record(args.hlo)
    if args.mode == "record":
        np.savez_compressed(args.file, **now)
        print(f"{len(now)} arrays written to {args.file}")
        return
    before = dict(np.load(args.file))
    missing = sorted(set(before) - set(now))  # (cases added since are only reported)
    print(f"{len(set(now) - set(before))} arrays of cases the record does not have")
    differ = sorted(k for k in set(before) & set(now)
                    if before[k].dtype != now[k].dtype or before[k].shape != now[k].shape
                    or before[k].tobytes() != now[k].tobytes())
    print(f"{len(now)} arrays; {len(differ)} differ, {len(missing)} only on one side")
    for k in (differ + missing)[:40]:
        print("  ", k)
    sys.exit(1 if differ or missing else 0)


if __name__ == "__main__":
    main()
