"""Sharded updates on 8 forced CPU devices (a 2x4 ("data", "model") mesh), every optimizer.

One subprocess (tests/sharded_updates.py) runs every optimizer, and Adam with packed and
8-bit state, with its parameters replicated, split over the model axis by rows, by columns,
over both axes, and replicated with the state split over the data axis (ZeRO-1), three steps
each, and reports against the one-device run. The tests here read that report.

The subprocess runs with the CPU instruction set capped at AVX (``--xla_cpu_max_isa=AVX``), so
that LLVM has no fused multiply-add to contract: a shard is another shape than the whole array,
and with FMA, XLA:CPU vectorises and contracts the two differently depending on the CPU (on an
AMD EPYC with AVX and FMA, one-device and sharded updates differed by 1 ulp in 15 optimizers;
``shared/notes/cpus-and-bits.md``). Without FMA the same arithmetic gives the same bits on every
x86-64 CPU, which is what the "bit for bit" claims below are about.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jadam
from tests.optimizers import REDUCES

ROOT = pathlib.Path(__file__).resolve().parents[1]
REDUCING = REDUCES  # (see tests/optimizers.py)
LAYOUTS = ["adam-8bit", "adam-4bit", "adam-packed", "adam-skip-nonfinite", "adamw-kahan-bf16",
           "adamw-stochastic-bf16"]
# Whether any gradient entry is not finite is one boolean over all shards: an all-reduce, exact.
ALL_REDUCE = REDUCING | {"adam-skip-nonfinite"}
# Muon's Newton-Schulz iteration multiplies whole matrices: XLA keeps a matrix split along its
# longer side (the kernel's columns here) and all-reduces only the smaller Gram matrix each
# step, but gathers a matrix split along its shorter side (and moves slices when split both
# ways).
GATHERS = {"muon"}
SPLIT = ["model-rows", "model-cols", "data-model"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The subprocess's report, made once per test session: it takes about 100 s, and
    pytest-xdist workers share the parent of their temporary directories, so the first worker
    to get here makes it and the others wait for its file. The files are named by the run
    (xdist's id for it): that parent outlives runs, and a run without xdist once read a
    report an older version of the code had left there."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    shared = tmp_path_factory.getbasetemp().parent if run else tmp_path_factory.getbasetemp()
    name = f"sharding-report-{run or 'solo'}"
    done, lock = shared / f"{name}.json", shared / f"{name}.lock"
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        deadline = time.monotonic() + 1500
        while not done.exists():
            assert time.monotonic() < deadline, "the other worker's sharding report never came"
            time.sleep(1)
        return json.loads(done.read_text())
    flags = "--xla_force_host_platform_device_count=8 --xla_cpu_max_isa=AVX"
    env = {**os.environ, "XLA_FLAGS": flags,
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "sharded_updates.py")],
                         env=env, capture_output=True, text=True, timeout=1200)
    text = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "{}"
    (shared / f"{name}.partial").write_text(text)
    (shared / f"{name}.partial").rename(done)  # the others see it whole or not at all
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(text)


NAMES = [*sorted(jadam.optimizers), *LAYOUTS]


@pytest.mark.parametrize("name", NAMES)
def test_split_parameters_need_no_collective_the_math_does_not(report: dict, name: str) -> None:
    """Parameters split over the model axis (and the data axis): XLA keeps every input's
    sharding for the outputs by itself (no out_shardings given), and the compiled update has
    no collective, except the all-reduce of the sums the reducing optimizers take (and of
    skip_nonfinite's one boolean), and Muon's (see GATHERS): split along its longer side, a
    matrix needs only the all-reduce of its Gram matrix."""
    for part in ["replicated", *SPLIT]:
        r = report[f"{name}/{part}"]
        assert r["shardings_kept"], (part, r)
        allowed = {"all-reduce"} if name in ALL_REDUCE and part != "replicated" else set()
        if name in GATHERS and part in ("model-rows", "data-model"):
            allowed |= {"all-gather", "collective-permute"}
        assert set(r["collectives"]) <= allowed, (part, r["collectives"])


@pytest.mark.parametrize("name", NAMES)
def test_split_updates_equal_the_one_device_updates(report: dict, name: str) -> None:
    """Bit for bit for the elementwise optimizers without FMA (each device computes its
    entries exactly as one device would). The reducing ones sum in another order across
    shards: 1e-6 of each array's largest |value| after three steps (observed at most 2.9e-7).
    8-bit Adam: a leaf split over devices keeps float32 moments, so it differs from one
    device's 8-bit state by the quantization error (observed 2.7e-2; 5e-2 allowed); the
    leaves that are not split are quantized alike. 4-bit Adam likewise, by 4-bit quantization
    error: 0.59 of the largest update after three steps (its first moment's codes near a
    third of a block's largest are 0.2125 and 0.4375 of it); with the state split under ZeRO
    instead (below), it is the one-device run's."""
    for part in SPLIT:
        r = report[f"{name}/{part}"]
        if name in ("adam-8bit", "adam-4bit"):
            bound = 5e-2 if name == "adam-8bit" else 1.0
            assert r["max_relative_difference"] <= bound, (part, r)
            assert not r["same_state_layout"]
        elif name in GATHERS:  # Gram matrices summed in another order, through the quintic
            assert r["max_relative_difference"] <= 4e-6, (part, r)
        elif name in REDUCING:
            assert r["max_relative_difference"] <= 1e-6, (part, r)
        else:
            assert r["bitwise"], (part, r)


@pytest.mark.parametrize("name", NAMES)
def test_zero_state_sharding_cuts_state_memory_by_the_data_axis(report: dict, name: str) -> None:
    """ZeRO-1: parameters replicated, state split over the data axis (2 devices): the state
    on one device is half of the whole, up to the arrays that cannot be split (scalars, and
    dimensions that do not divide by 2), and the results are the one-device results: bit for
    bit for elementwise math, except Lion's (below); 1e-6 for the reducing optimizers and
    8-bit Adam, whose sums run in another order (observed 2.6e-7). Lion's update is
    -lr * sign(...): on one device XLA contracts p + (-lr * sign) into one FMA, but with the
    state split the update is gathered before it is added, two roundings (observed 6.5e-8,
    1 ulp). The only collectives move slices: gathering the update for the replicated
    parameters, resharding factored moments and 8-bit blocks, and the reducing sums."""
    r = report[f"{name}/zero-data"]
    assert r["shardings_kept"], r
    assert r["state_bytes_on_device_0"] <= r["state_bytes"] / 2 + 64, r
    assert set(r["collectives"]) <= {"all-gather", "all-reduce", "all-to-all",
                                     "collective-permute"}, r["collectives"]
    if name in GATHERS:
        assert r["max_relative_difference"] <= 4e-6, r
    elif name in REDUCING or name in {"adam-8bit", "adam-4bit", "lion"}:
        assert r["max_relative_difference"] <= 1e-6, r
    else:
        assert r["bitwise"], r


def test_muon_gathers_at_most_its_split_matrix(report: dict) -> None:
    """What Muon moves for its 8x16 kernel (128 elements; the other leaves are AdamW's and
    need nothing), per Newton-Schulz step, where each step needs the whole matrix: split
    along its columns, no gather (each device multiplies its columns and the 8x8 Gram matrix
    is all-reduced); along its rows, the kernel, its transpose and the Gram matrix (320
    elements); both ways, slices (64). Under ZeRO the state is split but the replicated
    parameters need the gathered update, as for every optimizer: AdamW's gathers plus at
    most one kernel."""
    kernel = 8 * 16
    assert report["muon/model-cols"]["gathered_elements"] == 0
    for part in ("model-rows", "data-model"):
        assert report[f"muon/{part}"]["gathered_elements"] <= 3 * kernel, part
    zero = report["muon/zero-data"]["gathered_elements"]
    assert zero <= report["adamw/zero-data"]["gathered_elements"] + kernel


def test_the_report_covers_every_optimizer(report: dict) -> None:
    assert {k.split("/")[0] for k in report} == set(NAMES)


def test_state_shardings_refuses_unplaced_parameters_and_unknown_axes() -> None:
    with pytest.raises(ValueError, match="placed with NamedShardings of one mesh"):
        jadam.state_shardings(jadam.adam(), {"w": jnp.ones(2)})
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jax.device_put(jnp.ones(2), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))}
    with pytest.raises(ValueError, match=r"zero_axis='batch'\): the mesh has axes"):
        jadam.state_shardings(jadam.adam(), params, zero_axis="batch")
    shardings = jadam.state_shardings(jadam.adam(), params, zero_axis="data")
    assert shardings.mu["w"].spec == jax.sharding.PartitionSpec("data")


