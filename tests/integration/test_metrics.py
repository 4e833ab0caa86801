"""Prometheus metrics over the management address: scraped from the sender's namespace
through the bridge, as a monitoring server on the LAN would, over IPv4 and IPv6."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import daemon, metrics_server
from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.unit.test_metrics import Family, parse_exposition

REPO = Path(__file__).resolve().parents[2]
PORT = 9425
MANAGEMENT_V4 = "192.0.2.5"  # free documentation addresses in the lab's subnet
MANAGEMENT_V6 = "2001:db8::5"
MANAGEMENT = {"address": [f"{MANAGEMENT_V4}/24", f"{MANAGEMENT_V6}/64"]}
URLS = (f"http://{MANAGEMENT_V4}:{PORT}/metrics", f"http://[{MANAGEMENT_V6}]:{PORT}/metrics")
NO_TRUST = {"enabled": False, "lifetime": 3110400}

# Runs in a lab namespace: one HTTP GET, the answer as JSON (errors too, never a traceback).
FETCH = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(json.dumps({"status": r.status, "type": r.headers["Content-Type"], "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "type": e.headers["Content-Type"], "body": e.read().decode()}))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""

# Runs in a lab namespace: one ICMP echo request (raw socket, we are root) -> "reply" or "timeout".
PING = r"""
import os, select, socket, struct, sys, time
dst, timeout = sys.argv[1], float(sys.argv[2])
v6 = ":" in dst
ident = os.getpid() & 0xFFFF
def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
if v6:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    packet = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"mxknock"  # the kernel sums ICMPv6
    want = 129
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"mxknock"
    packet = struct.pack("!BBHHH", 8, 0, checksum(header), ident, 1) + b"mxknock"
    want = 0
sock.sendto(packet, (dst, 0))
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    if not select.select([sock], [], [], left)[0]:
        break
    data = sock.recv(2048)
    icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
    if icmp[0] == want and struct.unpack("!H", icmp[4:6])[0] == ident:
        print("reply")
        sys.exit(0)
