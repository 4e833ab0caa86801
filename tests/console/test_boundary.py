"""The console's boundary: the engine and the console's pure parts need no Textual,
and `mxknock console` says what to install when Textual is missing.

(tests/unit/test_importable.py checks every `appliance` module the same way.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCK_TEXTUAL = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "textual":
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Block())
"""

PURE = ("tui", "tui.backend", "tui.form", "tui.rates", "tui.format", "tui.diff", "tui.state")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TEXTUAL + code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_appliance_and_the_pure_console_modules_import_without_textual():
    done = run(
        "import importlib, json\n"
        "import appliance.cli, appliance.daemon, appliance.engine, appliance.control, appliance.config\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('textual'))))\n"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_mxknock_console_without_textual_says_what_to_install():
    done = run("from appliance.cli import main\nsys.exit(main(['console', '--socket', '/nonexistent.sock']))\n")
    assert done.returncode == 1, done.stderr
    assert "pip install 'mxknock[console]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_takes_the_socket_before_or_after_the_subcommand():
    from appliance.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--socket", "/a.sock", "console"]).socket == Path("/a.sock")
    assert parser.parse_args(["console", "--socket", "/b.sock"]).socket == Path("/b.sock")
    args = parser.parse_args(["console"])
    assert (args.socket, args.confirm_within) == (None, 60.0)
