"""8-bit and 4-bit block-wise state (jadam.quantized): the maps, the round trip, the
optimizer's math on decoded moments, the memory it saves, and dead units."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam
from jadam import quantize
from tests.helpers import gradient_sequence, random_tree
from tests.optimizers import CASES


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_maps(signed: bool) -> None:
    table = quantize.dynamic_map(signed)
    assert table.shape == (256,)
    assert table.dtype == np.float32
    assert np.all(np.diff(table) > 0)
    assert 0.0 in table
    assert table[-1] == 1.0
    assert table[0] == (-1.0 if signed else 0.0)
    # Codes in every decade from 1 down to 1e-7.
    positive = table[table > 0]
    for e in range(7):
        assert np.any((positive >= 10.0**-(e + 1)) & (positive < 10.0**-e)), e
    # Twice as many positive codes in the unsigned map.
    assert len(positive) == (128 if signed else 255)


def test_four_bit_maps() -> None:
    """The dynamic map built for 4 bits: signed, zero and 8 magnitudes from 0.0055 to 1, 7
    of them negative too; unsigned, zero and 15 magnitudes from 0.00325 to 1 (for the square
    root of a second moment; bench/four_bit_maps.py chose it)."""
    signed = quantize.dynamic_map(True, quantize.FOUR)
    assert signed.shape == (16,)
    assert np.all(np.diff(signed) > 0)
    assert signed[0] == -1.0
    assert signed[-1] == 1.0
    assert 0.0 in signed
    np.testing.assert_allclose(signed[signed > 0][:2], [0.0055, 0.0325], rtol=1e-6)
    unsigned = quantize.dynamic_map(False, quantize.FOUR)
    assert unsigned.shape == (16,)
    assert np.all(np.diff(unsigned) > 0)
    assert unsigned[0] == 0.0
    assert unsigned[-1] == 1.0
    np.testing.assert_allclose(unsigned[1:4], [0.00325, 0.00775, 0.02125], rtol=1e-6)


FORMATS = {"8bit": quantize.EIGHT, "4bit": quantize.FOUR}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("signed", [True, False])
def test_zeros_written_out_are_zeros_encoded(signed: bool, fmt: quantize.Format) -> None:
    """init writes the quantized zeros out (XLA would constant-fold their encoding under
    jit, seconds for a large moment): the same bytes as encoding them."""
    for shape in [(1000,), (3, 128), (4096,)]:
        want = quantize.quantize(jnp.zeros(shape), signed=signed, fmt=fmt)
        np.testing.assert_array_equal(quantize.zeros(shape, signed=signed, fmt=fmt), want)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_picks_the_nearest_code(signed: bool, fmt: quantize.Format) -> None:
    rng = np.random.default_rng(0)
    # Values over many decades, one block all zeros, a length that is not whole blocks.
    x = rng.standard_normal(1000) * np.logspace(-8, 2, 1000)
    b = fmt.block
    nb = -(-1000 // b)
    x[b:2 * b] = 0.0
    if not signed:
        x = np.abs(x)
    x = x.astype(np.float32)
    q = quantize.quantize(jnp.asarray(x), signed=signed, fmt=fmt)
    assert q.dtype == jnp.uint8
    assert q.shape == (nb, b * fmt.bits // 8 + 4)  # the codes and a float32 scale per block
    assert quantize.format_of(q) == fmt
    codes, stored_scales = quantize.split(q)
    assert codes.shape == (nb, b)
    assert stored_scales.dtype == jnp.float32
    assert stored_scales.shape == (nb,)
    y = np.asarray(quantize.dequantize(q, x.shape, signed=signed))
    table = quantize.dynamic_map(signed, fmt).astype(np.float64)
    pad = nb * b - 1000
    padded = np.concatenate([x, np.zeros(pad, np.float32)]).reshape(nb, b).astype(np.float64)
    root = fmt.bits == 4 and not signed  # codes of sqrt(x), decoded and squared
    if root:
        x, y = np.sqrt(x), np.sqrt(y)
        padded = np.sqrt(padded)
    scales = np.abs(padded).max(1)
    np.testing.assert_array_equal(np.asarray(stored_scales), scales.astype(np.float32))
    normed = padded / np.where(scales > 0, scales, 1)[:, None]
    # The error is the distance to the nearest code, never more (up to float32 rounding of
    # the normalised value, hence the 1e-6 of slack in units of the scale); except that in
    # the unsigned map a positive value nearest to zero takes the smallest positive code.
    distance = np.abs(normed[..., None] - table)
    if not signed:
        distance = np.where((normed[..., None] > 0) & (table == 0), np.inf, distance)
    best = distance.min(-1)
    got = np.abs(normed - table[np.asarray(codes)])
    assert np.all(got <= best + 1e-6)
    if not signed:
        assert np.all(np.asarray(codes)[padded > 0] > 0)
    # Each block's largest magnitude and every zero come back exactly (a square root and a
    # square apart, in float32: within 2 ulps).
    flat_y = np.concatenate([y, np.zeros(pad)]).reshape(nb, b)
    for k in range(nb):
        i = np.argmax(np.abs(padded[k]))
        np.testing.assert_allclose(flat_y[k, i], padded[k, i], rtol=2.4e-7 if root else 0)
    assert np.all(y[b:2 * b] == 0)
    # Within a factor 10 of their block's maximum, elements are off by at most half a code
    # gap there: 8 bits, 0.9 / 64 / 2 (signed) or 0.9 / 128 / 2 (unsigned) of the block's
    # maximum; 4 bits, 0.9 / 4 / 2 (signed) or 0.9 / 8 / 2 (unsigned, of the square root).
    block_max = np.repeat(scales, b)[:1000]
    near = np.abs(x) > 0.1 * block_max  # never in the zero block
    err = np.abs(y - x)[near] / block_max[near]
    bound = {(8, True): 0.9 / 128, (8, False): 0.9 / 256, (4, True): 0.9 / 8,
             (4, False): 0.9 / 16}[fmt.bits, signed]
    assert err.max() <= bound * (1 + 1e-5)
    if root:  # of the moment itself: |x - y| = |sqrt x - sqrt y| (sqrt x + sqrt y)
        near = x**2 > 0.1 * block_max**2
        err = np.abs(y**2 - x**2)[near] / block_max[near] ** 2
        assert err.max() <= 2 * bound * (1 + 1e-5)


def _decoded(state: object, shapes: object) -> object:
    """The state with each quantized moment decoded, as the plain optimizer would hold it."""
    def one(x: object, shape: tuple, signed: bool) -> object:
        return quantize.dequantize(x, shape, signed=signed) if quantize.is_quantized(x) else x
    out = {}
    for name in state._fields:
        value = getattr(state, name)
        if isinstance(value, dict):
            out[name] = jax.tree.map(
                lambda x, p, n=name: one(x, p.shape, n not in NONNEGATIVE), value, shapes)
        else:
            out[name] = value
    return type(state)(**out)


NONNEGATIVE = {"nu", "nu_max", "sum", "square_avg", "acc_delta"}


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("case", [c for c in CASES if "-" not in c.id], ids=lambda c: c.id)
def test_quantized_state_runs_the_same_math(case, bits: int) -> None:
    """Every optimizer (its default case), 8 and 4 bits: each update is the plain optimizer's update
    from the decoded state (the layout decodes, applies the unchanged rule, encodes). Not
    bitwise: in one jitted update XLA fuses the decoding into the optimizer's arithmetic and
    may contract a multiply and an add into a fused multiply-add where the plain run does not
    (seen: 1 ulp in Adam); checked normwise to 1e-5 of each update's largest entry, which
    also covers RAdam's cancellation (see its battery case)."""
    params = random_tree(np.random.default_rng(0))
    grads = gradient_sequence(1, 2)
    tx = case.make()
    qtx = jadam.quantized(tx, bits=bits, min_size=1)
    step, plain_step = jax.jit(qtx.update), jax.jit(tx.update)
    state = qtx.init(params)
    quantized = [x for x in jax.tree.leaves(state) if quantize.is_quantized(x)]
    assert quantized or case.id in {"sgd", "adafactor"}  # no moment, or only factored ones
    for g in grads:
        want, _ = plain_step(g, _decoded(state, params), params)
        got, state = step(g, state, params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            if b.size:
                err = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                assert err <= 1e-5 * np.max(np.abs(np.asarray(b, np.float64))), err
        params = optax.apply_updates(params, got)


_TIES = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    from jadam import quantize
    report = {}
    for fmt in quantize.FORMATS.values():
        for signed in (True, False):
            table = quantize.dynamic_map(signed, fmt)
            mags = np.unique(np.abs(table))
            points = np.concatenate([mags, (mags[1:].astype(np.float64) + mags[:-1]) / 2])
            bits = (np.float32(points).view(np.int32)[:, None] + np.arange(-20, 21)).ravel()
            x = bits[(bits >= 0) & (bits <= np.float32(1).view(np.int32))].view(np.float32)
            x = x[(x == 0) | (x >= np.finfo(np.float32).tiny)]  # (XLA:CPU flushes subnormals)
            x = np.concatenate([x, -x]) if signed else x
            got = np.asarray(jax.jit(lambda v: quantize._encode_unit(v, signed, fmt=fmt))(x))
            # The reference: the float32 error to each value a code may take, the first (the
            # smaller magnitude) of the smallest. Unsigned: code 0 is zero, which a positive
            # value never takes. Signed: code h - 1 is zero, h + j magnitude j, h - 1 - j its
            # negative (no negative of magnitude 0).
            if not signed:
                err = np.abs(table[None, :] - x[:, None])
                err[:, 0] = np.where(x > 0, np.inf, err[:, 0])
                want = np.argmin(err, axis=1)
            else:
                h = len(table) // 2
                mag = table[h:]  # magnitude j at j
                pos = np.concatenate([[np.float32(0)], mag])
                neg = np.concatenate([[np.float32(0)], mag[1:]])
                a = np.abs(x)
                ip = np.argmin(np.abs(pos[None, :] - a[:, None]), axis=1)
                ineg = np.argmin(np.abs(neg[None, :] - a[:, None]), axis=1)
                want = np.where(x >= 0, np.where(ip == 0, h - 1, h + ip - 1),
                                np.where(ineg == 0, h - 1, h - 1 - ineg))
            report[f"{fmt.bits}/{signed}"] = [int(x.size), int(np.sum(got != want))]
    print(json.dumps(report))
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_encoding_near_every_edge_is_the_nearest_code() -> None:
    """Every value of each map and every point halfway between two, and 20 float32 steps
    either side of each (both signs): the encoder's code is the table's nearest by float32
    error, ties to the smaller magnitude, as a brute-force argmin over the table finds it.
    With FMA off (``--xla_cpu_max_isa=AVX``): with it, LLVM may contract the error's
    multiply-add, and at an exact tie the other code may win."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}
    out = subprocess.run([sys.executable, "-c", _TIES], env=env, capture_output=True,
                         text=True, timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 4
    assert all(n > 2000 for n, _ in report.values())
    assert {k: bad for k, (_, bad) in report.items() if bad} == {}


@pytest.mark.parametrize(("bits", "per_moment"), [(8, 1 + 4 / 256), (4, 0.5 + 4 / 128)])
def test_adam_state_bytes_per_parameter(bits: int, per_moment: float) -> None:
    """By construction: a code of ``bits`` and a float32 scale per block, for each moment;
    the 1,000-element bias stays float32, 8 bytes of state per parameter."""
    params = {"w": jnp.zeros((1000, 1000)), "b": jnp.zeros(1000)}
    state = jadam.quantized(jadam.adam(1e-3), bits=bits).init(params)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    blocks = -(-1000 * 1000 // quantize.FORMATS[bits].block)
    want = 2 * blocks * quantize.FORMATS[bits].row + 2 * 4 * 1000 + 4  # and the count
    assert nbytes == want
    assert nbytes / (1000 * 1000) <= 2 * per_moment + 0.01
    assert jnp.result_type(state.mu["b"]) == jnp.float32  # small: left as it is


@pytest.mark.parametrize(("bits", "within"), [(8, 0.05), (4, 0.4)])
def test_quantized_adam_trains_like_float32_adam(bits: int, within: float) -> None:
    """Logistic regression on 2,000 random points with 4,096 weights, 200 steps: the 8-bit
    run's final loss is within 5% of the float32 run's (seen: 0.184 against 0.183), the 4-bit
    run's within 40% (seen: 0.231, 26%; not learning is 0.69). Here 4 bits cost, and mostly
    in the first moment: in bench/four_bit_maps.py's NumPy loop, 4-bit first moments alone
    end at 0.251 and 4-bit second moments alone at 0.181 to 0.201 (the maps it compares):
    the first moment, whose codes nearest zero are 0.0055 and 0.0325 of the block's
    largest, loses the small steady part of the gradient."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2000, 4096)) / 64, jnp.float32)
    w_true = rng.standard_normal(4096)
    y = jnp.asarray((np.asarray(x) @ w_true > 0), jnp.float32)

    def loss(w: jax.Array) -> jax.Array:
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    finals = []
    for tx in (jadam.adam(1e-2), jadam.quantized(jadam.adam(1e-2), bits=bits)):
        w, s = jnp.zeros(4096), tx.init(jnp.zeros(4096))

        @jax.jit
        def step(w: jax.Array, s: object, tx: object = tx) -> tuple:
            u, s = tx.update(jax.grad(loss)(w), s, w)
            return w + u, s

        for _ in range(200):
            w, s = step(w, s)
        finals.append(float(loss(w)))
    assert finals[0] < 0.35  # it learned something
    assert abs(finals[1] - finals[0]) <= within * finals[0], finals


def test_composes_with_packed_and_vmap() -> None:
    params = {f"w{i}": jnp.ones(300) for i in range(20)}
    tx = jadam.quantized(jadam.packed(jadam.adam(1e-3)), min_size=1000)
    state = tx.init(params)
    (buffer,) = state.inner.mu.buffers
    assert quantize.is_quantized(buffer)
    assert buffer.shape == (24, 260)  # 6,000 elements padded to 6,016, in 24 blocks
    four = jadam.quantized(jadam.packed(jadam.adam(1e-3)), bits=4, min_size=1000).init(params)
    assert four.inner.mu.buffers[0].shape == (47, 68)  # 47 blocks of 128
    grads = jax.tree.map(lambda p: jnp.sin(p), params)
    u, _ = jax.jit(tx.update)(grads, state, params)
    plain, _ = jadam.adam(1e-3).update(grads, jadam.adam(1e-3).init(params), params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)  # the first step decodes zeros: exact
    # A sweep over learning rates with 8-bit state.
    lrs = jnp.asarray([1e-3, 1e-2], jnp.float32)
    states = jax.vmap(lambda lr: jadam.quantized(jadam.adam(lr)).init(params))(lrs)
    us, _ = jax.vmap(lambda lr, s: jadam.quantized(jadam.adam(lr)).update(grads, s, params))(
        lrs, states)
    assert us["w0"].shape == (2, 300)


def test_errors() -> None:
    with pytest.raises(TypeError, match="expected a jadam optimizer"):
        jadam.quantized(optax.adam(1e-3))
    for bad in (0, -5, 2.0, False):
        with pytest.raises(ValueError, match="min_size"):
            jadam.quantized(jadam.adam(1e-3), min_size=bad)
    for bad in (2, 16, 8.0, True, None):
        with pytest.raises(ValueError, match=r"jadam.quantized: bits must be 8 or 4, got"):
            jadam.quantized(jadam.adam(1e-3), bits=bad)


# Large 8-bit leaves on one CPU are updated a chunk of blocks at a time
# (jadam.codecs.blockwise.CHUNK, here shrunk to 4 blocks so that small arrays take that path):
# the same arithmetic as the whole-array update, checked byte for byte with the instruction set
# capped below FMA (with FMA LLVM may contract a multiply-add differently in the two programs;
# see jadam.one_pass).
_CHUNKED = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np, optax, jadam
    from jadam.codecs import blockwise
    from tests.helpers import bytes_apart, run_to_bytes, train_step
    from tests.optimizers import CASES

    rng = np.random.default_rng(0)
    def tree(rng):  # 2 chunks and a partial one of 700 (3 blocks, the last padded), and small
        return {"big": jnp.asarray(rng.standard_normal(2 * 1024 + 700), jnp.float32),
                "small": jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)}
    params, grads = tree(rng), [tree(rng) for _ in range(3)]
    report = {}
    for case, bits in [(c, b) for c in {c.ctor: c for c in reversed(CASES)}.values()
                       for b in (8, 4)]:  # one case per constructor
        tx = jadam.quantized(case.make(), bits=bits, min_size=256)
        coded = any(jadam.quantize.is_quantized(x) for x in jax.tree.leaves(tx.init(params)))
        try:
            jadam.packed(case.make())
            elementwise = True
        except ValueError:
            elementwise = False
        def whiles(step, tx):  # loops in the compiled step (Muon's Newton-Schulz has its own)
            text = step.lower(params, tx.init(params), grads[0]).compile().as_text()
            return text.count(" while(")
        plain = case.make()
        own = whiles(jax.jit(train_step(plain)), plain)
        results, loops = [], []
        for chunk in (4 * 256, 1 << 40):  # (8 blocks of 4 bits)
            blockwise.CHUNK = chunk  # read when the step is traced
            step = jax.jit(train_step(tx))
            loops.append(whiles(step, tx) > own)
            results.append(run_to_bytes(step, tx, params, grads))
        report[f"{case.id}/{bits}"] = {
            "chunked": elementwise and coded and bits == 8, "loops": loops,
            "bytes": bytes_apart(*results)}
    print(json.dumps(report))
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_chunked_update_is_the_whole_array_update_bit_for_bit() -> None:
    """Every optimizer (one case per constructor), 8 and 4 bits (4 bits are never chunked: the
    loop measured slower there), three jitted steps: parameters,
    codes and scales equal the whole-array update's byte for byte; the elementwise ones with
    8-bit moments (those that pack) loop over chunks, the others do not."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}
    out = subprocess.run([sys.executable, "-c", _CHUNKED], env=env, capture_output=True,
                         text=True, timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * len({case.ctor for case in CASES})
    assert {k: r["bytes"] for k, r in report.items() if r["bytes"]} == {}
    assert {k: r["loops"] for k, r in report.items()
            if r["loops"] != [r["chunked"], False]} == {}
    assert sum(r["chunked"] for r in report.values()) >= 15


# Small quantized leaves alike in shape run as one vmapped kernel
# (jadam.codecs.blockwise.update_leaves): the same arithmetic as one leaf at a time, checked
# byte for byte with the instruction set capped below FMA, as above.
_BATCHED = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np, optax, jadam
    from jadam.codecs import blockwise
    from tests.helpers import bytes_apart, run_to_bytes, train_step
    from tests.optimizers import CASES

    rng = np.random.default_rng(1)
    def tree(rng):  # three alike leaves (3 blocks, the last padded), one other, one small
        return {"a": jnp.asarray(rng.standard_normal((17, 40)), jnp.float32),
                "b": jnp.asarray(rng.standard_normal((17, 40)), jnp.float32),
                "c": jnp.asarray(rng.standard_normal((17, 40)), jnp.float32),
                "d": jnp.asarray(rng.standard_normal(600), jnp.float32),
                "e": jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)}
    params, grads = tree(rng), [tree(rng) for _ in range(3)]
    alike = blockwise._alike
    report = {}
    for case, bits in [(c, 8) for c in {c.ctor: c for c in reversed(CASES)}.values()] + [
            (c, 4) for c in CASES if c.id in ("adam", "adamw", "lion")]:  # one per constructor
        tx = jadam.quantized(case.make(), bits=bits, min_size=256)
        results, batched = [], []
        for together in (True, False):
            blockwise._alike = alike if together else (lambda leaf: None)  # read when traced
            step = train_step(tx)
            batched.append(str(jax.make_jaxpr(step)(params, tx.init(params), grads[0]))
                           .count("clz"))
            results.append(run_to_bytes(jax.jit(step), tx, params, grads))
        report[f"{case.id}/{bits}"] = {"clz": batched, "bytes": bytes_apart(*results),
                                       "per_path": type(case.make().recipe.args[0]).for_leaf
                                       is not jadam.rule.Rule.for_leaf}
    print(json.dumps(report))
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the ISA cap is an XLA:CPU flag")
def test_alike_small_leaves_run_together_bit_for_bit() -> None:
    """Every optimizer (one case per constructor) with 8 bits, three with 4 (the batching does
    not look at the format), three jitted steps on a tree with three alike leaves: parameters,
    codes and scales equal those of the leaf-by-leaf update byte for byte, and the program
    decodes and encodes (``clz`` is in the decoder's arithmetic) for two leaves' shapes
    instead of four leaves, wherever a moment is quantized."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}
    out = subprocess.run([sys.executable, "-c", _BATCHED], env=env, capture_output=True,
                         text=True, timeout=600, cwd=pathlib.Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == len({case.ctor for case in CASES}) + 3
    assert {k: r["bytes"] for k, r in report.items() if r["bytes"]} == {}
    coded = {k for k, r in report.items() if r["clz"][1]}
    assert len(coded) >= 20, report
    # (Adam-mini's and Muon's rules make a rule for each leaf, which run one by one.)
    per_path = {k for k, r in report.items() if r["per_path"]}
    assert {k: r["clz"] for k, r in report.items()
            if k in coded - per_path and not r["clz"][0] < 0.6 * r["clz"][1]} == {}
    assert {k: r["clz"] for k, r in report.items() if k in per_path and
            r["clz"][0] != r["clz"][1]} == {}


@pytest.mark.parametrize("bits", [8, 4])
def test_a_dead_unit_never_steps_more_than_a_few_learning_rates(bits: int) -> None:
    """A 4,096-element leaf (16 blocks): entry 0 always has gradient 1, entry 1 gets 1e-4 once
    and then 0. Its second moment is ~1e-8 of its block's largest, below the smallest code; if
    it were stored as 0, each later step would divide its surviving first moment by eps (a
    step of -4.2 at lr 1e-3 was reported, against -0.00067 for float32 Adam). Rounded up to the
    smallest code instead, no step of it exceeds the learning rate. Its first moment, decaying
    by 0.9 a step, would stick at a low code (0.9 m rounds back to m where codes are more than
    20% apart) and step 3% of the rate for ever; stepped down a code instead, it reaches 0
    (seen: after 6 steps). 300 steps move it less than float32 Adam does."""
    lr = 1e-3
    params = {"w": jnp.zeros(4096)}
    first = jnp.zeros(4096).at[0].set(1.0).at[1].set(1e-4)
    later = jnp.zeros(4096).at[0].set(1.0)
    runs = {}
    for name, tx in (("q", jadam.quantized(jadam.adam(lr), bits=bits)), ("f32", jadam.adam(lr))):
        step = jax.jit(tx.update)
        state = tx.init(params)
        steps = []
        for t in range(300):
            u, state = step({"w": first if t == 0 else later}, state, params)
            steps.append(float(u["w"][1]))
        runs[name] = np.asarray(steps)
    assert np.max(np.abs(runs["q"][1:])) <= lr
    assert abs(runs["q"].sum()) <= abs(runs["f32"].sum())
    assert np.all(runs["q"] <= 0)  # the direction of the one gradient it had
    assert np.all(runs["q"][50:] == 0)
