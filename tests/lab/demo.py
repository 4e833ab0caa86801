"""`make demo`: mxknockd on its embedded default in a lab, a real MTA getting through, a bot refused.

The lab and the daemon stay up afterwards, so `mxknock status`, `mxknock knocks` and the
console work from the host (the daemon serves the default socket) until `make demo-down`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance import config as config_module
from appliance.control import ControlClient, ControlError, socket_path

from . import addresses as A
from .lab import Lab

DEMO_DIR = Path("/run/mxknock-demo")


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def start_daemon(lab: Lab, demo_dir: Path = DEMO_DIR) -> int:
    """mxknockd in the lab's fw namespace, detached so it outlives `make demo`. Each demo
    is a new lab, so it starts from nothing: no knocks or proven senders of the last one."""
    forget_daemon_files(demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True)
    config_path = demo_dir / "mxknock.yaml"
    config_path.write_text(config_module.default_text())
    log = (demo_dir / "mxknockd.log").open("ab")
    argv = [
        "ip", "netns", "exec", lab.ns("fw"), sys.executable, "-m", "appliance.daemon",
        "--config", str(config_path), "--state-dir", str(demo_dir / "state"), "--socket", str(socket_path()),
    ]  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(argv, stdout=log, stderr=log, cwd=repo, start_new_session=True)
    client = ControlClient(socket_path())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mxknockd exited; see {demo_dir / 'mxknockd.log'}")
        try:
            client.call("ping")
            return process.pid
        except ControlError:
            time.sleep(0.1)
    raise RuntimeError(f"mxknockd did not answer in 15 s; see {demo_dir / 'mxknockd.log'}")


def forget_daemon_files(demo_dir: Path) -> None:
    """The demo daemon's saved state and config (the log stays, for reading afterwards)."""
    shutil.rmtree(demo_dir / "state", ignore_errors=True)
    for name in ("mxknock.yaml", "mxknock.yaml.last-good"):
        (demo_dir / name).unlink(missing_ok=True)


def stop_daemon(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def show(lab: Lab) -> None:
    """The story in four steps, each with what the kernel did."""
    mx1, mx2, bot = A.MX1_V4, A.MX2_V4, A.BOT_V4
    _step(f"a spam bot goes straight to mx2 ({mx2}:25)")
    print(f"   bot -> mx2: {lab.connect('bot', bot, mx2, 25)}")
    _step("a real Postfix sends to user@example.test (MX 10 mx1, MX 20 mx2)")
    started = time.monotonic()
    lab.postfix_send(subject="mxknock demo", address_preference="ipv4")
    mail = lab.wait_for_mail("mxknock demo", timeout=30)
    print(f"   delivered in {time.monotonic() - started:.2f} s from {mail.peer} through {mail.local} (mx2)")
    for line in lab.postfix_log():
        if "mx1.example.test" in line or "status=sent" in line:
            print(f"   postfix: {line.split(': ', 1)[-1]}")
    _step(f"the bot knocks on mx1 ({mx1}) first, then tries mx2")
    print(f"   bot -> mx1: {lab.connect('bot', bot, mx1, 25)}")
    print(f"   bot -> mx2: {lab.connect('bot', bot, mx2, 25)}   (it behaved like an MTA)")
    _step("mxknock status")
    subprocess.run([sys.executable, "-m", "appliance.cli", "status"], check=False)
    print(
        "\nThe lab stays up. Try:  .venv/bin/mxknock status | knocks | trusted list | whitelist add 192.0.2.201"
        f"\n                       ip netns exec {lab.ns('fw')} iptables-legacy -L MXKNOCK -nv"
        "\nTear it down with:     make demo-down"
    )
