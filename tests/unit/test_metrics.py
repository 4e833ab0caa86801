"""Prometheus metrics: the text format (parsed strictly here), the CLI's `metrics` and the
HTTP server, served over Unix sockets (no network) against a fake mxknockd."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance import cli, metrics, metrics_server, status
from appliance.control import ControlClient

REPO = Path(__file__).resolve().parents[2]

# ---- a strict parser for the text exposition format 0.0.4 ---------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE = r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)"
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>{_VALUE})$")
_PAIR = re.compile(rf'(?P<key>{_LABEL})="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"(?P<sep>,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Family:
    name: str
    type: str | None = None
    help: str | None = None
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def value(self, **labels: str) -> float:
        return self.samples[tuple(sorted(labels.items()))]

    def by(self, label: str) -> dict[str, float]:
        return {dict(key)[label]: value for key, value in self.samples.items()}


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        assert match, f"bad labels at {text[position:]!r}"
        assert match["key"] not in labels, f"label {match['key']} twice"
        labels[match["key"]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m[0]], match["value"])
        position = match.end()
    return labels


def parse_exposition(text: str) -> dict[str, Family]:
    """Every line well-formed, HELP and TYPE at most once per name and before its samples,
    a family's samples together, no series twice, counters named *_total."""
    assert text.endswith("\n"), "the last line must end with a newline"
    families: dict[str, Family] = {}
    finished: set[str] = set()
    current: str | None = None
    for line in text[:-1].split("\n"):
        assert line == line.strip() and line, f"blank or padded line {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                kind, name = parts[1], parts[2]
                assert re.fullmatch(_NAME, name), line
                assert name not in finished, f"{name}: metadata after another family"
                family = families.setdefault(name, Family(name))
                assert not family.samples, f"{kind} for {name} after its samples"
                if kind == "HELP":
                    assert family.help is None, f"HELP for {name} twice"
                    assert len(parts) == 4 and parts[3], f"empty HELP for {name}"
                    assert not re.search(r"\\[^\\n]", parts[3]), f"bad escape in HELP {parts[3]!r}"
                    family.help = parts[3]
                else:
                    assert family.type is None, f"TYPE for {name} twice"
                    assert len(parts) == 4 and parts[3] in TYPES, line
                    family.type = parts[3]
                if current is not None and current != name:
                    finished.add(current)
                current = name
            continue  # any other comment is ignored by Prometheus
        match = _SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        name = match["name"]
        assert name in families, f"{name}: sample before its HELP and TYPE"
        assert name not in finished, f"{name}: samples not together"
        if current is not None and current != name:
            finished.add(current)
        current = name
        family = families[name]
        key = tuple(sorted(parse_labels(match["labels"] or "").items()))
        assert key not in family.samples, f"series {line!r} twice"
        family.samples[key] = float(match["value"])
    for family in families.values():
        assert family.help and family.type, f"{family.name}: HELP and TYPE both needed"
        assert family.name.startswith("mxknock_"), family.name
        if family.type == "counter":
            assert family.name.endswith("_total"), f"counter {family.name} must end in _total"
        else:
            assert not family.name.endswith("_total"), f"{family.name} ends in _total but is a {family.type}"
    return families


def test_the_parser_itself_is_strict() -> None:
    good = '# HELP mxknock_a an "a"\n# TYPE mxknock_a gauge\nmxknock_a{x="q\\"\\\\\\n"} 1\n'
    assert parse_exposition(good)["mxknock_a"].value(x='q"\\\n') == 1
    for bad in (
        "mxknock_a 1\n",  # no metadata
        "# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a 1",  # no final newline
        '# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a{x="a\nb"} 1\n',  # raw newline
        '# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a{x="\\t"} 1\n',  # unknown escape
        "# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a 1\nmxknock_a 2\n",  # same series twice
        "# HELP mxknock_a a\n# TYPE mxknock_a counter\nmxknock_a 1\n",  # counter without _total
        "# HELP mxknock_a a\n# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a 1\n",
        "# HELP mxknock_a a\n# TYPE mxknock_a gauge\nmxknock_a one\n",
    ):
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# ---- render --------------------------------------------------------------------------------------