print("timeout")
"""


def fetch(lab: Lab, url: str, ns: str = "sender", timeout: float = 5.0) -> dict[str, Any]:
    done = lab.exec(ns, [sys.executable, "-c", FETCH, url, str(timeout)], timeout=timeout + 20)
    return json.loads(done.stdout)


def scrape(lab: Lab, url: str, ns: str = "sender") -> dict[str, Family]:
    answer = fetch(lab, url, ns)
    assert answer.get("status") == 200, answer
    assert answer["type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_exposition(answer["body"])


def ping(lab: Lab, address: str, timeout: float = 3.0) -> str:
    return lab.exec("sender", [sys.executable, "-c", PING, address, str(timeout)], timeout=timeout + 20).stdout.strip()


def wait_until(what: str, check: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({timeout} s) for {what}: last {result!r}")
        time.sleep(interval)


def management_ready(appliance: Appliance) -> bool:
    """Both management addresses on br0 and done with duplicate address detection."""
    management = appliance.status().get("management") or {}
    found = {a["address"]: a for a in management.get("addresses", [])}
    return all(
        address in found and not found[address]["tentative"] and not found[address]["dad_failed"]
        for address in MANAGEMENT["address"]
    )


class MetricsProcess:
    """The metrics server (or a launcher that execs it) in the fw namespace, killed at the end."""

    def __init__(self, lab: Lab, argv: list[str], log_path: Path):
        self.log_path = log_path
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns("fw"), *argv], stdout=log, stderr=log, cwd=REPO
            )

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture
def metrics_process(lab: Lab, appliance: Appliance) -> Iterator[Any]:
    started: list[MetricsProcess] = []

    def start(*launcher: str, listen: str | None = f"[::]:{PORT}") -> MetricsProcess:
        argv = [*launcher, sys.executable, "-m", "appliance.metrics_server", "--socket", str(appliance.status_socket)]
        argv += ["--listen", listen] if listen else []
        process = MetricsProcess(lab, argv, appliance.workdir / f"metrics{len(started)}.log")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            code = process.stop()
            if code not in (0, None, -15):
                print(process.log())


def wait_serving(lab: Lab, process: MetricsProcess, url: str, ns: str = "sender") -> None:
    def answered() -> bool:
        assert process.process.poll() is None, f"the metrics server exited:\n{process.log()}"
        return fetch(lab, url, ns, timeout=2.0).get("status") == 200

    wait_until(f"{url} to answer", answered, interval=0.2)


def counters(m: dict[str, Family]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for key, value in m["mxknock_connections_total"].samples.items():
        labels = dict(key)
        result.setdefault(labels["kind"], {})[labels["family"]] = int(value)
    return result


def without_totals(status_counters: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {kind: {f: n for f, n in c.items() if f != "total"} for kind, c in status_counters.items()}


def test_metrics_over_the_management_address(lab: Lab, appliance: Appliance, metrics_process) -> None:
    appliance.start(config_text(window=600, management={**MANAGEMENT, "metrics": True}))
    wait_until("the management addresses", lambda: management_ready(appliance))
    server = metrics_process()
    wait_serving(lab, server, URLS[0])

    before = {}
    for url in URLS:
        m = scrape(lab, url)
        assert m["mxknock_up"].value() == 1
        assert m["mxknock_health"].by("state") == {"ok": 1, "warning": 0, "critical": 0}, appliance.status()
        assert m["mxknock_filtering_verified"].value() == 1
        assert m["mxknock_mode_info"].samples == {(("mode", "unlisting"), ("window", "600")): 1}
        assert m["mxknock_bridge_forwarding"].value(bridge="br0") == 1
        assert m["mxknock_bridge_port_carrier"].by("port") == {"eth0": 1, "eth1": 1}
        assert set(m["mxknock_knock_list_entries"].by("list")) == {"mxknock4-32", "mxknock6-128"}
        usable = m["mxknock_management_address_usable"].by("address")
        assert usable[f"{MANAGEMENT_V4}/24"] == 1 and usable[f"{MANAGEMENT_V6}/64"] == 1
        assert m["mxknock_management_metrics_enabled"].value() == 1
        before = counters(m)
    assert before == without_totals(appliance.status()["counters"])

    # A sender knocks at mx1 and comes back to mx2, over IPv4 and IPv6; a bot tries mx2 straight away.
    assert lab.connect("sender", A.SENDER_V4, A.MX1_V4, 25) == "reset"
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "accepted"
    assert lab.connect("sender", A.SENDER_V6, A.MX1_V6, 25) == "reset"
    assert lab.connect("sender", A.SENDER_V6, A.MX2_V6, 25) == "accepted"
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"

    # Scrapes share one status for up to metrics_server.STATUS_LIFETIME, fetched from the status
    # socket, which shares its own for daemon.STATUS_LIFETIME: the first fresh one comes after both.
    time.sleep(metrics_server.STATUS_LIFETIME + daemon.STATUS_LIFETIME + 0.2)
    for url in URLS:
        m = scrape(lab, url)
        status = appliance.status()
        after = counters(m)
        assert after == without_totals(status["counters"])
        for family in ("ipv4", "ipv6"):
            assert after["knocks"][family] == before["knocks"][family] + 1
            assert after["after_knock"][family] == before["after_knock"][family] + 1
        assert after["refused"]["ipv4"] == before["refused"]["ipv4"] + 1
        assert after["refused"]["ipv6"] == before["refused"]["ipv6"]
        # Default trust: each handshake after a knock made the sender a proven sender.
        assert after["trust_earned"] == {"ipv4": 1, "ipv6": 1}
        assert (
            m["mxknock_trusted_senders"].by("family")
            == {"ipv4": 1, "ipv6": 1}
            == {f: status["trusted"][f] for f in ("ipv4", "ipv6")}
        )
        lists = {kl["name"]: kl for kl in status["knock_lists"]}
        assert m["mxknock_knock_list_entries"].by("list") == {name: kl["entries"] for name, kl in lists.items()}
        assert m["mxknock_knock_list_entries"].value(list="mxknock4-32") == 1
        assert m["mxknock_knock_list_live_entries"].value(list="mxknock6-128") == 1

    # The CLI prints the same text (for node_exporter's textfile collector).
    printed = appliance.cli("metrics")
    assert printed.returncode == 0, printed.stderr
    assert counters(parse_exposition(printed.stdout)) == counters(scrape(lab, URLS[0]))

    # The root of the site points to /metrics; anything else is not there.
    assert "/metrics" in fetch(lab, URLS[0].removesuffix("metrics"))["body"]
    assert fetch(lab, URLS[1].replace("/metrics", "/other"))["status"] == 404

    # With mxknockd gone the page still answers, with mxknock_up 0 for the alert.
    assert appliance.stop() == 0
    m = scrape(lab, URLS[1])
    assert m["mxknock_up"].value() == 0 and "mxknock_health" not in m
    assert server.process.poll() is None
    assert "mxknockd is not running" in server.log()


def test_metrics_off_drops_the_port_but_not_icmp(lab: Lab, appliance: Appliance, metrics_process) -> None:
    appliance.start(config_text(window=600, trust=NO_TRUST, management={**MANAGEMENT, "metrics": False}))
    wait_until("the management addresses", lambda: management_ready(appliance))
    server = metrics_process()
    # It listens, and answers inside the box (lo is not the bridge)...
    wait_serving(lab, server, f"http://127.0.0.1:{PORT}/metrics", ns="fw")
    assert scrape(lab, f"http://[::1]:{PORT}/metrics", ns="fw")["mxknock_management_metrics_enabled"].value() == 0

    # ...but from the LAN the port is dropped: no answer at all, not even a reset.
    assert lab.connect("sender", A.SENDER_V4, MANAGEMENT_V4, PORT, timeout=2.0) == "timeout"
    assert lab.connect("sender", A.SENDER_V6, MANAGEMENT_V6, PORT, timeout=2.0) == "timeout"
    assert "timed out" in fetch(lab, URLS[0], timeout=2.0).get("error", "")
    # The box itself is there: it answers ping on both addresses.
    assert ping(lab, MANAGEMENT_V4) == "reply"
    assert ping(lab, MANAGEMENT_V6) == "reply"
    for family in (4, 6):
        chain = [line for line in appliance.iptables_save(family).splitlines() if line.startswith("-A MXKNOCK-INPUT")]
        assert chain[-1].endswith("-j DROP") and not any(f"--dport {PORT}" in line for line in chain), chain

    # Switched on with an apply, the same running server is reachable.
    result = appliance.apply(config_text(window=600, trust=NO_TRUST, management={**MANAGEMENT, "metrics": True}))
    assert result.returncode == 0, result.stderr
    for url in URLS:
        assert scrape(lab, url)["mxknock_management_metrics_enabled"].value() == 1


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_socket_activation(lab: Lab, appliance: Appliance, metrics_process) -> None:
    appliance.start(config_text(window=600, trust=NO_TRUST, management={**MANAGEMENT, "metrics": True}))
    wait_until("the management addresses", lambda: management_ready(appliance))
    # systemd-socket-activate listens on [::]:9425 and execs the server with the socket as fd 3;
    # the server's own --listen (a port nothing opens) is ignored.
    tool = shutil.which("systemd-socket-activate")
    assert tool is not None
    server = metrics_process(tool, "--listen", f"[::]:{PORT}", listen="[::]:9")
    wait_serving(lab, server, URLS[0])
    for url in URLS:
        m = scrape(lab, url)
        assert m["mxknock_up"].value() == 1 and m["mxknock_health"].value(state="ok") == 1
    assert "the socket systemd passed" in server.log(), server.log()
    assert server.stop() == 0


STATUS_CLIENT = """
import json, socket, sys

