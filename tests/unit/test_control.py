"""The control API: request dispatch, and a real Unix socket round trip with the client."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from appliance import control
from appliance.config import ConfigError, FieldError
from appliance.control import ControlClient, ControlError, ControlServer


def refuse_config(args):
    raise ConfigError([FieldError("whitelist[+0]", "not an address or network: 'x'")])


def explode(args):
    raise RuntimeError("the kernel said no")


def need_key(args):
    return args["entries"]


HANDLERS = {
    "ping": lambda args: {"pong": True},
    "echo": lambda args: {"args": args},
    "refuse": refuse_config,
    "explode": explode,
    "need_key": need_key,
}


@pytest.fixture
def server(sock_dir: Path):
    """A bound but not serving server: dispatch() is a plain method call."""
    srv = ControlServer(sock_dir / "dispatch.sock", HANDLERS)
    yield srv
    srv.server_close()  # not close(): shutdown() waits for a serve_forever() that never ran
    srv.path.unlink(missing_ok=True)


def dispatch(server: ControlServer, request) -> dict:
    line = request if isinstance(request, bytes) else json.dumps(request).encode()
    return server.dispatch(line + b"\n")


# ---- dispatch ---------------------------------------------------------------------------------


def test_dispatch_ok(server):
    assert dispatch(server, {"command": "ping"}) == {"ok": True, "result": {"pong": True}}
    assert dispatch(server, {"command": "echo", "args": {"a": 1}}) == {"ok": True, "result": {"args": {"a": 1}}}


def test_dispatch_refuses_args_that_are_not_an_object(server):
    for bad in (None, [], ""):
        reply = dispatch(server, {"command": "echo", "args": bad})
        assert reply["ok"] is False and "args" in reply["error"]


@pytest.mark.parametrize("line", [b"{not json", b"", b"\xff\xfe", b'{"command": "ping"'])
def test_dispatch_bad_json(server, line):
    reply = dispatch(server, line)
    assert reply["ok"] is False
    assert "not valid JSON" in reply["error"]


@pytest.mark.parametrize("request_", [{}, {"args": {}}, {"command": 5}, ["ping"], "ping", None])
def test_dispatch_missing_command(server, request_):
    reply = dispatch(server, request_)
    assert reply["ok"] is False
    assert '"command" string' in reply["error"]


def test_dispatch_unknown_command_lists_known_ones(server):
    reply = dispatch(server, {"command": "reboot"})
    assert reply["ok"] is False
    assert "unknown command 'reboot'" in reply["error"]
    assert "echo, explode, need_key, ping, refuse" in reply["error"]


def test_dispatch_args_must_be_an_object(server):
    reply = dispatch(server, {"command": "echo", "args": [1, 2]})
    assert reply == {"ok": False, "error": '"args" must be an object'}


def test_dispatch_config_error_carries_the_fields(server):
    reply = dispatch(server, {"command": "refuse"})
    assert reply["ok"] is False
    assert reply["error"].startswith("config refused:")
    assert reply["errors"] == [{"field": "whitelist[+0]", "message": "not an address or network: 'x'"}]


def test_dispatch_missing_argument(server):
    reply = dispatch(server, {"command": "need_key", "args": {}})
    assert reply["ok"] is False
    assert "bad arguments for need_key" in reply["error"]
    assert "entries" in reply["error"]


def test_dispatch_handler_exception_does_not_propagate(server, caplog):
    with caplog.at_level(logging.ERROR, logger="appliance.control"):
        reply = dispatch(server, {"command": "explode"})
    assert reply == {"ok": False, "error": "the kernel said no"}
    assert "command explode failed" in caplog.text
    assert dispatch(server, {"command": "ping"})["ok"] is True  # still serving


def test_dispatch_request_too_large(server, monkeypatch):
    monkeypatch.setattr(control, "MAX_REQUEST", 32)
    reply = dispatch(server, {"command": "echo", "args": {"x": "y" * 100}})
    assert reply["ok"] is False
    assert "larger than 32 bytes" in reply["error"]


# ---- a real socket ------------------------------------------------------------------------------


def test_round_trip(serve):
    path = serve(HANDLERS)
    client = ControlClient(path, timeout=5)
    assert client.call("ping") == {"pong": True}
    assert client.call("echo", entries=["192.0.2.1"], n=2) == {"args": {"entries": ["192.0.2.1"], "n": 2}}


def test_client_raises_with_field_errors(serve):
    client = ControlClient(serve(HANDLERS), timeout=5)
    with pytest.raises(ControlError) as info:
        client.call("refuse")
    assert info.value.errors == [{"field": "whitelist[+0]", "message": "not an address or network: 'x'"}]
    assert info.value.unreachable is False
    with pytest.raises(ControlError) as info:
        client.call("explode")
    assert str(info.value) == "the kernel said no"
    assert info.value.errors == []


def test_several_requests_on_one_connection(serve):
    path = serve(HANDLERS)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b'{"command": "ping"}\nnot json\n{"command": "echo", "args": {"k": 1}}\n')
        reader = sock.makefile("rb")
        replies = [json.loads(reader.readline()) for _ in range(3)]
    assert replies[0] == {"ok": True, "result": {"pong": True}}
    assert replies[1]["ok"] is False
    assert replies[2] == {"ok": True, "result": {"args": {"k": 1}}}


def test_socket_mode_is_0600_and_umask_is_restored(sock_dir):
    before = os.umask(0o022)
    os.umask(before)
    path = sock_dir / "sub" / "control.sock"
    srv = ControlServer(path, HANDLERS)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        now = os.umask(0o022)
        os.umask(now)
        assert now == before
    finally:
        srv.server_close()
        path.unlink(missing_ok=True)


def test_socket_mode_can_be_widened(sock_dir):
    path = sock_dir / "group.sock"
    srv = ControlServer(path, HANDLERS, mode=0o660)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
    finally:
        srv.server_close()
        path.unlink(missing_ok=True)


def test_stale_socket_is_replaced_and_close_removes_it(sock_dir):
    path = sock_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # leaves the file behind, as a crashed daemon would
    with pytest.raises(ControlError) as info:
        ControlClient(path, timeout=5).call("ping")
    assert info.value.unreachable
    srv = ControlServer(path, HANDLERS)
    srv.serve_in_thread()
    try:
        assert ControlClient(path, timeout=5).call("ping") == {"pong": True}
    finally:
        srv.close()
    assert not path.exists()


def test_client_without_socket_is_unreachable(sock_dir):
    path = sock_dir / "missing.sock"
    with pytest.raises(ControlError) as info:
        ControlClient(path, timeout=5).call("status")
    assert info.value.unreachable is True
    assert str(path) in str(info.value)
    assert "systemctl start mxknockd" in str(info.value)


def test_client_when_the_daemon_hangs_up(sock_dir):
    path = sock_dir / "rude.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def hang_up():
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(ControlError) as info:
            ControlClient(path, timeout=5).call("status")
        assert info.value.unreachable is True
        assert "without answering" in str(info.value)
    finally:
        thread.join(5)
        listener.close()


def test_socket_path_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MXKNOCK_SOCKET", str(tmp_path / "x.sock"))
    assert control.socket_path() == tmp_path / "x.sock"
    assert ControlClient().path == tmp_path / "x.sock"
    monkeypatch.delenv("MXKNOCK_SOCKET")
    assert control.socket_path() == control.DEFAULT_SOCKET


@pytest.mark.parametrize("bad", ["60", -1, 0, 7200, True])
def test_apply_refuses_a_bad_confirm_within_before_touching_anything(tmp_path, bad):
    from appliance import config as config_module
    from appliance.engine import Engine

    engine = Engine(tmp_path / "mxknock.yaml")
    # _put_in_force would need root and a kernel: it must never be reached.
    engine._put_in_force = lambda *a, **k: pytest.fail("applied despite a bad confirm_within")
    with pytest.raises(ConfigError) as info:
        engine.apply_text(config_module.default_text(), confirm_within=bad)
    assert info.value.errors[0].field == "confirm_within"
