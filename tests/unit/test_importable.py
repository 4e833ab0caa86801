"""The engine stays importable without the console: no module of `appliance` may need textual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: a meta path finder refuses textual (and the console package),
# then every module of `appliance` is imported and sys.modules is inspected.
PROBE = r"""
import importlib, json, pkgutil, sys

BLOCKED = ("textual", "tui")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the engine must not need the console")
        return None

sys.meta_path.insert(0, Block())
import appliance
names = sorted(m.name for m in pkgutil.iter_modules(appliance.__path__, "appliance."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"modules": names, "failed": failed, "loaded": loaded}))
"""


def run_probe() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_appliance_imports_without_textual():
    result = run_probe()
    # The probe really saw the engine (an empty list would make the test pass for nothing).
    for name in ("config", "compiler", "ruleset", "recent", "status", "control", "cli", "engine", "daemon"):
        assert f"appliance.{name}" in result["modules"]
    assert result["failed"] == {}
    assert result["loaded"] == []
