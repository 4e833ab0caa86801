"""The control API: request dispatch, and a real Unix socket round trip with the client."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from appliance import control
from appliance.config import ConfigError, FieldError
from appliance.control import ControlClient, ControlError, ControlServer, SocketLimits


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


def test_an_error_from_inside_a_handler_is_a_bug_with_a_traceback(server, caplog):
    # Arguments are checked per command before the engine is called (daemon.check_args), so a
    # KeyError from inside is a bug: logged with its traceback, not answered as "bad arguments".
    with caplog.at_level(logging.ERROR, logger="appliance.control"):
        reply = dispatch(server, {"command": "need_key", "args": {}})
    assert reply == {"ok": False, "error": "'entries'"}
    assert caplog.records[0].exc_info is not None


def test_dispatch_handler_exception_does_not_propagate(server, caplog):
    with caplog.at_level(logging.ERROR, logger="appliance.control"):
        reply = dispatch(server, {"command": "explode"})
    assert reply == {"ok": False, "error": "the kernel said no"}
    assert "command explode failed" in caplog.text
    assert dispatch(server, {"command": "ping"})["ok"] is True  # still serving


def test_dispatch_request_too_large(sock_dir):
    srv = ControlServer(sock_dir / "small.sock", HANDLERS, limits=SocketLimits(2, 32, 5.0))
    try:
        reply = dispatch(srv, {"command": "echo", "args": {"x": "y" * 100}})
    finally:
        srv.server_close()
    assert reply["ok"] is False
    assert "larger than 32 bytes" in reply["error"]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_refused_clearly(server, depth):
    for line in (
        b"[" * depth + b"]" * depth,
        b'{"command": "ping", "args": {"a": ' + b"[" * depth + b"]" * depth + b"}}",
    ):
        reply = dispatch(server, line)
        assert reply == {"ok": False, "error": "request is nested too deeply"}


def test_a_routine_refusal_is_one_log_line(sock_dir, caplog):
    from appliance.engine import EngineError

    def nothing_pending(args):
        raise EngineError("nothing is waiting for confirmation")

    srv = ControlServer(sock_dir / "r.sock", {"confirm": nothing_pending}, routine_errors=(EngineError,))
    try:
        with caplog.at_level(logging.INFO, logger="appliance.control"):
            reply = dispatch(srv, {"command": "confirm"})
    finally:
        srv.server_close()
    assert reply == {"ok": False, "error": "nothing is waiting for confirmation"}
    assert [r.getMessage() for r in caplog.records] == ["confirm refused: nothing is waiting for confirmation"]
    assert all(r.exc_info is None for r in caplog.records)


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


# ---- limits: what a local user can do to the sockets -------------------------------------------


@pytest.fixture
def serve_limited(sock_dir: Path):
    """A real serving ControlServer with the given limits (and options)."""
    servers: list[ControlServer] = []

    def start(handlers, limits: SocketLimits, **options) -> Path:
        path = sock_dir / f"limited{len(servers)}.sock"
        srv = ControlServer(path, handlers, limits=limits, **options)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(srv)
        return path

    yield start
    for srv in servers:
        srv.close()


def connect(path: Path, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize("sent", [b"", b'{"command": "pi'], ids=["idle", "half-line"])
def test_idle_and_half_line_clients_are_cut_after_the_timeout(serve_limited, sent):
    path = serve_limited(HANDLERS, SocketLimits(max_clients=4, max_line=4096, line_timeout=0.5))
    with connect(path) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        reply = read_all(sock)  # until the server closes
        took = time.monotonic() - started
    assert 0.4 < took < 3
    assert json.loads(reply) == {"ok": False, "error": "no whole request within 0.5 s: closed"}


def test_a_trickling_client_is_cut_too(serve_limited):
    # Slowloris: one byte every 0.1 s, each well within the timeout; the whole line must arrive in time.
    path = serve_limited(HANDLERS, SocketLimits(max_clients=4, max_line=4096, line_timeout=0.6))
    with connect(path) as sock:
        sock.setblocking(False)
        started, reply = time.monotonic(), b""
        while not reply and time.monotonic() - started < 5:
            try:
                reply = sock.recv(1000)
            except BlockingIOError:
                sock.send(b" ")
                time.sleep(0.1)
            except OSError:
                break
        took = time.monotonic() - started
    assert b"no whole request within 0.6 s" in reply
    assert 0.5 < took < 2


def test_a_client_that_keeps_asking_is_not_cut(serve_limited):
    path = serve_limited(HANDLERS, SocketLimits(max_clients=4, max_line=4096, line_timeout=0.5))
    with connect(path) as sock:
        reader = sock.makefile("rb")
        for _ in range(8):  # 1.6 s in all, each request within the timeout
            time.sleep(0.2)
            sock.sendall(b'{"command": "ping"}\n')
            assert json.loads(reader.readline())["ok"] is True


def test_clients_over_the_cap_are_refused_while_the_control_socket_answers(serve_limited):
    status = serve_limited(HANDLERS, SocketLimits(max_clients=3, max_line=4096, line_timeout=30))
    control = serve_limited(HANDLERS, SocketLimits(max_clients=2, max_line=4096, line_timeout=30))
    idle = [connect(status) for _ in range(3)]
    try:
        time.sleep(0.2)  # accepted, each holding a slot
        for _ in range(5):
            with connect(status) as extra:
                reply = json.loads(read_all(extra))
            assert reply["ok"] is False and "too many connections" in reply["error"] and "3 at once" in reply["error"]
        started = time.monotonic()
        assert ControlClient(control, timeout=5).call("ping") == {"pong": True}
        assert time.monotonic() - started < 0.5
    finally:
        for sock in idle:
            sock.close()
    # Slots come back when clients leave.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert ControlClient(status, timeout=5).call("ping") == {"pong": True}
            break
        except ControlError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_long_line_on_a_small_socket_is_refused_and_closed(serve_limited):
    path = serve_limited(HANDLERS, SocketLimits(max_clients=2, max_line=4096, line_timeout=30))
    with connect(path) as sock:
        try:
            sock.sendall(b'{"command": "ping", "args": {"x": "' + b"y" * 200_000)
        except OSError:
            pass  # closed while we were still sending: that is the point
        reply = read_all(sock)
    assert json.loads(reply) == {"ok": False, "error": "request larger than 4096 bytes: closed"}
    # A line that fits, with its newline as the 4097th byte, is served.
    with connect(path) as sock:
        line = b'{"command": "echo", "args": {"x": "'
        line += b"y" * (4096 - len(line) - 3) + b'"}}\n'
        assert len(line) == 4097
        sock.sendall(line)
        assert json.loads(sock.makefile("rb").readline())["ok"] is True


SERVER_SCRIPT = """
import sys, threading, time
from pathlib import Path
from appliance.control import ControlServer, STATUS_LIMITS
srv = ControlServer(Path(sys.argv[1]), {"ping": lambda a: {"pong": True}}, limits=STATUS_LIMITS)
print("ready", flush=True)
srv.serve_forever(poll_interval=0.05)
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_unterminated_lines_do_not_grow_the_server(sock_dir):
    """8 clients each sending 16 MiB without a newline: the status socket's server stays small."""
    import subprocess
    import sys

    path = sock_dir / "status.sock"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(path)], cwd=repo, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        before = rss_kib(proc.pid)
        chunk = b"[" * (1024 * 1024)
        socks = [connect(path, timeout=10) for _ in range(8)]
        peak = before
        for sock in socks:
            try:
                for _ in range(16):
                    sock.sendall(chunk)
            except OSError:
                pass  # refused and closed early
            peak = max(peak, rss_kib(proc.pid))
        replies = [read_all(sock) for sock in socks]
        peak = max(peak, rss_kib(proc.pid))
        for sock in socks:
            sock.close()
        errors = [json.loads(r)["error"] for r in replies]
        # Cut at 4 KiB, or (over the per-user cap of 4 at the time) refused at once.
        assert all(e.startswith(("request larger than 4096 bytes", "too many connections")) for e in errors), errors
        assert peak - before < 8 * 1024, f"RSS grew from {before} KiB to {peak} KiB"
    finally:
        proc.kill()
        proc.wait(10)


