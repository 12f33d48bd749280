"""8-bit and 4-bit state (:func:`jadam.quantized`): moments stored as blocks of codes and a
float32 scale (:mod:`jadam.quantize` has the number formats), decoded to float32 before the
optimizer's unchanged rule and encoded after it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax import lax

from jadam import checks, packing, quantize
from jadam.packing import Packed
from jadam.rule import Moment, Rule

Kernel = Callable[..., tuple[jax.Array, dict[str, Any]]]


def quantized(tx: Any, *, bits: int = 8, min_size: int = quantize.MIN_SIZE) -> Any:
    """The optimizer ``tx`` with its moments stored in 8 or 4 bits, block-wise (Dettmers et
    al., 2022; Li et al., 2023; see :mod:`jadam.quantize`): Adam's state drops from 8 to
    about 2.03 bytes per parameter (8 bits) or 1.06 (4 bits).

    Each moment array of at least ``min_size`` elements is stored as codes and one float32
    scale per block (256 elements for 8 bits, 128 for 4); moments that are never negative
    (second moments, accumulators) use the unsigned map, the others the signed one, and a
    positive value is never stored as zero. Smaller arrays, moments
    that are copies of the parameters (Schedule-Free's ``z``) and factored moments
    (Adafactor's) keep their dtype. Each step decodes the moments to float32, applies the
    optimizer's unchanged math, and encodes the result, all in plain ``jnp`` (CPU, GPU and
    TPU alike). Works with :func:`jadam.packed` (the packed buffers are then quantized), in
    ``optax.chain`` and under ``jit``/``vmap``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> tx = jadam.quantized(jadam.adam(1e-3))
      >>> state = tx.init({"w": jnp.zeros((1024, 1024))})
      >>> state.mu["w"].dtype, state.mu["w"].shape  # 4,096 blocks of 256 codes and a scale
      (dtype('uint8'), (4096, 260))
      >>> state = jadam.quantized(jadam.adam(1e-3), bits=4).init({"w": jnp.zeros((1024, 1024))})
      >>> state.mu["w"].shape  # 8,192 blocks of 128 codes, two a byte, and a scale
      (8192, 68)

    Args:
      tx: a jadam optimizer.
      bits: 8 or 4 bits a code.
      min_size: moments with fewer elements stay unquantized.

    Raises:
      ValueError: if ``bits`` is not 8 or 4, or ``min_size`` not an integer >= 1.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in quantize.FORMATS:
        raise ValueError(f"jadam.quantized: bits must be 8 or 4, got {bits!r}")
    return checks.layout_option("jadam.quantized", tx, min_size, "quantize_min_size",
                                quantize_bits=int(bits))


def quantizable(m: Moment, x: Any, min_size: int) -> bool:
    # (A complex moment keeps its dtype: the 8-bit maps are of real numbers.)
    return (not isinstance(m.init, str) and m.shape is None and x.size >= min_size
            and not jnp.iscomplexobj(x))


def encode_tree(rule: Rule, i: int, tree: Any, min_size: int, fmt: quantize.Format) -> Any:
    def leaf(path: Any, x: jax.Array) -> Any:
        m = rule.for_leaf(path, jnp.shape(x)).moments[i]
        # Blocks of a flattened array split over devices would straddle the shards; such a
        # leaf keeps its moments as they are, split like it (as packing leaves it unpacked).
        if not quantizable(m, x, min_size) or packing.is_split_across_devices(x):
            return x
        return _encode_initial(m, x, fmt)
    return jax.tree_util.tree_map_with_path(leaf, tree)


def _encode_initial(m: Moment, x: jax.Array, fmt: quantize.Format) -> jax.Array:
    """A moment's initial value ``x``, quantized: zeros as such (the usual case), without
    an encoding for XLA to fold at compile time."""
    if isinstance(m.init, int | float) and m.init == 0:
        return quantize.zeros(jnp.shape(x), signed=not m.nonnegative, fmt=fmt)
    return quantize.quantize(x, signed=not m.nonnegative, fmt=fmt)


def encode_packed(m: Moment, value: Packed, min_size: int, fmt: quantize.Format) -> Packed:
    def one(x: Any) -> Any:
        if x is None or not quantizable(m, x, min_size):
            return x
        return _encode_initial(m, x, fmt)
    return Packed(tuple(one(b) for b in value.buffers), tuple(one(x) for x in value.leaves))


def wrap(kernel: Kernel, *, chunkable: bool) -> Kernel:
    """``kernel`` (one array's update, :func:`jadam.stages.leaf_update`) with the quantized
    moments of its state decoded to float32 before it and encoded after it, each in the format
    it was stored in; as it is for a state with
    none. ``chunkable``: the kernel on a chunk of whole blocks gives that chunk of its result on
    the whole array (an elementwise rule, no cautious mask), so a large array may run in
    chunks (:func:`_chunked`)."""
    def coded_kernel(
        rule: Rule, *, g: jax.Array, state: dict[str, Any], **kwargs: Any
    ) -> tuple[jax.Array, dict[str, Any]]:
        coded = {m.name: not m.nonnegative for m in rule.moments
                 if quantize.is_quantized(state[m.name])}  # name -> signed map?
        if not coded:
            return kernel(rule, g=g, state=state, **kwargs)
        # (8 bits only: with 4-bit codes the loop measured 6x slower than the whole array,
        # 1,106 against 179 ms for Adam on a 10M leaf, where 8 bits gain 175 against 607.)
        eight = all(quantize.format_of(state[k]) == quantize.EIGHT for k in coded)
        if (chunkable and eight and 2 * CHUNK <= g.size < 2**31 - CHUNK and rule.elementwise
                and not rule.per_path and _one_cpu()):
            return _chunked(kernel, rule, coded, g=g, state=state, **kwargs)
        shape = jnp.shape(g)
        decoded = {k: quantize.dequantize(v, shape, signed=coded[k]) if k in coded else v
                   for k, v in state.items()}
        u, new = kernel(rule, g=g, state=decoded, **kwargs)
        return u, {k: quantize.quantize(v, signed=coded[k], previous=decoded[k],
                                        fmt=quantize.format_of(state[k])) if k in coded
                   else v for k, v in new.items()}

    return coded_kernel


#: Elements per chunk of a large 8-bit leaf's update on CPU: 1,024 blocks, 1 MB per float32
#: array (on one 10M leaf, 64 to 4,096 blocks all beat the whole array; 1,024 was fastest).
CHUNK = 1024 * quantize.BLOCK


def _one_cpu() -> bool:
    """Whether computations run on one CPU device, where :func:`_chunked` pays.
    (With several devices a state may be split over them, and a loop of dynamic slices would
    cut across the shards; GPUs and TPUs run the whole-array kernels well.)"""
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def _chunked(
    kernel: Kernel, rule: Rule, coded: dict[str, bool], *, g: jax.Array, state: dict[str, Any],
    p: jax.Array | None, **kwargs: Any,
) -> tuple[jax.Array, dict[str, Any]]:
    """The 8-bit kernel of an elementwise rule, one chunk of whole blocks at a time in a
    loop. On the whole array XLA:CPU writes the decoded and the new float32 moments out before
    encoding them (Adam on one 10M leaf: 239 MB of temporaries; 59 MB chunked); a chunk's
    stay in cache. The same arithmetic on the same blocks: there 1.8x faster, and bit for bit
    the same results on a CPU without FMA (``tests/test_quantize.py``)."""
    shape, n = jnp.shape(g), g.size
    blocks_per = CHUNK // quantize.BLOCK  # (8-bit moments only, see wrap)
    chunks = n // CHUNK
    flat = {k: jnp.ravel(v) for k, v in state.items() if k not in coded}

    def part(start: Any, size: int, q_start: Any, q_size: int, carry: Any) -> Any:
        update, codes = carry
        piece = lambda x: lax.dynamic_slice_in_dim(x, start, size)  # noqa: E731
        st = {k: piece(v) for k, v in flat.items()}
        for k, signed in coded.items():
            q = lax.dynamic_slice_in_dim(state[k], q_start, q_size)
            st[k] = quantize.dequantize(q, (size,), signed=signed)
        u, new = kernel(rule, g=piece(jnp.ravel(g)), state=st,
                              p=None if p is None else piece(jnp.ravel(p)), **kwargs)
        update = lax.dynamic_update_slice_in_dim(update, u, start, 0)
        out = {}
        for k, v in codes.items():
            if k in coded:
                q = quantize.quantize(new[k], signed=coded[k], previous=st[k])
                out[k] = lax.dynamic_update_slice_in_dim(v, q, q_start, 0)
            else:
                out[k] = lax.dynamic_update_slice_in_dim(v, new[k], start, 0)
        return update, out

    out_dtype = g.dtype if p is None else p.dtype
    # Read from the old state, written into new buffers: a loop that reads and writes the same
    # buffer makes XLA copy it every iteration.
    carry = (jnp.zeros(n, out_dtype), {
        **{k: jnp.zeros_like(v) for k, v in flat.items()},
        **{k: jnp.zeros_like(state[k]) for k in coded}})
    carry = lax.fori_loop(
        0, chunks,
        lambda i, c: part(i * CHUNK, CHUNK, i * blocks_per, blocks_per, c), carry)
    rest = n - chunks * CHUNK
    if rest:
        blocks = state[next(iter(coded))].shape[0]
        carry = part(chunks * CHUNK, rest, chunks * blocks_per, blocks - chunks * blocks_per,
                     carry)
    update, out = carry
    return update.reshape(shape), {
        k: v if k in coded else v.reshape(shape) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One array's inputs to the kernel: its index in the tree, its rule, gradient, parameter
    (or ``None``), state (moment name -> array) and whether weight decay applies to it."""

    i: int
    rule: Rule
    g: jax.Array
    p: jax.Array | None
    state: dict[str, Any]
    decay: bool


def update_leaves(
    kernel: Kernel, leaves: Sequence[Leaf]
) -> Iterator[tuple[int, jax.Array, dict[str, Any]]]:
    """``kernel`` on each leaf: ``(index, update, new state)``. Leaves with quantized moments
    that are alike (:func:`_alike`: the same rule, shapes and dtypes) and small (the chunked
    loop is for large ones) run as one kernel, ``jax.vmap``-ed over them stacked: each leaf's
    decoder and encoder would otherwise be kernels of their own, and XLA's compile time grows
    with the number of distinct kernels (48 leaves of 4,096 elements: 13 s to compile one by
    one; ``bench/README.md``). The arithmetic is the same, element by element."""
    groups: dict[Any, list[Leaf]] = {}
    for leaf in leaves:  # (a leaf alike with no other is a group of one)
        groups.setdefault(_alike(leaf) or ("alone", leaf.i), []).append(leaf)
    for group in groups.values():
        if len(group) == 1:
            (leaf,) = group
            yield leaf.i, *kernel(leaf.rule, g=leaf.g, state=leaf.state, p=leaf.p,
                                  decay=leaf.decay)
            continue
        first = group[0]

        def one(g: jax.Array, p: jax.Array | None, state: dict[str, Any],
                first: Leaf = first) -> tuple[jax.Array, dict[str, Any]]:
            return kernel(first.rule, g=g, state=state, p=p, decay=first.decay)

        g = jnp.stack([leaf.g for leaf in group])
        p = None if first.p is None else jnp.stack([cast(jax.Array, leaf.p) for leaf in group])
        state = {k: jnp.stack([leaf.state[k] for leaf in group]) for k in first.state}
        u, new = jax.vmap(one)(g, p, state)
        # (Each leaf's slice of the results is still a kernel of its own, 3 per leaf for Adam:
        # most of what is left of the compile time. Runtime indices did not help: XLA folds
        # them back into constants inside each slice's kernel.)
        for j, leaf in enumerate(group):
            yield leaf.i, u[j], {k: v[j] for k, v in new.items()}


def _alike(leaf: Leaf) -> Any:
    """The key under which a leaf runs batched with others (see :func:`update_leaves`), or
    ``None`` for a leaf that runs alone: one without quantized moments, a large one, a rule
    that differs by path, or one of several devices (a stacked batch of arrays split over them
    would move data between devices)."""
    if (not any(quantize.is_quantized(v) for v in leaf.state.values())
            or leaf.g.size >= 2 * CHUNK or leaf.rule.per_path or jax.device_count() > 1):
        return None
    spec = lambda x: None if x is None else (jnp.shape(x), jnp.result_type(x))  # noqa: E731
    # (The rule by identity: a rule that is not per path is the same object for every leaf.)
    return (id(leaf.rule), leaf.decay, spec(leaf.g), spec(leaf.p),
            tuple((k, spec(v)) for k, v in sorted(leaf.state.items())))

