"""Property-based fuzzing of the control API (hypothesis): arbitrary lines, arbitrary JSON,
every command with arbitrary arguments. The property: a JSON reply with ok true or false
within a second, never a traceback in the log, never a dropped connection.

The handlers are the daemon's own (appliance.daemon.handlers) over a real Engine with no
config (nothing in force). Two stubs keep the kernel out: Engine._put_in_force (reached
only by `apply` with a valid config) refuses with an EngineError, and netfilter.read_family
(reached by `status`) fails as a kernel without iptables would. Every other command refuses
or answers without touching the kernel when there is no config.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import daemon, netfilter
from appliance.control import CONTROL_LIMITS, STATUS_LIMITS, ControlServer
from appliance.engine import Engine, EngineError

# As many examples as the profile loaded by conftest.py says: bounded in CI, long in `make fuzz`.
N = settings.default.max_examples
EXAMPLES = settings(
    max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
COMMANDS = sorted(daemon.handlers(Engine(Path("/nonexistent/mxknock.yaml"))))
ARG_NAMES = sorted({name for spec in daemon.ARGS.values() for name in spec} | {"x"})
YAML_SAMPLES = ["mode: unlisting\n", "mx1: [192.0.2.1]\nmx2: [192.0.2.2]\n", "a: &x [*x]\n", "[[[[]]]]", "? [a]\n: 1"]
yamlish = st.one_of(st.text(max_size=200), st.sampled_from(YAML_SAMPLES))
arg_values = st.one_of(json_values, yamlish, st.lists(st.text(max_size=45), max_size=5))


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture
def api(tmp_path: Path, sock_dir: Path, monkeypatch):
    engine = Engine(tmp_path / "mxknock.yaml")

    def no_kernel(*args: Any, **kwargs: Any) -> None:
        raise EngineError("stub: no kernel in the unit tests")

    def no_iptables(family: int) -> Any:
        raise OSError("stub: no iptables in the unit tests")

    engine._put_in_force = no_kernel  # type: ignore[method-assign]
    monkeypatch.setattr(netfilter, "read_family", no_iptables)
    from appliance.engine import EngineError as RoutineError

    commands = daemon.handlers(engine)
    control = ControlServer(sock_dir / "c.sock", commands, limits=CONTROL_LIMITS, routine_errors=(RoutineError,))
    status = ControlServer(
        sock_dir / "s.sock", daemon.status_handlers(commands), limits=STATUS_LIMITS, routine_errors=(RoutineError,)
    )
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    try:
        yield control, status, tracebacks
    finally:
        logging.getLogger().removeHandler(tracebacks)
        for srv in (control, status):
            srv.server_close()
            srv.path.unlink(missing_ok=True)


def answered(api: Any, line: bytes) -> None:
    for srv in api[:2]:
        started = time.monotonic()
        reply = srv.dispatch(line)
        assert time.monotonic() - started < 1.0, line[:200]
        assert isinstance(reply, dict) and reply["ok"] in (True, False), reply
        assert ("result" in reply) if reply["ok"] else isinstance(reply["error"], str)
        json.dumps(reply)
    assert not api[2].records, [r.getMessage() for r in api[2].records]


@EXAMPLES
@given(line=st.binary(max_size=300))
def test_any_bytes(api, line) -> None:
    answered(api, line + b"\n")


@EXAMPLES
@given(request=json_values)
def test_any_json(api, request) -> None:
    answered(api, json.dumps(request).encode() + b"\n")


@EXAMPLES
@given(
    command=st.sampled_from(COMMANDS),
    args=st.one_of(json_values, st.dictionaries(st.sampled_from(ARG_NAMES), arg_values, max_size=3)),
)
def test_every_command_with_any_arguments(api, command, args) -> None:
    answered(api, json.dumps({"command": command, "args": args}).encode() + b"\n")


@EXAMPLES
@given(depth=st.integers(min_value=1, max_value=200_000), opener=st.sampled_from([b"[", b'{"a":']))
def test_any_nesting(api, depth, opener) -> None:
    closer = b"]" if opener == b"[" else b"}"
    answered(api, opener * depth + closer * depth + b"\n")


@settings(max_examples=max(N // 5, 10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=5))
def test_a_real_socket_answers_every_line_and_keeps_the_connection(api, lines) -> None:
    control = api[0]
    thread = threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(control.path))
            reader = sock.makefile("rb")
            for line in lines:
                sock.sendall(line + b"\n")
                reply = json.loads(reader.readline())
                assert reply["ok"] in (True, False)
            sock.sendall(b'{"command": "ping"}\n')
            assert json.loads(reader.readline()) == {"ok": True, "result": {"pong": True}}
    finally:
        control.shutdown()
        thread.join(5)
    assert not api[2].records, [r.getMessage() for r in api[2].records]


# What the fuzzer found in the config loader (issue 10 item 1): these escaped parse_yaml as
# ValueError, so `check` and `apply` answered them as internal errors with a traceback.
@pytest.mark.parametrize(
    "text",
    ["a: " + "1" * 5000, "a: !!timestamp 2020-99-99", "x: !!int abc", "a: !!float abc"],
    ids=["int-4300-digits", "bad-timestamp", "int-tag", "float-tag"],
)
def test_config_loader_errors_are_field_named_refusals(api, text) -> None:
    for command in ("check", "apply"):
        reply = api[0].dispatch(json.dumps({"command": command, "args": {"yaml": text}}).encode())
        assert reply["ok"] is False and reply["error"].startswith("config refused:"), reply
    assert not api[2].records
