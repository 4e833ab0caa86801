"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET (a no-op outside systemd)."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
_failing = False  # the last datagram failed: logged once, not at every watchdog tick


def notify(message: str) -> bool:
    """True when the datagram went out. A notify socket whose peer is gone (systemd
    restarted, a test harness exited) is logged once and otherwise ignored: the daemon
    keeps filtering; the watchdog, if any, is what notices."""
    global _failing
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)  # a full receive queue must not stall the main loop
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        if not _failing:
            log.warning("cannot notify systemd at %s: %s (logged once until it works again)", address, exc)
            _failing = True
        return False
    if _failing:
        log.info("notifying systemd works again")
        _failing = False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asked for, in seconds, or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 2e6