def full_status(status_result: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A healthy dual-stack appliance with a management address and a pending change."""
    reply = status_result(
        "warning",
        warnings=["knock list mxknock4-32 is full", "management gateway 192.0.2.1 has no route"],
        pending={"seconds_left": 42.4},
        trusted={"ipv4": 2, "ipv6": 1, "total": 3},
        bridge={
            "name": "br0",
            "present": True,
            "up": True,
            "nf_call_iptables": True,
            "nf_call_ip6tables": True,
            "sysctl_iptables": True,
            "sysctl_ip6tables": False,
            "ports": [
                {"name": "eth0", "present": True, "enslaved": True, "up": True, "carrier": True},
                {"name": "eth1", "present": True, "enslaved": True, "up": True, "carrier": False},
            ],
            "filtering": False,
            "forwarding": True,
        },
        management={
            "addresses": [
                {"address": "192.0.2.5/24", "tentative": False, "dad_failed": False},
                {"address": "2001:db8::5/64", "tentative": True, "dad_failed": False},
                {"address": "fe80::1/64", "tentative": False, "dad_failed": True},
            ],
            "gateways": [],
            "ssh": False,
            "metrics": True,
            "metrics_port": 9425,
            "allow": [],
        },
    )
    reply["knock_lists"].append(
        {
            "name": "mxknock6-128",
            "exists": True,
            "entries": 0,
            "live": 0,
            "capacity": 100,
            "window": 4000,
            "oldest_age": None,
            "evicting": False,
        }
    )
    reply["knock_lists"][0].update(evicting=True, oldest_age=3725.5, entries=100, live=100)
    return reply


def unconfigured_status() -> dict[str, Any]:
    """What Engine.status() says before any config is applied."""
    zero = {"ipv4": 0, "ipv6": 0, "total": 0}
    return {
        "health": "critical",
        "problems": ["no configuration yet: run the console's setup or `mxknock apply FILE`"],
        "warnings": [],
        "config_path": "/etc/mxknock/mxknock.yaml",
        "config": None,
        "filtering_verified": False,
        "bridge": None,
        "counters": {name: dict(zero) for name in status.COUNTERS},
        "knock_lists": [],
        "trusted": dict(zero),
        "management": None,
        "pending": None,
    }


def test_render_full_status(status_result) -> None:
    reply = full_status(status_result)
    m = parse_exposition(metrics.render(reply))
    assert m["mxknock_up"].value() == 1
    assert m["mxknock_health"].by("state") == {"ok": 0, "warning": 1, "critical": 0}
    assert m["mxknock_problems"].value() == 0 and m["mxknock_warnings"].value() == 2
    assert m["mxknock_configured"].value() == 1
    assert m["mxknock_filtering_verified"].value() == 1
    assert m["mxknock_mode_info"].samples == {(("mode", "unlisting"), ("window", "4000")): 1}
    assert m["mxknock_window_seconds"].value() == 4000
    assert m["mxknock_pending_change"].value() == 1
    assert m["mxknock_pending_change_seconds_left"].value() == 42.4

    connections = m["mxknock_connections_total"]
    assert connections.type == "counter"
    assert connections.value(kind="knocks", family="ipv4") == 7
    assert connections.value(kind="knocks", family="ipv6") == 3
    assert connections.value(kind="refused", family="ipv4") == 40
    # Every counter of the daemon, per family and never as a "total" family.
    for kind, by_family in reply["counters"].items():
        for family in ("ipv4", "ipv6"):
            assert connections.value(kind=kind, family=family) == by_family[family]
    assert {dict(k)["family"] for k in connections.samples} == {"ipv4", "ipv6"}
    assert {dict(k)["kind"] for k in connections.samples} == set(status.COUNTERS)
    assert set(metrics.COUNTER_KINDS) == set(status.COUNTERS)  # kept in step by hand

    assert m["mxknock_knock_list_entries"].by("list") == {"mxknock4-32": 100, "mxknock6-128": 0}
    assert m["mxknock_knock_list_live_entries"].by("list") == {"mxknock4-32": 100, "mxknock6-128": 0}
    assert m["mxknock_knock_list_capacity"].by("list") == {"mxknock4-32": 100, "mxknock6-128": 100}
    assert m["mxknock_knock_list_exists"].by("list") == {"mxknock4-32": 1, "mxknock6-128": 1}
    assert m["mxknock_knock_list_evicting"].by("list") == {"mxknock4-32": 1, "mxknock6-128": 0}
    # An empty list has no oldest knock: no sample rather than a made-up age.
    assert m["mxknock_knock_list_oldest_age_seconds"].by("list") == {"mxknock4-32": 3725.5}

    assert m["mxknock_trusted_senders"].by("family") == {"ipv4": 2, "ipv6": 1}

    for name, value in (("present", 1), ("up", 1), ("forwarding", 1), ("filtering", 0)):
        assert m[f"mxknock_bridge_{name}"].samples == {(("bridge", "br0"),): value}
    assert m["mxknock_bridge_netfilter"].by("setting") == {
        "nf_call_iptables": 1,
        "nf_call_ip6tables": 1,
        "sysctl_iptables": 1,
        "sysctl_ip6tables": 0,
    }
    assert m["mxknock_bridge_port_up"].by("port") == {"eth0": 1, "eth1": 1}
    assert m["mxknock_bridge_port_carrier"].by("port") == {"eth0": 1, "eth1": 0}
    assert m["mxknock_bridge_port_enslaved"].value(bridge="br0", port="eth1") == 1

    assert m["mxknock_management_configured"].value() == 1
    assert m["mxknock_management_address_usable"].by("address") == {
        "192.0.2.5/24": 1,
        "2001:db8::5/64": 0,
        "fe80::1/64": 0,
    }
    assert m["mxknock_management_address_tentative"].by("address")["2001:db8::5/64"] == 1
    assert m["mxknock_management_address_dad_failed"].by("address")["fe80::1/64"] == 1
    assert m["mxknock_management_metrics_enabled"].value() == 1
    assert m["mxknock_management_ssh_enabled"].value() == 0
    assert all(f.help for f in m.values())


@pytest.mark.parametrize("health", ["ok", "warning", "critical", "bogus"])
def test_health_is_a_state_set(status_result, health) -> None:
    states = parse_exposition(metrics.render(status_result(health)))["mxknock_health"].by("state")
    assert states == {s: float(s == health) for s in ("ok", "warning", "critical")}


def test_render_unconfigured_status() -> None:
    text = metrics.render(unconfigured_status())
    m = parse_exposition(text)
    assert m["mxknock_up"].value() == 1
    assert m["mxknock_health"].value(state="critical") == 1
    assert m["mxknock_configured"].value() == 0 and m["mxknock_problems"].value() == 1
    assert m["mxknock_pending_change_seconds_left"].value() == 0
    assert m["mxknock_trusted_senders"].by("family") == {"ipv4": 0, "ipv6": 0}
    assert m["mxknock_management_configured"].value() == 0
    assert m["mxknock_connections_total"].value(kind="knocks", family="ipv4") == 0
    # Nothing to say about a bridge, knock lists or a mode that are not there, and no empty families.
    for absent in ("mxknock_mode_info", "mxknock_bridge_forwarding", "mxknock_knock_list_entries"):
        assert absent not in m
    assert "# TYPE mxknock_bridge_up" not in text


def test_render_survives_a_sparse_status() -> None:
    """An older (or newer) daemon may leave keys out, or fail to read the kernel's counters."""
    m = parse_exposition(metrics.render({"health": "ok", "counters": {"knocks": {"total": 0}}}))
    assert m["mxknock_health"].value(state="ok") == 1
    assert "mxknock_connections_total" not in m
    m = parse_exposition(metrics.render({"counters": {"new_kind": {"ipv4": 5, "total": 5}}}))
    assert m["mxknock_connections_total"].value(kind="new_kind", family="ipv4") == 5


def test_label_values_are_escaped(status_result) -> None:
    nasty = 'a"b\\c\nd}e,f="g'
    reply = status_result("ok")
    reply["knock_lists"][0]["name"] = nasty
    reply["config"]["mode"] = "un\\listing\n"
    text = metrics.render(reply)
    assert 'list="a\\"b\\\\c\\nd}e,f=\\"g"' in text
    m = parse_exposition(text)
    assert m["mxknock_knock_list_entries"].by("list") == {nasty: 5}
    assert m["mxknock_mode_info"].samples == {(("mode", "un\\listing\n"), ("window", "4000")): 1}


def test_values_are_formatted_for_prometheus() -> None:
    assert [metrics.format_value(v) for v in (True, False, 7, 4100.0, 42.4, 1e20)] == [
        "1",
        "0",
        "7",
        "4100",
        "42.4",
        "1e+20",
    ]
    assert metrics.format_value(float("nan")) == "NaN"
    assert metrics.format_value(math.inf) == "+Inf" and metrics.format_value(-math.inf) == "-Inf"
    assert metrics.escape_help('back\\slash\nnew "quoted"') == 'back\\\\slash\\nnew "quoted"'


def test_render_unreachable() -> None:
    text = metrics.render_unreachable("mxknockd is not running\n(no socket at /run/mxknock/control.sock)")
    m = parse_exposition(text)
    assert list(m) == ["mxknock_up"] and m["mxknock_up"].value() == 0
    assert text.startswith("# mxknockd did not answer: mxknockd is not running (no socket")
    assert parse_exposition(metrics.render_unreachable(""))["mxknock_up"].value() == 0


def test_metrics_module_needs_only_the_standard_library() -> None:
    probe = (
        "import sys, json; import appliance.metrics; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('yaml', 'pyroute2', 'iptc', 'dns', 'textual') or m.startswith('appliance.'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["appliance.metrics"]


# ---- the CLI -------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_metrics(capsys, serve, status_result) -> None:
    reply = full_status(status_result)
    path = serve({"status": lambda args: reply})
    code, out, err = run_cli(capsys, "--socket", str(path), "metrics")
    assert (code, err) == (cli.EXIT_OK, "")
    assert out == metrics.render(reply)
    # Health is in the metrics, not in the exit code: a textfile job must not fail on a warning.
    assert parse_exposition(out)["mxknock_health"].value(state="warning") == 1


def test_cli_metrics_json(capsys, serve) -> None:
    path = serve({"status": lambda args: unconfigured_status()})
    code, out, _ = run_cli(capsys, "--json", "--socket", str(path), "metrics")
    assert code == cli.EXIT_OK
    assert json.loads(out) == {"metrics": metrics.render(unconfigured_status())}


def test_cli_metrics_without_daemon_still_says_up_0(capsys, sock_dir) -> None:
    code, out, err = run_cli(capsys, "--socket", str(sock_dir / "nobody.sock"), "metrics")
    assert code == cli.EXIT_UNREACHABLE
    assert parse_exposition(out)["mxknock_up"].value() == 0
    assert "mxknockd is not running" in err


def test_cli_metrics_output_file(capsys, serve, sock_dir, tmp_path) -> None:
    target = tmp_path / "mxknock.prom"
    path = serve({"status": lambda args: unconfigured_status()})
    code, out, err = run_cli(capsys, "--socket", str(path), "metrics", "--output", str(target))
    assert (code, out, err) == (cli.EXIT_OK, "", "")
    assert target.read_text() == metrics.render(unconfigured_status())
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    # Unreachable: the file says so (up 0) and the exit code too.
    code, _, _ = run_cli(capsys, "--socket", str(sock_dir / "nobody.sock"), "metrics", "--output", str(target))
    assert code == cli.EXIT_UNREACHABLE
    assert parse_exposition(target.read_text())["mxknock_up"].value() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mxknock.prom"]  # no temporary files left
    code, _, err = run_cli(capsys, "--socket", str(path), "metrics", "--output", str(tmp_path / "no" / "x.prom"))
    assert code == cli.EXIT_FAILED and "cannot write" in err


def test_cli_metrics_daemon_refusal_is_a_failure(capsys, serve) -> None:
    def broken(args):
        raise RuntimeError("iptables exploded")

    path = serve({"status": broken})
    code, out, err = run_cli(capsys, "--socket", str(path), "metrics")
    assert code == cli.EXIT_FAILED and out == "" and "iptables exploded" in err


# ---- the HTTP server, on Unix sockets --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::]:9425", ("::", 9425)),
        ("[2001:db8::5]:8080", ("2001:db8::5", 8080)),
        ("[::1]", ("::1", 9425)),
        ("0.0.0.0:9425", ("0.0.0.0", 9425)),
        ("192.0.2.5:1", ("192.0.2.5", 1)),
        ("localhost:9425", ("localhost", 9425)),
        (":9425", ("", 9425)),
        ("9425", ("", 9425)),
    ],
)
def test_parse_listen(text, expected) -> None:
    assert metrics_server.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["::1:9425", "[::1", "[::1]9425", "host:port", "0.0.0.0:70000", "[::]:-1"])
