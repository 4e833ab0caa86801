"""Thin helpers around `ip netns`: run commands in a namespace, find and kill its processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class LabError(RuntimeError):
    """The lab could not be built or a helper command failed."""


def run(
    argv: Sequence[str],
    *,
    timeout: float = 10.0,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on failure raise LabError carrying its output."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"exit {proc.returncode}: {' '.join(argv)}\n{proc.stdout}{proc.stderr}".rstrip())
    return proc


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs inside network namespace ns."""
    return ["ip", "netns", "exec", ns, *argv]


def ip_batch(ns: str | None, lines: Iterable[str], *, timeout: float = 10.0) -> None:
    """Many `ip` commands in one process (one fork instead of dozens: setup stays fast)."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    argv = ["ip", "-batch", "-"] if ns is None else ["ip", "-n", ns, "-batch", "-"]
    run(argv, input=text, timeout=timeout)


def write_sysctls(ns: str, values: Mapping[str, str | int], *, timeout: float = 10.0) -> None:
    """Set sysctls inside ns. /proc/sys/net shows the netns of the writer, so write from inside."""
    if not values:
        return
    script = "set -e\n" + "".join(
        f"echo {value} > /proc/sys/{key.replace('.', '/')}\n" for key, value in values.items()
    )
    run(in_ns(ns, ["sh", "-c", script]), timeout=timeout)


def netns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def netns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is ns (same as `ip netns pids`, without a fork)."""
    try:
        target = os.stat(NETNS_DIR / ns)
    except OSError:
        return []
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # the process exited meanwhile
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    me = os.getpid()
    return [pid for pid in pids if pid != me]


def kill_netns_processes(namespaces: Sequence[str], *, grace: float = 3.0) -> None:
    """SIGTERM everything in the namespaces, then SIGKILL what is left after `grace` seconds."""

    def signal_all(sig: signal.Signals) -> int:
        count = 0
        for ns in namespaces:
            for pid in netns_pids(ns):
                try:
                    os.kill(pid, sig)
                    count += 1
                except ProcessLookupError:
                    pass
        return count

    if signal_all(signal.SIGTERM) == 0:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(netns_pids(ns) for ns in namespaces):
            return
        time.sleep(0.05)
    signal_all(signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and any(netns_pids(ns) for ns in namespaces):
        time.sleep(0.05)


def delete_netns(ns: str) -> None:
    """Delete a namespace if it exists (its veths go with it). Idempotent."""
    if netns_exists(ns):
        run(["ip", "netns", "delete", ns], check=False)