def test_an_apply_whose_answer_cannot_be_delivered_is_undone(serve_limited):
    undone = []
    applied = threading.Event()

    def slow_apply(args):
        time.sleep(0.3)  # the client gives up meanwhile
        applied.set()
        return {"applied": True, "confirm_within": args.get("confirm_within")}

    path = serve_limited(
        {"apply": slow_apply},
        SocketLimits(max_clients=2, max_line=4096, line_timeout=5),
        on_undelivered=lambda command, args, result: undone.append((command, args, result)),
    )
    with connect(path) as sock:
        sock.sendall(b'{"command": "apply", "args": {"yaml": "x", "confirm_within": 60}}\n')
    assert applied.wait(5)
    deadline = time.monotonic() + 5
    while not undone and time.monotonic() < deadline:
        time.sleep(0.02)
    assert undone == [("apply", {"yaml": "x", "confirm_within": 60}, {"applied": True, "confirm_within": 60})]


def test_the_client_waits_for_a_slow_change_but_not_for_a_slow_status(serve_limited):
    def slow(args):
        time.sleep(1.0)
        return {"done": True}

    path = serve_limited({"apply": slow, "status": slow}, SocketLimits(max_clients=4, max_line=4096, line_timeout=5))
    client = ControlClient(path, timeout=0.4)
    assert client.call("apply", yaml="x") == {"done": True}  # not "timed out" while the daemon applies
    with pytest.raises(ControlError) as info:
        client.call("status")
    assert "timed out" in str(info.value)