_EXPLICIT = """
import json, warnings, jax, jax.numpy as jnp, jadam
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
out = {}
for kind in (AxisType.Explicit, AxisType.Auto):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(kind,) * 2)
    with jax.set_mesh(mesh):
        params = {"w": jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P(None, "model"))),
                  "b": jax.device_put(jnp.ones(16), NamedSharding(mesh, P("model"))),
                  "c": jax.device_put(jnp.ones(12), NamedSharding(mesh, P()))}
        for tx in (jadam.packed(jadam.adam(1e-3)),
                   jadam.quantized(jadam.adam(1e-3), min_size=8)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                state = jax.jit(tx.init)(params)
            step = jax.jit(tx.update)
            u, _ = step(params, state, params)
            text = step.lower(params, state, params).compile().as_text()
            out[f"{kind.name}/{type(state).__name__}"] = {
                "warned": any("init() under jit" in str(w.message) for w in caught),
                "gathers": "all-gather" in text or "all-to-all" in text,
                "w_spec": str(u["w"].sharding.spec)}
print(json.dumps(out))
"""


def test_init_under_jit_sees_explicit_shardings_and_warns_on_automatic_ones() -> None:
    """jax.jit(tx.init) for packed and 8-bit state. Under an explicit-sharding mesh a tracer
    shows its sharding: the leaves split over the model axis stay as they are, and the update
    needs no collective (it failed with ShardingTypeError: a reshape of a split array). Under
    an automatic mesh a trace cannot tell: init warns to call it outside jit."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _EXPLICIT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for layout in ("PackedState", "ScaleByAdamState"):
        explicit, auto = report[f"Explicit/{layout}"], report[f"Auto/{layout}"]
        assert explicit == {"warned": False, "gathers": False, "w_spec": "P(None, 'model')"}
        assert auto["warned"], auto


@pytest.fixture(scope="module")
def explicit_report() -> dict:
    """tests/explicit_updates.py: every optimizer under a mesh of explicit axes, its kernel,
    bias and convolution split by rows, by columns and over both axes (AVX cap as above)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_max_isa=AVX"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "explicit_updates.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_optimizer_updates_under_an_explicit_mesh(explicit_report: dict) -> None:
    """Under explicit sharding an ambiguous sharding is an error (Muon's Newton-Schulz products
    of a split kernel raised ShardingTypeError): every optimizer runs, keeps each update split
    as its parameter, and equals the one-device update: bitwise where the math is elementwise,
    within 2e-6 of scale where a reduction over a split leaf (a norm, a Gram matrix, a row
    mean) sums in another order (measured: 1.3e-6 for Muon's all-reduced Gram matrix,
    <= 2.5e-7 for the others)."""
    assert {k.split("/")[0] for k in explicit_report} == set(jadam.optimizers)
    for key, entry in explicit_report.items():
        assert "error" not in entry, (key, entry)
        assert entry["kept"], key
        name = key.split("/")[0]
        assert entry["diff"] <= (2e-6 if name in REDUCING | GATHERS else 0.0), (key, entry)
        if name not in GATHERS:
            assert entry["gathered_elements"] == 0, (key, entry)


def test_muon_gathers_a_short_side_split_once_under_an_explicit_mesh(
        explicit_report: dict) -> None:
    """Where the mesh's axes are explicit, Muon sees how its matrix is split: along the
    longer side (columns) it stays split (only the Gram matrix is all-reduced); along the
    shorter side it is gathered once, before the Newton-Schulz loop, never inside it (under
    automatic axes XLA gathers at every step; see test_muon_gathers_at_most_its_split_matrix):
    the 8x16 kernel's 128 elements, or 192 split both ways (XLA gathers over one axis, then
    the other)."""
    kernel = 8 * 16
    assert explicit_report["muon/model-cols"]["gathered_elements"] == 0
    for part, most in [("model-rows", kernel), ("data-model", kernel + kernel // 2)]:
        entry = explicit_report[f"muon/{part}"]
        assert entry["gathers_in_loops"] == 0, (part, entry)
        assert 0 < entry["gathered_elements"] <= most, (part, entry)
