"""Adam-mini's partition of Flax parameter trees into blocks."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jadam


class _Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(10, 8, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                           decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.out = nnx.Linear(8, 10, rngs=rngs)


# path -> (parameter shape, the shape of its second moment: one value per block)
EXPECTED = {
    "embed/embedding": ((10, 8), (10, 1)),  # per token
    "attn/query/kernel": ((8, 2, 4), (1, 2, 1)),  # per head
    "attn/key/kernel": ((8, 2, 4), (1, 2, 1)),  # per head
    "attn/value/kernel": ((8, 2, 4), (1, 2, 4)),  # per output neuron
    "attn/out/kernel": ((2, 4, 8), (1, 1, 8)),  # per output neuron
    "attn/query/bias": ((2, 4), (2, 4)),  # as Adam
    "norm/scale": ((8,), (1,)),  # one for the vector
    "norm/bias": ((8,), (8,)),
    "conv/kernel": ((3, 3, 1, 4), (1, 1, 1, 4)),  # per output channel
    "out/kernel": ((8, 10), (1, 10)),  # per output neuron (per token for an output layer)
}


def _by_name(tree) -> dict:
    """Leaves by "module/param" name, without the ``.value`` of nnx Variables."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        keys = [k for k in path if isinstance(k, jax.tree_util.DictKey)]
        out["/".join(str(k.key) for k in keys)] = leaf
    return out


@pytest.mark.parametrize("pure", [False, True], ids=["nnx-state", "pure-dict"])
def test_flax_partition_follows_the_paper(pure: bool) -> None:
    """One value per head for queries and keys, per output neuron elsewhere, per token for
    embeddings, per parameter for biases; on an nnx.State and on a plain dict of it."""
    params = nnx.state(_Model(nnx.Rngs(0)), nnx.Param)
    if pure:
        params = nnx.to_pure_dict(params)
    state = jadam.adam_mini().init(params)
    nu, p = _by_name(state.nu), _by_name(params)
    for name, (shape, block_shape) in EXPECTED.items():
        assert p[name].shape == shape, name
        assert nu[name].shape == block_shape, name
    # The second moment is a small fraction of the parameters.
    n_params = sum(x.size for x in jax.tree.leaves(params))
    n_nu = sum(x.size for x in jax.tree.leaves(state.nu))
    assert n_nu < 0.2 * n_params, (n_nu, n_params)


def test_nnx_optimizer_trains_with_adam_mini() -> None:
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, jadam.adam_mini(1e-2), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 4)), jnp.float32)
    y = x @ jnp.ones((4, 3))

    def loss(m):
        return jnp.mean(jnp.square(m(x) - y))

    before = float(loss(model))
    for _ in range(100):
        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)
    assert float(loss(model)) < 0.5 * before


def test_a_bad_partition_names_the_leaf() -> None:
    params = {"dense": {"kernel": jnp.ones((3, 4))}}
    for bad in [(2,), (0, 0), ("a",), None]:
        tx = jadam.adam_mini(partition=lambda path, shape, bad=bad: bad)
        with pytest.raises(ValueError, match=re.escape("['dense']['kernel'] of shape (3, 4)")):
            tx.init(params)
    with pytest.raises(ValueError, match="partition must be a function"):
        jadam.adam_mini(partition=(0,))