# ---- the daemon's wiring: argument checks, the shared status, undoing an undelivered apply ----


@pytest.mark.parametrize(
    ("command", "args", "field"),
    [
        ("apply", {}, "args.yaml"),
        ("apply", {"yaml": 5}, "args.yaml"),
        ("apply", {"yaml": "x", "confirm_within": "60"}, "args.confirm_within"),
        ("apply", {"yaml": "x", "confirm_within": True}, "args.confirm_within"),
        ("whitelist_add", {"entries": "192.0.2.1"}, "args.entries"),
        ("whitelist_add", {"entries": [1]}, "args.entries"),
        ("trusted_remove", {}, "args.entries"),
        ("status", {"verbose": True}, "args.verbose"),
    ],
)
def test_arguments_are_checked_by_name_before_the_engine(command, args, field):
    from appliance import daemon

    with pytest.raises(ConfigError) as info:
        daemon.check_args(command, args)
    assert [e.field for e in info.value.errors] == [field]


def test_good_arguments_pass():
    from appliance import daemon

    daemon.check_args("apply", {"yaml": "x", "confirm_within": None})
    daemon.check_args("apply", {"yaml": "x", "confirm_within": 60})
    daemon.check_args("whitelist_remove", {"entries": []})
    daemon.check_args("ping", {})


