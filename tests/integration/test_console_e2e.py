"""Issue 3 end to end: the console in a real terminal (tmux, 80x25, TERM=linux) drives a
real mxknockd in the lab. It whitelists an address that never knocked and changes the
window through the keyboard alone; then the kernel's rules, the config file and real
connections show that what the admin did on the screen is what the bridge does. A second
test sets a management address on the Management screen and scrapes a real metrics server
through it (issue 4).

Keys go one at a time with a pause between them: Textual runs bound keys that arrive in
one burst after the characters that follow them (textual#6605). Every wait is bounded,
and the screens are printed (`pytest -s`) for the issue note.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text

REPO = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 80, 25
KEY_GAP = 0.25  # seconds between keys
SCREEN_WAIT = 20.0  # the longest any screen may take to show up, even on a loaded machine
WINDOW = 3600


class Terminal:
    """The console in a detached tmux session on a private tmux server (its own socket,
    no config file), so neither the admin's tmux nor a parallel run gets in the way."""

    def __init__(self, name: str, socket: Path):
        self.name = name
        self.socket = socket

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )

    def start(self, command: str) -> None:
        # The pane stays after the console ends, so a crash leaves its traceback to capture.
        shell = f'{command}; echo; echo "[console exited with $?]"; sleep 600'
        self.tmux("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "-s", self.name, "-c", str(REPO), shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name).stdout

    def wait_for(self, *patterns: str, gone: tuple[str, ...] = (), timeout: float = SCREEN_WAIT) -> str:
        """The screen once every regex matches it (and none of `gone` does); fails with
        the last screen otherwise."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(re.search(p, screen) for p in patterns) and not any(re.search(p, screen) for p in gone):
                return screen
            if "[console exited with" in screen:
                break
            time.sleep(0.2)
        pytest.fail(f"waited {timeout:g} s for {patterns} (gone: {gone}) on this screen:\n{screen}")

    def keys(self, *keys: str) -> None:
        """tmux key names (Tab, Enter, Escape, F2, C-u), one at a time."""
        for key in keys:
            self.tmux("send-keys", "-t", self.name, key)
            time.sleep(KEY_GAP)
        time.sleep(KEY_GAP)  # a bound key must not share a read with the text typed next

    def type(self, text: str) -> None:
        for character in text:
            self.tmux("send-keys", "-t", self.name, "-l", character)
            time.sleep(KEY_GAP)

    def kill(self) -> None:
        self.tmux("kill-server", check=False)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing: CI must run the console's end-to-end test (apt-get install tmux)")
        pytest.skip("tmux is not installed")
    term = Terminal(f"mxknock-e2e-{os.getpid()}", tmp_path / "tmux.sock")
    try:
        yield term
    finally:
        term.kill()


def show(title: str, screen: str) -> None:
    print(f"\n----- {title} " + "-" * (WIDTH - 8 - len(title)))
    print(screen.rstrip("\n"))
    print("-" * WIDTH)


def test_console_whitelists_and_changes_the_window_in_the_kernel(
    lab: Lab, appliance: Appliance, terminal: Terminal
) -> None:
    started = time.monotonic()
    appliance.start(config_text(window=4000))
    allowed, other = lab.add_bot_addresses(2, 4)  # 198.51.100.1 and .2: neither ever knocked
    assert lab.connect_many("bot", [(allowed, A.MX2_V4, 25), (other, A.MX2_V4, 25)]) == ["reset", "reset"]

    env = f"TERM=linux PYTHONPATH={shlex.quote(str(REPO))}"
    console = f"{sys.executable} -m appliance.cli --socket {appliance.socket} console"
    terminal.start(f"env {env} {console}")

    dashboard = terminal.wait_for(r"mxknock\s+Dashboard", r"health OK", r"window 4000 s", r"w\s+Whitelist")
    show("dashboard", dashboard)

    # Whitelist: the field has focus; Enter adds at once (the daemon applies and saves it).
    terminal.keys("w")
    terminal.wait_for(r"Whitelisted senders reach", r"\b0 entries")
    terminal.type(allowed)
    terminal.keys("Enter")
    terminal.wait_for(r"\b1 entry\b", rf"(?m)^\s*{re.escape(allowed)}\s*$")
    terminal.keys("Escape")
    # Once its note ("Added to the whitelist") is gone, so that it does not cover the next screens.
    terminal.wait_for(r"mxknock\s+Dashboard", r"e\s+Edit", gone=(r"Added to the whitelist",))

    # Edit: mx1, mx2, mode, then the window; Ctrl+U clears it.
    terminal.keys("e")
    terminal.wait_for(r"Edit configuration", r"Window \(s\)\s+4000")
    terminal.keys("Tab", "Tab", "Tab", "C-u")
    terminal.type(str(WINDOW))
    terminal.wait_for(rf"Window \(s\)\s+{WINDOW}\b")
    terminal.keys("F2")
    terminal.wait_for(r"Edit configuration: review", r"-window: 4000", rf"\+window: {WINDOW}", r"a\s+Apply")
    terminal.keys("a")
    applied = terminal.wait_for(r"Change applied", r"roll back by themselves in")
    show("after the apply", applied)
    terminal.keys("c")
    terminal.wait_for(r"Change kept", r"Kept\.")
    terminal.keys("Enter")
    terminal.wait_for(r"mxknock\s+Dashboard", rf"window {WINDOW} s", r"e\s+Edit")

    # The kernel: the address is in the whitelist set, the knock rules use the new window.
    allow = lab.fw_exec(["ipset", "list", "mxknock-allow4"]).stdout
    assert re.search(rf"(?m)^{re.escape(allowed)}\b", allow), allow
    rules = appliance.iptables_save(4)
    assert f"--seconds {WINDOW}" in rules and "--seconds 4000" not in rules, rules
    # The config file: kept, so saved.
    saved = yaml.safe_load(appliance.config_path.read_text())
    assert saved["window"] == WINDOW and saved["whitelist"] == [allowed], saved
    status = appliance.status()
    assert status["pending"] is None and status["config"]["window"] == WINDOW
    # A real connection: the whitelisted address goes straight to mx2, the other is refused.
    assert lab.connect_many("bot", [(allowed, A.MX2_V4, 25), (other, A.MX2_V4, 25)]) == ["accepted", "reset"]
    # ...and the dashboard counts both at its next poll.
    final = terminal.wait_for(r"whitelisted connections\s+1\s", r"refused at mx2 \(spam stopped\)\s+1\s")
    show("dashboard after the two connections", final)
    print(f"end to end in {time.monotonic() - started:.1f} s")


FETCH_METRICS = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


def test_console_sets_a_management_address_that_serves_metrics(
    lab: Lab, appliance: Appliance, terminal: Terminal, tmp_path: Path
) -> None:
    """The issue's "a management address for SSH and metrics can be set from the console":
    typed on the Management screen, put on the bridge by mxknockd, and a real metrics
    server answers a scrape from the lab's sender through it."""
    appliance.start(config_text())
    server_log = (tmp_path / "metrics.log").open("w")
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("fw"), sys.executable, "-m", "appliance.metrics_server",
         "--socket", str(appliance.status_socket), "--listen", "[::]:9425"],
        cwd=REPO, stdout=server_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        env = f"TERM=linux PYTHONPATH={shlex.quote(str(REPO))}"
        terminal.start(f"env {env} {sys.executable} -m appliance.cli --socket {appliance.socket} console")
        terminal.wait_for(r"mxknock\s+Dashboard", r"management none \(transparent\)", r"m\s+Mgmt")

        terminal.keys("m")
        terminal.wait_for(r"Management address", r"Management\s+off")
        terminal.keys("Enter", "Down", "Enter")  # the on/off list has focus: switch it on
        terminal.wait_for(r"Management\s+on")
        terminal.keys("Tab")
        terminal.type("192.0.2.5/24")
        terminal.wait_for(r"Address\s+192\.0\.2\.5/24")
        terminal.keys("Tab", "Tab", "Tab")  # past the gateway and the allowed networks to Metrics
        terminal.keys("Enter", "Up", "Enter")  # off by default: pick "yes"
        terminal.wait_for(r"Metrics\s+yes")
        terminal.keys("F2")
        review = terminal.wait_for(r"\+management:", r"\+\s+- 192\.0\.2\.5/24", r"a\s+Apply")
        show("management: review", review)
        terminal.keys("a")
        applied = terminal.wait_for(r"Change applied", r"open a new SSH session")
        show("management: after the apply", applied)

        # In force before it is kept: the box answers at its new address right away.
        body = lab.exec("sender", [sys.executable, "-c", FETCH_METRICS, "http://192.0.2.5:9425/metrics"]).stdout
        assert re.search(r"(?m)^mxknock_up 1$", body), body[:500]
        assert re.search(r"(?m)^mxknock_management_configured 1$", body), body[:2000]
        terminal.keys("c")
        terminal.wait_for(r"Change kept")
        terminal.keys("Enter")
        final = terminal.wait_for(r"mxknock\s+Dashboard", r"management 192\.0\.2\.5/24\s+ssh off\s+metrics :9425")
        show("dashboard with the management address", final)

        assert "inet 192.0.2.5/24" in lab.fw_exec(["ip", "-4", "addr", "show", "dev", "br0"]).stdout
        saved = yaml.safe_load(appliance.config_path.read_text())
        assert saved["management"]["address"] == ["192.0.2.5/24"] and saved["management"]["ssh_keys"] == []
        # No SSH keys were given: port 22 stays shut even though the box has an address now.
        assert lab.connect("sender", None, "192.0.2.5", 22, timeout=1.5) == "timeout"
    finally:
        server.terminate()
        server.wait(10)
        server_log.close()