def test_parse_listen_refuses(text) -> None:
    with pytest.raises(ValueError):
        metrics_server.parse_listen(text)


def test_inherited_socket_only_for_us() -> None:
    assert metrics_server.inherited_socket({}) is None
    assert metrics_server.inherited_socket({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) is None
    assert metrics_server.inherited_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) is None
    assert metrics_server.inherited_socket({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) is None


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.unix_path))


def request(path: Path, method: str, url: str) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, url)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def http_server(sock_dir: Path) -> Iterator[Callable[[Path], Path]]:
    """A MetricsServer on an inherited (Unix) listening socket, as systemd would pass one."""
    servers: list[metrics_server.MetricsServer] = []

    def start(control_path: Path) -> Path:
        path = sock_dir / f"http{len(servers)}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen()
        server = metrics_server.MetricsServer(None, ControlClient(control_path, timeout=2.0), inherited=listener)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_server_routes(http_server, serve, status_result) -> None:
    reply = full_status(status_result)
    path = http_server(serve({"status": lambda args: reply}))

    code, headers, body = request(path, "GET", "/metrics")
    assert code == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    assert text.startswith(metrics.render(reply))
    m = parse_exposition(text)
    assert m["mxknock_up"].value() == 1 and m["mxknock_scrape_duration_seconds"].value() >= 0
    assert m["mxknock_connections_total"].value(kind="refused", family="ipv4") == 40

    assert request(path, "GET", "/metrics?name[]=mxknock_up")[0] == 200
    code, headers, body = request(path, "HEAD", "/metrics")
    assert (code, body) == (200, b"") and int(headers["content-length"]) > 0
    code, _, body = request(path, "GET", "/")
    assert code == 200 and b"/metrics" in body
    code, _, body = request(path, "GET", "/nope")
    assert code == 404 and b"/metrics" in body
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"):
        code, headers, _ = request(path, method, "/metrics")
        assert (code, headers.get("allow")) == (405, "GET, HEAD"), method
    assert "python" not in headers["server"].lower()

    # HTTP/1.0 (one request, then the server closes), as a plain socket script would ask.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(str(path))
        raw.sendall(b"GET /metrics HTTP/1.0\r\nHost: mxknock\r\n\r\n")
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"mxknock_up 1\n" in body


