"""The tuning tools in examples/ run end to end on a small subset of the digits and write
valid PNGs of the size their figures ask for."""

from __future__ import annotations

import pathlib
import struct

import jax
import numpy as np
import pytest

from examples import compare_optimizers, data, lr_finder, sweep
from examples.mnist import train as mnist
from jadam import tune
from tests.helpers import WITHOUT_FMA, assert_trees_within_scale_ulps

SMALL = ["--dataset", "digits", "--train-size", "256", "--epochs", "2", "--no-progress"]


def _png_size(path: pathlib.Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


def test_compare_optimizers(tmp_path: pathlib.Path) -> None:
    png, js = tmp_path / "compare.png", tmp_path / "compare.json"
    results = compare_optimizers.main([*SMALL, "--seeds", "2", "--plot", str(png), "--json",
                                       str(js), "--optimizers", "adam",
                                       "sgd:learning_rate=0.05,momentum=0.9"])
    assert _png_size(png) == (1200, 450)
    assert set(results) == {"adam", "sgd:learning_rate=0.05,momentum=0.9"}
    assert results["adam"]["curves"]["test_accuracy"].shape == (2, 2)
    back = tune.load(str(js))
    np.testing.assert_array_equal(back["adam"]["curves"]["loss"],
                                  results["adam"]["curves"]["loss"])


def test_the_examples_trainable_trains_as_its_curves_function() -> None:
    """compare_optimizers' runs (the example's CNN as a Trainable, the transformation its
    config, evaluated each epoch) are make_curves_fn's runs (same initialisation, batches
    and steps): an epoch per compiled call to 4 ulps of scale (equal bits without FMA), and
    a step per call, where XLA fuses the step outside any loop, to 64 ulps after 8 steps."""
    digits = data.load_digits()
    specs = {"adamw": {}, "muon": {}}
    want = tune.compare(mnist.make_curves_fn(digits, epochs=2, train_size=256), specs,
                        accuracy="test_accuracy")
    trainable = mnist.make_trainable(digits, optimizer=None, train_size=256)
    for per_call, ulps in [(4, 4), (1, 64)]:
        got = tune.compare(trainable, specs, accuracy="test_accuracy", steps=8,
                           evaluate_every=4, steps_per_call=per_call)
        for label in specs:
            a, b = got[label]["curves"], want[label]["curves"]
            if WITHOUT_FMA and per_call == 4:
                jax.tree.map(np.testing.assert_array_equal, a, b)
            else:
                assert_trees_within_scale_ulps(a, b, ulps=ulps)
    with pytest.raises(ValueError, match="optimizer name"):
        mnist.make_trainable(digits, optimizer=None, b1=0.9)


def test_sweep(tmp_path: pathlib.Path) -> None:
    png = tmp_path / "sweep.png"
    result = sweep.main([*SMALL, "--plot", str(png), "--x", "learning_rate=1e-3,1e-2",
                         "--y", "b1=0.8,0.9,0.95"])
    assert _png_size(png) == (580, 550)
    assert len(result["seed"]) == 6
    assert result["results"]["test_accuracy"].shape == (6, 2)


def test_sweep_halving(tmp_path: pathlib.Path) -> None:
    """--halving: 9 configurations, 3 rungs; every curve ends where its configuration was
    stopped, the winner trained to the end; the plot of the rungs is written."""
    png = tmp_path / "rungs.png"
    result = sweep.main([*SMALL, "--plot", str(png), "--halving", "--configs", "9",
                         "--max-steps", "27", "--eta", "3", "--min-steps", "3"])
    assert _png_size(png) == (900, 550)
    assert [(len(r["configs"]), r["steps"]) for r in result["rungs"]] == [(9, 3), (3, 9),
                                                                          (1, 27)]
    assert result["stopped_at"][result["best"]["index"]] == 27
    loss = result["curves"]["loss"]
    for i, stop in enumerate(result["stopped_at"]):
        assert np.isfinite(loss[i, :stop]).all()
        assert np.isnan(loss[i, stop:]).all()


def test_lr_finder(tmp_path: pathlib.Path) -> None:
    png = tmp_path / "lr.png"
    result = lr_finder.main(["--dataset", "digits", "--steps", "100", "--no-progress",
                             "--plot", str(png)])
    assert _png_size(png) == (800, 450)
    assert 1e-6 <= result["suggestion"] <= 1.0


@pytest.mark.parametrize("tool", [compare_optimizers, sweep, lr_finder])
def test_help(tool, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        tool.main(["--help"])
    out = capsys.readouterr().out
    assert "--plot" in out
    assert "--dataset" in out
