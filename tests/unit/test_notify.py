"""sd_notify over a real datagram socket, including one whose peer is gone."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import notify as notify_module
from appliance.notify import notify


def test_notify_sends_one_datagram(sock_dir: Path, monkeypatch) -> None:
    path = sock_dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert receiver.recv(100) == b"READY=1"


def test_notify_outside_systemd_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_a_notify_socket_whose_peer_is_gone_is_logged_once(sock_dir: Path, monkeypatch, caplog) -> None:
    path = sock_dir / "gone.sock"
    # Bound by a process that then exits: the file stays and no copy of the socket can linger
    # in ours (a fork by another test's thread once kept one alive), so nobody reads.
    subprocess.run(
        [sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind(sys.argv[1])",
         str(path)],
        check=True, timeout=30,
    )  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))  # what systemd's vanished peer looks like
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setattr(notify_module, "_failing", False)
    with caplog.at_level(logging.INFO, logger="appliance.notify"):
        for _ in range(5):  # the main loop's watchdog ticks: it keeps running
            assert notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert "cannot notify systemd" in caplog.text
    # Back again (systemd restarted): it works, and says so once.
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="appliance.notify"):
            assert notify("WATCHDOG=1") is True
        assert receiver.recv(100) == b"WATCHDOG=1"
        assert "works again" in caplog.text


def test_a_missing_notify_socket_does_not_raise(sock_dir: Path, monkeypatch) -> None:
    for address in (str(sock_dir / "never.sock"), "@mxknock-test-nobody-listens-here"):
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert notify("READY=1") is False
