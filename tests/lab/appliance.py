"""The appliance under test: a real mxknockd in the lab's fw namespace, driven like an admin would.

The daemon builds br0 over fw's eth0 (outside) and eth1 (inside) itself; tests change
rules only through `mxknock` (the CLI) or the control API, never with iptables by hand.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from appliance import config as config_module
from appliance import recent
from appliance.control import ControlClient, ControlError

START_TIMEOUT = 15.0


def config_text(**changes: Any) -> str:
    """The embedded default (which matches the lab's addresses) with some keys replaced."""
    return config_module.with_changes(config_module.default(), **changes).to_yaml()


class Appliance:
    def __init__(self, fw_namespace: str, workdir: Path):
        self.ns = fw_namespace
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "mxknock.yaml"
        self.socket = self.workdir / "control.sock"
        self.status_socket = self.workdir / "status.sock"  # read-only, mode 0666
        self.state_dir = self.workdir / "state"
        self.log_path = self.workdir / "mxknockd.log"
        self.client = ControlClient(self.socket, timeout=30.0)
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, text: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)

    def start(self, text: str | None = None, *, save_interval: float = 60.0) -> Appliance:
        """Start mxknockd (writing `text` as its config first, if given) and wait until it answers."""
        if text is not None:
            self.write_config(text)
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "ip", "netns", "exec", self.ns,
            sys.executable, "-m", "appliance.daemon",
            "--config", str(self.config_path),
            "--socket", str(self.socket),
            "--status-socket", str(self.status_socket),
            "--state-dir", str(self.state_dir),
            "--save-interval", str(save_interval),
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log, cwd=_repo_root())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mxknockd exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.client.call("ping")
                return self
            except ControlError:
                time.sleep(0.05)
        raise RuntimeError(f"mxknockd did not answer within {START_TIMEOUT} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """SIGTERM is a clean stop (state saved); SIGKILL simulates a crash."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def reload_signal(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def cli(self, *args: str, input_text: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run the real `mxknock` CLI against this daemon (from the host namespace, as an admin would)."""
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", "--socket", str(self.socket), *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=_repo_root(),
        )

    def apply(self, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """`mxknock apply -` with the given config text."""
        return self.cli("apply", "-", *extra, input_text=text)

    def status(self) -> dict[str, Any]:
        return self.client.call("status")

    def iptables_save(self, family: int = 4) -> str:
        tool = "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save"
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, tool], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""


def recent_sources(lab: Any, list_name: str) -> list[str]:
    """Source addresses in one of fw's xt_recent lists, read with the product's own parser
    (which writes IPv6 compressed, as everything else in the tests does)."""
    text = lab.fw_exec(["cat", f"/proc/net/xt_recent/{list_name}"]).stdout
    return [entry.address for entry in recent.parse(text)]


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[2])
