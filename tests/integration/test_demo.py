"""`make demo` twice in a row (issue 10, item 13): the second demo starts from nothing.

The demo's daemon saves its knocks when `make demo-down` stops it; a new demo is a new lab,
so a knock of the last one must not open mx2 to the bot of this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def lab_cli(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "MXKNOCK_SOCKET": str(tmp_path / "control.sock")}
    result = subprocess.run(
        [sys.executable, "-m", "tests.lab", "--state-file", str(tmp_path / "lab.json"), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_second_demo_does_not_inherit_the_first_ones_knocks(tmp_path: Path) -> None:
    prefix = f"mxk{os.getpid()}d"
    try:
        first = lab_cli(tmp_path, "up", "--prefix", prefix, "--with-daemon")
        assert "bot -> mx2: reset" in first, first
        assert "(it behaved like an MTA)" in first  # the bot knocked: that knock is saved at stop
        lab_cli(tmp_path, "down")
        assert not (tmp_path / "state").exists()

        second = lab_cli(tmp_path, "up", "--prefix", prefix, "--with-daemon")
        first_try = next(line for line in second.splitlines() if "bot -> mx2:" in line)
        assert first_try.strip() == "bot -> mx2: reset", second
    finally:
        lab_cli(tmp_path, "down")
