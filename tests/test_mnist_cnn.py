"""The MNIST example (examples/mnist, `python -m examples.mnist`): a smoke run, accuracy on the
real 8x8 digits, the same result from the same seed, on 1 and on 4 devices, in two processes,
and after SIGKILLs and --resume."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jadam
from examples import data
from examples.mnist import train as mnist_cnn
from tests.helpers import WITHOUT_FMA

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The command line (with PYTHONPATH at the repository, see _env).
SCRIPT = [sys.executable, "-m", "examples.mnist"]


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load_digits()


def _config(**kwargs) -> mnist_cnn.Config:
    return mnist_cnn.Config(dataset="digits", progress=False, **kwargs)


def test_smoke_run_writes_its_log_and_plot(digits, tmp_path: pathlib.Path) -> None:
    log, png = tmp_path / "log.jsonl", tmp_path / "curves.png"
    summary = mnist_cnn.train_and_evaluate(
        _config(epochs=2, batch_size=64, train_size=320, log=str(log), plot=str(png)),
        digits, log=lambda _: None)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["images_per_second"] > 0 for r in records)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["history"] == records


def test_reaches_95_percent_on_the_digits(digits) -> None:
    """Adam at its default rate, 20 epochs of the 1,438 training digits: a working optimizer
    passes 95% test accuracy (observed 97-98%); one that does not step stays near 10%."""
    summary = mnist_cnn.train_and_evaluate(_config(epochs=20), digits, log=lambda _: None)
    assert summary["test_accuracy"] >= 0.95, summary["test_accuracy"]


def test_same_seed_same_result(digits) -> None:
    runs = [mnist_cnn.train_and_evaluate(_config(epochs=1, batch_size=64, train_size=512,
                                                 seed=3), digits, log=lambda _: None)
            for _ in range(2)]
    for a, b in zip(*(jax.tree.leaves(r["params"]) for r in runs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_layouts_train_alike(digits) -> None:
    """--state packed gives the plain run's parameters bit for bit without FMA (packing
    changes where the state lives, not the math; tests/test_without_fma.py runs this test
    so). With FMA a buffer and a leaf may round 1 ulp apart, which 4 epochs of training
    amplify: then the same test accuracy to 1 point. 8-bit state trains to within 2 points of
    test accuracy (4 epochs of the digits: seen 94.99% plain, 94.43% 8-bit)."""
    runs = {state: mnist_cnn.train_and_evaluate(
        _config(epochs=4, batch_size=64, state=state), digits, log=lambda _: None)
        for state in ("plain", "packed", "8bit")}
    trainer_state = mnist_cnn.Trainer(_config(state="packed-8bit"), (8, 8, 1), 10).opt_state
    assert isinstance(trainer_state, jadam.PackedState)
    if WITHOUT_FMA:
        for a, b in zip(jax.tree.leaves(runs["plain"]["params"]),
                        jax.tree.leaves(runs["packed"]["params"]), strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        assert abs(runs["plain"]["test_accuracy"] - runs["packed"]["test_accuracy"]) <= 0.01
    gap = runs["plain"]["test_accuracy"] - runs["8bit"]["test_accuracy"]
    assert abs(gap) <= 0.02, gap


def test_packed_parameters_train_as_plain_ones_and_resume(digits,
                                                          tmp_path: pathlib.Path) -> None:
    """--packed (jadam.PackedModel): after 2 epochs the parameters are those of the plain
    run to 1e-4 of each array's scale (the same math, compiled as another program: a bias's
    gradient is summed in another order, see tests/test_packed_model.py); the optimizer state
    is over the buffers; a run stopped after 1 epoch and resumed from its checkpoint ends
    with the straight run's parameters, bit for bit."""
    plain = mnist_cnn.train_and_evaluate(_config(epochs=2, train_size=640), digits,
                                         log=lambda _: None)
    packed = mnist_cnn.train_and_evaluate(_config(epochs=2, train_size=640, packed=True),
                                          digits, log=lambda _: None)
    for a, b in zip(jax.tree.leaves(packed["params"]), jax.tree.leaves(plain["params"]),
                    strict=True):
        scale = float(np.max(np.abs(np.asarray(b))))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale)
    trainer = mnist_cnn.Trainer(_config(packed=True), (8, 8, 1), 10)
    assert len(trainer.packed_model.packed.buffers) == 1
    assert isinstance(trainer.opt_state, jadam.ScaleByAdamState)
    assert jax.tree.structure(trainer.opt_state.mu) == jax.tree.structure(
        trainer.packed_model.packed)

    ckpt = str(tmp_path / "ckpt")
    mnist_cnn.train_and_evaluate(_config(epochs=1, train_size=640, packed=True,
                                         checkpoint_dir=ckpt), digits, log=lambda _: None)
    resumed = mnist_cnn.train_and_evaluate(
        _config(epochs=2, train_size=640, packed=True, checkpoint_dir=ckpt, resume=True),
        digits, log=lambda _: None)
    for a, b in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(packed["params"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_parameters_train_with_each_rounding(digits) -> None:
    """--param-dtype bfloat16: the parameters are bfloat16, the moments float32 (or 4-bit),
    and 3 epochs of the digits reach the float32 run's test accuracy within 3 points with
    Kahan summation and 4-bit state, and with stochastic rounding (seen: 96.1% float32, 94.7%
    and 95.5%; bfloat16 rounded to nearest 95.8%: 3 epochs of the digits at lr 1e-3 are too
    few and too large steps for rounding to stall); the optimizer is the wrapped one the
    flags name."""
    runs = {}
    for rounding, state in (("kahan", "4bit"), ("stochastic", "plain")):
        config = _config(epochs=3, batch_size=64, param_dtype="bfloat16", rounding=rounding,
                         state=state)
        trainer = mnist_cnn.Trainer(config, (8, 8, 1), 10)
        kind = {"kahan": jadam.KahanSummationState,
                "stochastic": jadam.StochasticRoundingState}[rounding]
        assert isinstance(trainer.opt_state, kind)
        moments = jax.tree.leaves(trainer.opt_state.inner.mu)
        want = {"4bit": {"uint8", "float32"}, "plain": {"float32"}}[state]
        assert {str(m.dtype) for m in moments} == want
        runs[rounding] = mnist_cnn.train_and_evaluate(config, digits, log=lambda _: None)
        assert {str(x.dtype) for x in jax.tree.leaves(runs[rounding]["params"])} == {"bfloat16"}
    f32 = mnist_cnn.train_and_evaluate(_config(epochs=3, batch_size=64), digits,
                                       log=lambda _: None)
    for r in runs.values():
        assert r["test_accuracy"] >= f32["test_accuracy"] - 0.03, (r["test_accuracy"],
                                                                   f32["test_accuracy"])


def test_help_documents_every_flag() -> None:
    out = subprocess.run([*SCRIPT, "--help"], capture_output=True,
                         text=True, check=True, env=_env()).stdout
    for flag in ["--optimizer", "--learning-rate", "--epochs", "--batch-size", "--seed",
                 "--dataset", "--data-dir", "--checkpoint-dir", "--resume", "--plot", "--log",
                 "--state", "--param-dtype", "--rounding", "--packed",
                 "--coordinator", "--num-processes", "--process-id"]:
        assert flag in out, flag


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, "--dataset", "digits", "--no-progress",
                           *args], capture_output=True, text=True, env=_env(**env), timeout=600)