def test_a_status_flood_does_not_slow_root(sock_dir):
    """100 looping status readers against the daemon's wiring (status_handlers): root's change,
    which needs the engine's lock as status does, still answers within half a second."""
    import subprocess
    import sys

    from appliance import daemon
    from appliance.control import CONTROL_LIMITS, STATUS_LIMITS

    engine_lock = threading.RLock()
    statuses = []

    def status(args):
        with engine_lock:  # as Engine.status(): kernel reads under the engine's lock
            statuses.append(1)
            time.sleep(0.02)
            return {"health": "ok"}

    def change(args):
        with engine_lock:
            return {"whitelist": args["entries"]}

    commands = {"ping": lambda a: {"pong": True}, "status": status, "whitelist_add": change}
    control = ControlServer(sock_dir / "c.sock", commands, limits=CONTROL_LIMITS)
    status_srv = ControlServer(sock_dir / "s.sock", daemon.status_handlers(commands), mode=0o666, limits=STATUS_LIMITS)
    for srv in (control, status_srv):
        srv.serve_in_thread()
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.lab.status_flood", str(status_srv.path), "100", "4"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert flood.stdout.readline() == b"flooding\n"
        time.sleep(0.5)
        client = ControlClient(control.path, timeout=10)
        latencies = []
        for i in range(10):
            started = time.monotonic()
            assert client.call("whitelist_add", entries=[f"192.0.2.{i}"]) == {"whitelist": [f"192.0.2.{i}"]}
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        assert max(latencies) < 0.5, latencies
    finally:
        flood.wait(30)
        control.close()
        status_srv.close()
    assert len(statuses) < 4 / daemon.STATUS_LIFETIME + 3  # about one status a second, not hundreds


def test_an_undelivered_apply_with_confirm_within_is_rolled_back():
    from appliance import daemon
    from appliance.engine import EngineError

    class Engine:  # only rollback() is called: a stand-in records it
        def __init__(self):
            self.rollbacks = 0

        def rollback(self):
            self.rollbacks += 1
            if self.rollbacks > 1:
                raise EngineError("nothing is waiting for confirmation")

    engine = Engine()
    undo = daemon.undo_undelivered(engine)
    undo("apply", {"yaml": "x"}, {"applied": True})  # saved for good: nothing to undo
    undo("status", {}, {})
    assert engine.rollbacks == 0
    undo("apply", {"yaml": "x", "confirm_within": 60}, {"applied": True})
    assert engine.rollbacks == 1
    undo("apply", {"yaml": "x", "confirm_within": 60}, {"applied": True})  # confirmed meanwhile: no error
    assert engine.rollbacks == 2


def test_apply_is_rolled_back_when_its_confirmation_timer_cannot_start(tmp_path, monkeypatch):
    """Under the unit's TasksMax a thread may not be had: the change must not stay unguarded."""
    from appliance import config as config_module
    from appliance import engine as engine_module
    from appliance.engine import Engine, EngineError

    engine = Engine(tmp_path / "mxknock.yaml")
    put = []
    engine._put_in_force = lambda config, **k: put.append(config)  # no kernel in unit tests
    engine._unconfigure = lambda: put.append(None)

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(engine_module.threading.Timer, "start", no_thread)
    with pytest.raises(EngineError) as info:
        engine.apply_text(config_module.default_text(), confirm_within=60)
    assert "rolled back" in str(info.value)
    assert engine.pending is None
    assert len(put) == 2 and put[1] is None  # applied, then back to "no config"
    assert not (tmp_path / "mxknock.yaml").exists()


IDLE_SCRIPT = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socks.append(s)
print("connected", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_one_user_cannot_take_every_status_connection(sock_dir):
    """A local user holding idle connections gets 4 of the status socket's 16: another user's
    reader (the metrics server's) is still served."""
    import subprocess
    import sys

    from appliance.control import STATUS_LIMITS

    path = sock_dir / "status.sock"
    os.chmod(sock_dir, 0o755)
    srv = ControlServer(path, HANDLERS, mode=0o666, limits=STATUS_LIMITS)
    srv.serve_in_thread()
    hog = subprocess.Popen(
        [shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", IDLE_SCRIPT, str(path), "40"],
        user=65534,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert hog.stdout.readline() == b"connected\n"
        time.sleep(0.3)
        assert srv._clients == 4 and srv._per_uid == {65534: 4}
        started = time.monotonic()
        assert ControlClient(path, timeout=5).call("ping") == {"pong": True}
        assert time.monotonic() - started < 0.5
    finally:
        hog.kill()
        hog.wait(10)
        srv.close()
