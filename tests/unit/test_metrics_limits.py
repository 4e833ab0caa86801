"""The metrics server against hostile clients, over real TCP sockets on loopback: slowloris,
huge and many headers, and a crowd of scrapers. Attackers connect from 127.0.0.2 and up
(loopback answers all of 127/8); the honest scraper from 127.0.0.1."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import metrics_server
from appliance.control import ControlClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tcp_server(sock_dir: Path) -> Iterator[Callable[[Path], int]]:
    """A MetricsServer on 127.0.0.1:<free port>, asking the control socket given."""
    servers: list[metrics_server.MetricsServer] = []

    def start(control_path: Path) -> int:
        server = metrics_server.MetricsServer(("127.0.0.1", 0), ControlClient(control_path, timeout=2.0))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return sock


def scrape(port: int, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=("127.0.0.1", 0))
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_slowloris_request_is_cut_after_the_head_timeout(tcp_server, sock_dir, monkeypatch) -> None:
    monkeypatch.setattr(metrics_server, "HEAD_TIMEOUT", 0.6)
    port = tcp_server(sock_dir / "nobody.sock")
    with connect_from("127.0.0.2", port) as slow:
        slow.setblocking(False)
        started, closed = time.monotonic(), False
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                if slow.recv(100) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            try:
                slow.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)  # one byte every 0.1 s: each well within the socket's timeout
        took = time.monotonic() - started
    assert closed and took < 2, f"still connected after {took:.1f} s"


@pytest.mark.parametrize("sources", [["127.0.0.1"], ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]])
def test_eight_slowloris_connections_do_not_blind_the_scraper(
    tcp_server, serve, status_result, monkeypatch, sources
) -> None:
    """As the issue's attack: eight connections, one header line every 0.5 s; scrapes still answer
    fast, whether the attacker shares the scraper's address or has addresses of its own."""
    monkeypatch.setattr(metrics_server, "HEAD_TIMEOUT", 2.0)
    port = tcp_server(serve({"status": lambda args: status_result("ok")}))
    stop = threading.Event()

    def slowloris(source: str) -> None:
        while not stop.is_set():
            try:
                with connect_from(source, port) as sock:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                    while not stop.wait(0.5):
                        sock.sendall(b"X: y\r\n")
            except OSError:
                stop.wait(0.05)

    attackers = [threading.Thread(target=slowloris, args=(sources[i % len(sources)],)) for i in range(8)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(0.5)
        for _ in range(5):
            started = time.monotonic()
            code, body = scrape(port)
            assert code == 200 and b"mxknock_up 1" in body
            assert time.monotonic() - started < 1.0
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(10)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 65000) for i in range(3)) + b"\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(40)) + b"\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["huge-headers", "many-headers", "huge-request-line"],
)
def test_an_oversized_head_gets_431_and_is_closed(tcp_server, sock_dir, head) -> None:
    port = tcp_server(sock_dir / "nobody.sock")
    with connect_from("127.0.0.2", port) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert scrape(port)[0] == 200  # and the server goes on


def test_a_new_connection_from_an_address_at_its_cap_evicts_an_idle_one(tcp_server, sock_dir) -> None:
    port = tcp_server(sock_dir / "nobody.sock")
    held = [connect_from("127.0.0.2", port) for _ in range(metrics_server.MAX_PER_ADDRESS)]
    try:
        time.sleep(metrics_server.EVICT_AFTER + 0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        assert read_all(held[0]) == b""  # the one that waited longest was closed
    finally:
        for sock in held:
            sock.close()


def test_more_busy_connections_from_one_address_are_refused_with_503(tcp_server, serve, status_result) -> None:
    def slow_status(args: Any) -> dict[str, Any]:
        time.sleep(1.5)
        return status_result("ok")

    port = tcp_server(serve({"status": slow_status}))
    busy = [connect_from("127.0.0.2", port) for _ in range(metrics_server.MAX_PER_ADDRESS)]
    try:
        for sock in busy:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # each waits for the daemon
        time.sleep(0.3)
        with connect_from("127.0.0.2", port) as extra:
            assert read_all(extra).startswith(b"HTTP/1.1 503 ")
        assert scrape(port)[0] == 200  # another address is served
        for sock in busy:
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in busy:
            sock.close()


def test_a_crowd_of_scrapers_costs_the_daemon_one_status_a_second(tcp_server, serve, status_result) -> None:
    calls = []

    def status(args: Any) -> dict[str, Any]:
        calls.append(time.monotonic())
        time.sleep(0.05)  # the engine reads the kernel meanwhile
        return status_result("ok")

    port = tcp_server(serve({"status": status}))
    results: list[tuple[int, bytes]] = []
    end = time.monotonic() + 2.0

    def scraper(n: int) -> None:
        while time.monotonic() < end:
            try:
                results.append(scrape(port))
            except OSError as exc:
                results.append((0, str(exc).encode()))

    threads = [threading.Thread(target=scraper, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    answered = [body for code, body in results if code == 200]
    assert len(answered) > 30
    assert all(b"mxknock_up 1" in body for body in answered)  # none says up 0 under load
    assert len(calls) <= 2.0 / metrics_server.STATUS_LIFETIME + 2


SERVER = [sys.executable, "-m", "appliance.metrics_server", "--socket", "/nonexistent/status.sock"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_requests_with_99_huge_headers_do_not_grow_the_server(sock_dir) -> None:
    """The issue's OOM: eight requests, each with 99 headers of 65 KB. Measured on the real process."""
    port = free_port()
    proc = subprocess.Popen([*SERVER, "--listen", f"127.0.0.1:{port}"], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        before = rss_kib(proc.pid)
        header = b"a" * 65000
        socks = [connect_from(f"127.0.0.{2 + i}", port) for i in range(8)]
        peak = before
        for sock in socks:
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                for i in range(99):
                    sock.sendall(b"X-%d: %s\r\n" % (i, header))
                sock.sendall(b"\r\n")
            except OSError:
                pass
            peak = max(peak, rss_kib(proc.pid))
        for sock in socks:
            sock.settimeout(10)
            assert read_all(sock).startswith(b"HTTP/1.1 431 ")
            peak = max(peak, rss_kib(proc.pid))
            sock.close()
        assert peak - before < 8 * 1024, f"RSS grew from {before} KiB to {peak} KiB"
    finally:
        proc.kill()
        proc.wait(10)