def call(path, command):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        args = {"yaml": ""} if command == "apply" else {}  # unknown arguments are refused by name
        s.sendall((json.dumps({"command": command, "args": args}) + "\\n").encode())
        return json.loads(s.makefile().readline())

status_path, control_path = sys.argv[1:3]
result = {"status": call(status_path, "status").get("result", {}).get("health"), "apply": call(status_path, "apply")}
try:
    call(control_path, "status")
    result["control"] = "open"
except PermissionError:
    result["control"] = "denied"
print(json.dumps(result))
"""


def test_the_status_socket_serves_status_to_anyone_and_changes_nothing(lab: Lab) -> None:
    """The metrics server runs as a user of its own (image: DynamicUser): it reads status
    through the read-only socket and could not change a thing even if it were taken over."""
    workdir = Path(tempfile.mkdtemp(prefix="mxknock-status-", dir="/tmp"))
    workdir.chmod(0o755)  # an unprivileged user must reach the sockets (the image's /run/mxknock is 0755)
    appliance = Appliance(lab.ns("fw"), workdir)
    try:
        appliance.start(config_text(window=600))
        assert oct(appliance.status_socket.stat().st_mode & 0o777) == "0o666"
        assert oct(appliance.socket.stat().st_mode & 0o777) == "0o600"
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"]
        out = lab.fw_exec([*nobody, STATUS_CLIENT, str(appliance.status_socket), str(appliance.socket)]).stdout
        result = json.loads(out)
        assert result["status"] == "ok"
        assert result["apply"]["ok"] is False and "unknown command 'apply'" in result["apply"]["error"]
        assert result["control"] == "denied"
    finally:
        appliance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


ATTACK = r"""
import http.client, json, socket, sys, threading, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"up1": 0, "up0": 0, "busy": 0, "errors": 0, "slowest": 0.0}
lock = threading.Lock()

