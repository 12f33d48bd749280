"""jadam.checkpoint beyond the table of test_robustness: the golden checkpoint that every later
version must load, overwriting, and sharded leaves.

The golden checkpoint under tests/golden/ was written by jadam 0.1.0.dev0 with
``python -m tests.test_checkpoint`` (which refuses to overwrite it). Never rewrite it to make
the test pass: a failure means states saved by earlier versions no longer load.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam

GOLDEN = pathlib.Path(__file__).parent / "golden" / "states-v1"


def golden_optimizers() -> dict[str, Any]:
    return {
        "adam": jadam.adam(1e-2),
        "adamw_packed": jadam.packed(jadam.adamw(1e-2, weight_decay=0.1), min_size=8),
        "adam_8bit": jadam.quantized(jadam.adam(1e-2), min_size=256),
        "lion": jadam.lion(1e-3),
        "skip_adafactor": jadam.skip_nonfinite(jadam.adafactor(1e-2)),
    }


def golden_run() -> dict[str, Any]:
    """Parameters and states after three steps on fixed gradients (the checkpoint's content)."""
    rng = np.random.default_rng(2026)
    params = {"conv": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.float32),
                       "bias": jnp.zeros(4)},
              "dense": [jnp.asarray(rng.standard_normal((16, 10)), jnp.float32), None],
              "scale": jnp.ones((), jnp.bfloat16)}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
             for _ in range(3)]
    out: dict[str, Any] = {"params": params}
    for name, tx in golden_optimizers().items():
        state = tx.init(params)
        for g in grads:
            _, state = tx.update(g, state, params)
        out[name] = state
    return out


def test_the_golden_checkpoint_loads() -> None:
    want = golden_run()
    got = jadam.checkpoint.restore(GOLDEN, like=jax.eval_shape(golden_run))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    # The values as this version computes them: equal to a few ulps (a later version may
    # round differently; it must still load).
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=1e-5, atol=1e-7)
    # ... and training goes on from it.
    for name, tx in golden_optimizers().items():
        updates, _ = tx.update(got["params"], got[name], got["params"])
        chex.assert_tree_all_finite(updates)


def test_a_format_1_checkpoint_of_8bit_state_loads() -> None:
    """tests/golden/states-v1-8bit was written by jadam at commit 033ec55 (format 1, each 8-bit
    moment a (codes, scales) pair), with its moments decoded by that version beside it in
    states-v1-8bit-decoded.npz: restored into today's state (one uint8 array per moment), it
    decodes to the same values exactly, and training goes on from it."""
    rng = np.random.default_rng(2027)
    params = {"w": jnp.asarray(rng.standard_normal((20, 30)), jnp.float32), "b": jnp.zeros(30)}
    tx = jadam.quantized(jadam.adam(1e-2), min_size=256)
    like = {"params": params, "adam_8bit": jax.eval_shape(tx.init, params)}
    got = jadam.checkpoint.restore(GOLDEN.parent / "states-v1-8bit", like=like)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, like)
    chex.assert_trees_all_equal(got["params"], params)
    decoded = np.load(GOLDEN.parent / "states-v1-8bit-decoded.npz")
    state = got["adam_8bit"]
    for name, signed in (("mu", True), ("nu", False)):
        np.testing.assert_array_equal(
            jadam.quantize.dequantize(getattr(state, name)["w"], (20, 30), signed=signed),
            decoded[name])
    assert int(state.count) == 3
    updates, _ = tx.update(params, state, params)
    chex.assert_tree_all_finite(updates)


def test_save_refuses_to_overwrite_unless_asked(tmp_path: pathlib.Path) -> None:
    first = {"a": jnp.ones(3)}
    jadam.checkpoint.save(tmp_path / "c", first)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        jadam.checkpoint.save(tmp_path / "c", {"a": jnp.zeros(3)})
    jadam.checkpoint.save(tmp_path / "c", {"a": jnp.zeros(3)}, overwrite=True)
    got = jadam.checkpoint.restore(tmp_path / "c", like=first)
    chex.assert_trees_all_equal(got, {"a": jnp.zeros(3)})


def test_restore_errors_for_missing_and_foreign_checkpoints(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        jadam.checkpoint.restore(tmp_path / "nothing", like={"a": jnp.ones(2)})
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "plain", {"a": jnp.ones(2)})
    checkpointer.wait_until_finished()
    with pytest.raises(ValueError, match=r"not written by jadam\.checkpoint\.save"):
        jadam.checkpoint.restore(tmp_path / "plain", like={"a": jnp.ones(2)})


def test_zero_size_leaves_and_optax_states_round_trip(tmp_path: pathlib.Path) -> None:
    """Orbax refuses arrays of size 0; jadam.checkpoint makes them again from the template.
    Any pytree round-trips, optax's own states included."""
    params = {"empty": jnp.zeros((0, 3)), "w": jnp.ones((2, 3))}
    tx = optax.chain(optax.clip_by_global_norm(1.0), jadam.adafactor(1e-2))
    state = tx.init(params)
    state = tx.update(params, state, params)[1]
    jadam.checkpoint.save(tmp_path / "c", state)
    got = jadam.checkpoint.restore(tmp_path / "c", like=jax.eval_shape(tx.init, params))
    chex.assert_trees_all_equal(got, state)
    assert jax.tree.structure(got) == jax.tree.structure(state)


def _write_golden() -> None:
    if GOLDEN.exists():
        sys.exit(f"{GOLDEN} exists; it must never be rewritten (see the module docstring)")
    GOLDEN.parent.mkdir(exist_ok=True)
    jadam.checkpoint.save(GOLDEN, golden_run())
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    _write_golden()
