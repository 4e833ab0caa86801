"""Bounded waiting for lab processes: polls with deadlines, never an unbounded loop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .netns import LabError

T = TypeVar("T")

# /proc/net/{tcp,udp}[6] socket states (include/net/tcp_states.h).
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def wait_until(
    predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll predicate until it returns something truthy; LabError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def listening_sockets(pid: int, port: int, proto: str) -> int:
    """How many sockets bound to `port` exist in the netns of pid (read from /proc/<pid>/net)."""
    state = _TCP_LISTEN if proto == "tcp" else _UDP_UNCONNECTED
    count = 0
    for table in (proto, f"{proto}6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, st = fields[1], fields[3]
            if st == state and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return "\n" + path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def wait_listening(
    proc: subprocess.Popen[bytes],
    port: int,
    proto: str,
    *,
    count: int,
    timeout: float,
    what: str,
    log: Path | None = None,
) -> None:
    """Wait until proc's netns has `count` sockets on port; fail early if proc dies."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode}{_tail(log)}")
        return listening_sockets(proc.pid, port, proto) >= count

    try:
        wait_until(ready, timeout=timeout, what=f"{what} on {proto}/{port}")
    except LabError as exc:
        raise LabError(f"{exc}{_tail(log)}") from None


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 2.0) -> None:
    """Terminate and reap one process we started (namespace cleanup catches the rest)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5.0)