def scrape():
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        up1 = response.status == 200 and b"\nmxknock_up 1\n" in body
        key = "up1" if up1 else "up0" if b"mxknock_up 0" in body else "busy" if response.status == 503 else "errors"
    except Exception:
        key = "errors"
    with lock:
        out[key] += 1
        out["slowest"] = max(out["slowest"], round(time.monotonic() - started, 3))

stop = time.monotonic() + float(sys.argv[4])
if mode == "crowd":
    def loop():
        while time.monotonic() < stop:
            scrape()
    threads = [threading.Thread(target=loop) for _ in range(100)]
elif mode == "slowloris":
    def slow():
        while time.monotonic() < stop:
            try:
                with socket.create_connection((host, port), timeout=10) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
                    while time.monotonic() < stop:
                        time.sleep(5)
                        s.sendall(b"X")  # one byte every 5 s
            except OSError:
                time.sleep(0.1)
    def scraper():
        time.sleep(1)
        while time.monotonic() < stop:
            scrape()
            time.sleep(1)
    threads = [threading.Thread(target=slow, daemon=True) for _ in range(8)] + [threading.Thread(target=scraper)]
elif mode == "headers":
    def huge():
        try:
            with socket.create_connection((host, port), timeout=20) as s:
                try:
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
                    for i in range(99):
                        s.sendall(b"X-%d: %s\r\n" % (i, b"a" * 65000))
                    s.sendall(b"\r\n")
                except OSError:
                    pass  # cut while sending: the answer is waiting all the same
                reply = s.recv(100)
        except OSError as exc:
            reply = str(exc).encode()
        with lock:
            out.setdefault("replies", []).append(reply[:12].decode(errors="replace"))
    threads = [threading.Thread(target=huge) for _ in range(8)]
for t in threads: t.start()
for t in threads:
    if not t.daemon: t.join()
if mode == "headers":
    scrape()
print(json.dumps(out))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def attack(lab: Lab, mode: str, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-c", ATTACK, mode, MANAGEMENT_V4, str(PORT), str(seconds)]
    return json.loads(lab.exec("sender", argv, timeout=seconds + 60).stdout)


def test_metrics_under_attack(lab: Lab, appliance: Appliance, metrics_process) -> None:
    """The issue's three attacks from the LAN: 100 scrapers, eight slowloris connections, and
    eight requests with 99 headers of 65 KB. Figures printed for the record (pytest -s)."""
    appliance.start(config_text(window=600, management={**MANAGEMENT, "metrics": True}))
    wait_until("the management addresses", lambda: management_ready(appliance))
    server = metrics_process()
    wait_serving(lab, server, URLS[0])
    daemon_pid, server_pid = appliance.process.pid, server.process.pid

    before = cpu_seconds(daemon_pid)
    crowd = attack(lab, "crowd", 10)
    daemon_cpu = (cpu_seconds(daemon_pid) - before) / 10
    print(f"100 scrapers for 10 s: {crowd}, mxknockd CPU {daemon_cpu:.0%}")

    slowloris = attack(lab, "slowloris", 16)
    print(f"8 slowloris connections for 16 s, a scrape a second: {slowloris}")

    wait_serving(lab, server, URLS[0])
    peak, base, done = [0], rss_mib(server_pid), threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(server_pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        headers = attack(lab, "headers", 0)
    finally:
        done.set()
        watcher.join()
    print(f"8 requests of 99 headers of 65 KB: {headers}, metrics server RSS {base} -> {peak[0]} MiB")

    # One address, 100 connections at once: beyond its 2 connections it is told 503 at once, or
    # one of its connections still sending its head is closed for the newcomer (an error here).
    assert crowd["up0"] == 0 and crowd["up1"] > 100 and crowd["errors"] < 0.1 * sum(crowd.values()), crowd
    assert daemon_cpu < 0.3, daemon_cpu
    assert slowloris["up1"] >= 10 and slowloris["up0"] == slowloris["errors"] == 0, slowloris
    assert slowloris["slowest"] < 2.0, slowloris
    # 431; 503 over the address's cap; or closed without an answer for a newer connection from it.
    assert all(reply.startswith(("HTTP/1.1 431", "HTTP/1.1 503")) or not reply for reply in headers["replies"])
    assert headers["up1"] == 1 and peak[0] - base < 16, (base, peak)
    assert server.process.poll() is None