def test_server_keeps_the_connection_for_the_next_scrape(http_server, serve, status_result, monkeypatch) -> None:
    monkeypatch.setattr(metrics_server, "STATUS_LIFETIME", 0.3)
    calls = []
    path = http_server(serve({"status": lambda args: calls.append(1) or status_result("ok")}))
    conn = UnixHTTPConnection(path)
    try:
        for _ in range(3):
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200 and b"mxknock_up 1" in response.read()
        # Scrapes within STATUS_LIFETIME share one status (was: every scrape asked the daemon,
        # so that a hundred scrapers loaded it); after it, the next scrape asks afresh.
        assert len(calls) == 1
        time.sleep(0.35)
        conn.request("GET", "/metrics")
        assert conn.getresponse().read()
        assert len(calls) == 2
    finally:
        conn.close()


def test_server_says_up_0_when_the_daemon_is_away(http_server, sock_dir) -> None:
    path = http_server(sock_dir / "nobody.sock")
    code, _, body = request(path, "GET", "/metrics")
    assert code == 200
    m = parse_exposition(body.decode())
    assert m["mxknock_up"].value() == 0 and set(m) == {"mxknock_up", "mxknock_scrape_duration_seconds"}
    assert b"# mxknockd did not answer: mxknockd is not running" in body