def _params(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_four_devices_match_one(tmp_path: pathlib.Path) -> None:
    """The same run, data-parallel over 4 forced CPU devices, ends where the 1-device run
    does. Not bitwise: each device sums its quarter of the batch and the quarters are then
    added, another order of float32 additions, and Adam's normalised step m/sqrt(v) magnifies
    that where a gradient is nearly zero. Tolerance 1e-4 of each array's largest |value|
    (observed 2.2e-5, on 1 entry of the 18,432 of conv2's kernel, after 32 steps); a wrong
    split (a device training on the whole batch, a missing all-reduce) moves every entry by
    about the learning rate per step, 1e-2 of the scale here."""
    args = ["--epochs", "2", "--batch-size", "64", "--train-size", "1024"]
    one = _run([*args, "--save-params", str(tmp_path / "one.npz")])
    four = _run([*args, "--save-params", str(tmp_path / "four.npz")],
                XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert one.returncode == 0, one.stderr[-2000:]
    assert four.returncode == 0, four.stderr[-2000:]
    assert "1 device(s)" in one.stdout
    assert "4 device(s)" in four.stdout
    a, b = _params(tmp_path / "one.npz"), _params(tmp_path / "four.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-4 * np.abs(a[k]).max(), err_msg=k)


def test_sigkilled_at_random_points_resumes_to_the_same_bits(tmp_path: pathlib.Path) -> None:
    """The example killed with SIGKILL five times, at random moments (seeded), each time
    restarted with --resume, ends with exactly the parameters of a run never interrupted.

    The kills land anywhere after the step is compiled: mid-epoch, during evaluation, while
    orbax writes a checkpoint, or while the final parameters are written. Every restart must
    find a whole checkpoint (orbax writes into a temporary directory and renames it when
    complete; --save-params writes a temporary file and renames it) and resume from an epoch
    no earlier than the last one it reported saved."""
    common = ["--epochs", "12", "--batch-size", "16", "--train-size", "512", "--seed", "5"]
    ckpt, out = tmp_path / "ckpt", tmp_path / "killed.npz"
    args = [*SCRIPT, "--dataset", "digits", "--no-progress", *common,
            "--checkpoint-dir", str(ckpt), "--resume", "--save-params", str(out)]
    rng = np.random.default_rng(11)
    saved, phases = 0, []
    for _ in range(5):
        log = tmp_path / f"run{len(phases)}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + 300
        while "compiled in" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        text = log.read_text()
        if saved:
            assert f"resumed from the checkpoint of epoch {saved}" in text or (
                f"resumed from the checkpoint of epoch {saved + 1}" in text), text[-2000:]
        epochs = [int(line.split()[5]) for line in text.splitlines()
                  if line.startswith("saved the checkpoint of epoch")]
        saved = max([saved, *epochs])
        phases.append((proc.returncode, text.strip().splitlines()[-1][:60]))
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, text[-2000:]
    killed = [p for p in phases if p[0] == -signal.SIGKILL]
    assert len(killed) >= 3, phases
    if not out.exists() or phases[-1][0] != 0:
        final = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
        assert final.returncode == 0, final.stderr[-2000:]
    straight = _run([*common, "--save-params", str(tmp_path / "straight.npz")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = _params(out), _params(tmp_path / "straight.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_checkpoint_and_resume_as_one(tmp_path: pathlib.Path) -> None:
    """Two real processes joined by jax.distributed on 127.0.0.1 (gloo collectives), two CPU
    devices each, train the CNN data-parallel, each feeding its own devices their slice of
    every batch: one epoch (8 steps), a checkpoint written once into the shared directory,
    then two new processes both resume from it for a second epoch. The two processes end with
    the same bits, equal to one process with 4 devices running both epochs straight to 1e-5
    of each array's largest |value|: gloo sums the four devices' gradients in another order
    than XLA does within one process (observed 3.1e-7 after one epoch)."""
    common = ["--batch-size", "32", "--train-size", "256", "--seed", "2"]
    ckpt = tmp_path / "ckpt"

    def two_processes(*args: str) -> list[str]:
        port = _free_port()
        procs = [subprocess.Popen(
            [*SCRIPT, "--dataset", "digits", "--no-progress", *common,
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
             "--process-id", str(i), "--checkpoint-dir", str(ckpt), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
            for i in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        for p, out in zip(procs, outs, strict=True):
            assert p.returncode == 0, out[-3000:]
            assert "4 device(s)" in out
        return outs

    straight = subprocess.Popen(
        [*SCRIPT, "--dataset", "digits", "--no-progress", *common,
         "--epochs", "2", "--save-params", str(tmp_path / "single.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    two_processes("--epochs", "1")
    assert sorted(p.name for p in ckpt.iterdir()) == ["1"]
    outs = two_processes("--epochs", "2", "--resume", "--save-params",
                         str(tmp_path / "multi.npz"))
    assert all("resumed from the checkpoint of epoch 1" in out for out in outs)
    assert sorted(p.name for p in ckpt.iterdir()) == ["1", "2"]
    out = straight.communicate(timeout=300)[0]
    assert straight.returncode == 0, out[-2000:]
    a, b = _params(tmp_path / "multi.process0.npz"), _params(tmp_path / "multi.process1.npz")
    c = _params(tmp_path / "single.npz")
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        np.testing.assert_allclose(a[k], c[k], rtol=0, atol=1e-5 * np.abs(c[k]).max(),
                                   err_msg=k)


def test_pooling_is_max_pooling() -> None:
    from flax import nnx

    x = np.random.default_rng(0).standard_normal((2, 8, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(mnist_cnn.max_pool_2x2(x),
                                  nnx.max_pool(x, (2, 2), strides=(2, 2)))
