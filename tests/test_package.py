"""The package's public face: exports, typing marker, docstrings, and the README's code."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import jadam

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ["jadam"] + [
    f"jadam.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "jadam")])
]


def test_all_is_the_public_api() -> None:
    states = [n for n in jadam.__all__ if n.startswith("ScaleBy")]
    directions = [n for n in jadam.__all__ if n.startswith("scale_by_")]
    assert sorted(jadam.__all__) == sorted(
        ["OptimizerInfo", "optimizers", "schedule_free_eval_params", "adam_mini_partition",
         "cautious", "tune", "pack", "unpack", "packed", "Packed", "PackIndex", "PackedState",
         "quantized", "quantize", "one_pass", "checkpoint", "skip_nonfinite", "state_shardings",
         "SkipNonfiniteState", "kahan_summation", "KahanSummationState", "stochastic_rounding",
         "StochasticRoundingState", "PackedModel", "muon_newton_schulz", "ProdigyState",
         *jadam.optimizers, *states, *directions]
    )
    # Each building block belongs to an optimizer of the registry.
    assert all(n.removeprefix("scale_by_") in jadam.optimizers for n in directions)
    for info in jadam.optimizers.values():
        assert getattr(jadam, info.name) is info.make
        state = info.make.__annotations__["return"]
        assert state == "optax.GradientTransformationExtraArgs", info.name
    for name in jadam.__all__:
        obj = getattr(jadam, name)
        assert obj.__doc__, f"{name} has no docstring"
        assert obj.__doc__.strip(), f"{name} has an empty docstring"


def test_public_functions_are_typed() -> None:
    for name in jadam.__all__:
        obj = getattr(jadam, name)
        if callable(obj) and not isinstance(obj, type):
            hints = obj.__annotations__
            assert "return" in hints, name
            code = obj.__code__
            args = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            assert all(a in hints for a in args), (name, [a for a in args if a not in hints])


def test_py_typed_marker_ships() -> None:
    assert (pathlib.Path(jadam.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module == "jadam.adam":
        assert result.attempted >= 5  # the examples of adam and adamw did run


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_readme_block("Quickstart"), "README.md", "exec"), {})
    loss = float(capsys.readouterr().out.split()[1])
    assert loss < 1e-4


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert text.index("```sh") < text.index("## ")


def test_readme_table_is_the_registrys() -> None:
    text = (ROOT / "README.md").read_text()
    assert jadam.registry.markdown_table() in text
    rows = re.findall(r"^\| `jadam\.(\w+)` \|", text, re.M)
    assert rows == list(jadam.optimizers)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