def test_server_says_up_0_on_a_garbled_status(http_server, serve) -> None:
    path = http_server(serve({"status": lambda args: ["not", "a", "dict"]}))
    code, _, body = request(path, "GET", "/metrics")
    assert code == 200 and parse_exposition(body.decode())["mxknock_up"].value() == 0
    assert b"bad status from mxknockd" in body


def test_server_says_up_0_when_the_daemon_hangs(http_server, sock_dir) -> None:
    # A daemon that takes the connection and never answers (the server waits 2 s: fixture).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:
        stuck.bind(str(sock_dir / "stuck.sock"))
        stuck.listen()
        path = http_server(sock_dir / "stuck.sock")
        started = time.monotonic()
        code, _, body = request(path, "GET", "/metrics")
        assert code == 200 and b"mxknock_up 0" in body and b"timed out" in body
        assert 1.5 < time.monotonic() - started < 5


def test_a_silent_client_is_dropped(http_server, sock_dir, monkeypatch) -> None:
    monkeypatch.setattr(metrics_server.MetricsHandler, "timeout", 0.3)
    path = http_server(sock_dir / "nobody.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.settimeout(5)
        silent.connect(str(path))
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < 3
    # ...while others are served meanwhile and after.
    assert request(path, "GET", "/")[0] == 200


def test_a_client_beyond_the_limit_takes_the_slot_of_one_without_a_request(http_server, sock_dir, monkeypatch) -> None:
    # Was: it waited until the idle one timed out, so idle or slowloris clients blinded scrapes.
    monkeypatch.setattr(metrics_server, "MAX_CLIENTS", 1)
    path = http_server(sock_dir / "nobody.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hog:
        hog.settimeout(5)
        hog.connect(str(path))
        hog.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
        time.sleep(metrics_server.EVICT_AFTER + 0.2)  # accepted: it holds the only slot, and has waited
        started = time.monotonic()
        assert request(path, "GET", "/")[0] == 200
        assert time.monotonic() - started < 1
        assert hog.recv(100) == b""  # closed to make room


def as_fd_3(fd: int) -> None:
    """In the child: the listening socket as fd 3, inherited across exec (dup2 clears close-on-exec)."""
    if fd == 3:
        os.set_inheritable(3, True)
    else:
        os.dup2(fd, 3)


def test_main_with_a_socket_passed_like_systemd_does(serve, status_result, sock_dir) -> None:
    """LISTEN_PID/LISTEN_FDS and fd 3, set up the way systemd (or systemd-socket-activate) does."""
    control = serve({"status": lambda args: status_result("ok")})
    http_path = sock_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(http_path))
    listener.listen()
    script = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
    argv = ["sh", "-c", script, "sh", sys.executable, "-m", "appliance.metrics_server", "--socket", str(control)]
    argv += ["--listen", "[::]:1"]  # ignored: the passed socket wins
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: as_fd_3(listener.fileno()),
        close_fds=False,  # fd 3 must survive; everything else Python opens is close-on-exec anyway
    )
    listener.close()
    try:
        code, _, body = request(http_path, "GET", "/metrics")
        assert code == 200
        assert parse_exposition(body.decode())["mxknock_health"].value(state="ok") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    assert "the socket systemd passed" in err.decode()


def test_main_refuses_a_bad_listen_address() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "appliance.metrics_server", "--listen", "::1:9425"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")},
    )
    assert done.returncode == 2 and "brackets" in done.stderr
