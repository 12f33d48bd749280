"""The examples run, end to end, as a user would start them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_example_learns_the_curve() -> None:
    """The quickstart script, shortened: the loss must fall from ~0.2 to near the noise floor."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--steps", "600"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    last = out.strip().splitlines()[-1]
    first, final = float(last.split()[1]), float(last.split()[3])
    assert first > 0.1
    assert final < 0.005, out
