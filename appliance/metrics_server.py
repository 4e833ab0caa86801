"""mxknock-metrics: Prometheus metrics over HTTP (GET /metrics, port 9425).

Every scrape asks mxknockd for its status over the control socket and renders it
(appliance/metrics.py); when mxknockd does not answer, the page still comes with
200 and `mxknock_up 0`, so an alert can fire on it.

Socket activation: started by systemd with a listening socket (LISTEN_PID is ours,
LISTEN_FDS >= 1) it serves on fd 3 and ignores --listen. Otherwise it listens on
--listen, by default [::]:9425 for IPv6 and IPv4 alike. Who may connect is the
firewall's business (MXKNOCK-INPUT opens the port on the management address to
management.allow only); this server answers anyone who reaches it.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import metrics
from .config import METRICS_PORT
from .control import ControlClient, ControlError, SharedResult, status_socket_path

log = logging.getLogger("mxknock-metrics")

DEFAULT_LISTEN = f"[::]:{METRICS_PORT}"
SCRAPE_TIMEOUT = 5.0  # for mxknockd's answer; Prometheus' default scrape timeout is 10 s
CLIENT_TIMEOUT = 10.0  # a client that sends or reads this slowly is dropped; also the keep-alive idle time
# A request's head (request line and headers) must arrive whole within HEAD_TIMEOUT of its
# first byte (slowloris), and be at most MAX_HEAD bytes with at most MAX_HEADERS headers.
# Prometheus sends about 300 bytes and 5 headers at once. GET and HEAD have no body.
HEAD_TIMEOUT = 5.0
MAX_HEAD = 8192
MAX_HEADERS = 32
# Connections served at once (a thread each); more wait in the listen backlog. Prometheus
# keeps one connection per server. The unit's TasksMax=16 (mxknock-metrics.service) is
# 1 main thread + MAX_CLIENTS + room. One client address holds at most MAX_PER_ADDRESS of them.
MAX_CLIENTS = 8
MAX_PER_ADDRESS = 2
# A connection that has waited this long for a request head may be closed for a new one.
EVICT_AFTER = 0.5
# With every slot busy answering, a new connection waits this long for one, then gets 503.
SLOT_WAIT = 1.0
# Scrapes within this many seconds share one status from mxknockd, asked by one of them at
# a time: a hundred scrapers cost mxknockd one status a second.
STATUS_LIFETIME = 1.0
SD_LISTEN_FDS_START = 3
ALLOWED = "GET, HEAD"
INDEX = b"mxknock metrics exporter: Prometheus metrics at /metrics\n"


def parse_listen(text: str) -> tuple[str, int]:
    """'[addr]:port', 'addr:port', ':port' or 'port' -> (host, port); '' means every address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write an IPv6 address as [address]:port")
        port_text = rest[1:] if rest else str(METRICS_PORT)
        host = host or "::"
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::]:{METRICS_PORT}")
    else:
        host, port_text = "", text
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be from 0 to 65535")
    return host, port


def inherited_socket(environ: dict[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed (sd_listen_fds(3)), or None. Clears the
    variables so that nothing started from here believes they are meant for it."""
    env = os.environ if environ is None else environ
    try:
        pid, count = int(env.get("LISTEN_PID", "")), int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    if pid != os.getpid() or count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count > 1:
        log.warning("systemd passed %d sockets; serving on the first only", count)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)  # family and type come from the socket itself
    sock.set_inheritable(False)
    if sock.type != socket.SOCK_STREAM:
        raise OSError(errno.ENOTSOCK, "the socket systemd passed is not a stream socket")
    return sock


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "mxknock-metrics"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    timeout = CLIENT_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = _HeadReader(self.connection, self.timeout)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        # BaseHTTPRequestHandler's, with a bounded head that must arrive in time.
        reader: _HeadReader = self.rfile  # type: ignore[assignment]
        reader.new_request()
        try:
            self.server.waiting(self.connection, self.client_address, True)  # evictable until its head is in
            try:
                self.raw_requestline = reader.readline(MAX_HEAD + 1)
            except http.client.LineTooLong:
                self.requestline = self.request_version = self.command = ""
                self.send_error(431, f"request head larger than {MAX_HEAD} bytes")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            parsed = self.parse_request()
            if not self.server.waiting(self.connection, self.client_address, False):
                self.close_connection = True  # evicted while its head came in: the socket is shut
                return
            if not parsed:
                return
            method = getattr(self, "do_" + self.command)  # every method has one (__getattr__)
            method()
            self.wfile.flush()
        except TimeoutError as exc:
            self.log_error("request timed out: %r", exc)
            self.close_connection = True
        finally:
            self.server.waiting(self.connection, self.client_address, False)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.headers) > MAX_HEADERS:
            self.send_error(431, f"more than {MAX_HEADERS} header fields")
            return False
        self.connection.settimeout(self.timeout)  # the head is in: the answer gets the usual time
        return True

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def __getattr__(self, name: str) -> Any:
        # Any other method: 405 rather than http.server's 501 (do_POST, do_PUT, ...).
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(405, b"method not allowed: use GET\n", extra={"Allow": ALLOWED})

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            text = self.server.scrape()
            self._send(200, text.encode(), content_type=metrics.CONTENT_TYPE, body=body)
        elif path == "/":
            self._send(200, INDEX, body=body)
        else:
            self._send(404, b"not found: metrics are at /metrics\n", body=body)

    def _send(
        self,
        code: int,
        payload: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        body: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Requests, bad requests and idle keep-alive timeouts: only with --verbose (the
        # journal would get a line per scrape). mxknockd's ups and downs are logged anyway.
        if self.server.verbose:
            log.info("%s %s", self.address_string(), format % args)


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int] | None,
        control: ControlClient,
        *,
        inherited: socket.socket | None = None,
        verbose: bool = False,
    ):
        self.control = control
        self.verbose = verbose
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._per_address: dict[str, int] = {}
        self._per_address_lock = threading.Lock()
        # Connections still sending (or idle before) a request head: since when, and from where.
        self._waiting: dict[socket.socket, tuple[float, str | None]] = {}
        self._status = SharedResult(lambda: self.control.call("status"), STATUS_LIFETIME)
        self._was_up: bool | None = None
        if inherited is not None:
            self.address_family = inherited.family
            super().__init__(_address_of(inherited), MetricsHandler, bind_and_activate=False)
            self.socket.close()
            self.socket = inherited
        else:
            assert address is not None
            host, port = address
            info = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            # With no host, getaddrinfo lists IPv4 first; the IPv6 wildcard serves both.
            family, _, _, _, sockaddr = min(info, key=lambda i: i[0] != socket.AF_INET6) if not host else info[0]
            self.address_family = family
            super().__init__(sockaddr[:2], MetricsHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as ::ffff:a.b.c.d
        # Not HTTPServer.server_bind: its getfqdn() may wait for DNS, which the box may not have.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "mxknock", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # A bounded number of handler threads; slow clients time out (CLIENT_TIMEOUT, HEAD_TIMEOUT).
        address = _host_of(client_address)
        if not self._admit(address) and not (self._evict_slowest(address) and self._admit(address, force=True)):
            _refuse(request, f"more than {MAX_PER_ADDRESS} connections from {address} at once")
            self.shutdown_request(request)
            return
        if not self._take_slot():
            self._leave(address)
            _refuse(request, f"all {MAX_CLIENTS} connections are busy")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._leave(address)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._leave(_host_of(client_address))

    def _take_slot(self) -> bool:
        """A free slot; with every slot taken, the connection longest without a whole head (as
        soon as one has waited EVICT_AFTER) is closed to make room. The accept loop waits no
        longer than SLOT_WAIT."""
        deadline = time.monotonic() + SLOT_WAIT
        while not self._slots.acquire(timeout=0.05):
            if time.monotonic() >= deadline:
                return False
            self._evict_slowest()
        return True

    def waiting(self, connection: socket.socket, client_address: Any, waiting: bool) -> bool:
        """Mark a connection as waiting for a request head (evictable) or not. False when it
        was evicted meanwhile: it must not answer."""
        with self._per_address_lock:
            if waiting:
                self._waiting.setdefault(connection, (time.monotonic(), _host_of(client_address)))
                return True
            return self._waiting.pop(connection, None) is not None

    def _evict_slowest(self, address: str | None = None) -> bool:
        """Slowloris and idle keep-alive hold slots while honest scrapers send their head at once:
        when all slots are taken, the connection that has waited longest for a head, at least
        EVICT_AFTER seconds, is closed; when all of one address's are, the longest waiting of
        those, however briefly (they are the same client's). False if there is none."""
        with self._per_address_lock:  # held while closing: a connection either got its head or goes
            oldest = time.monotonic() - (EVICT_AFTER if address is None else 0.0)
            candidates = [c for c, (t, a) in self._waiting.items() if t <= oldest and address in (None, a)]
            if not candidates:
                return False
            connection = min(candidates, key=lambda c: self._waiting[c][0])
            del self._waiting[connection]
            try:
                connection.shutdown(socket.SHUT_RDWR)  # its thread sees the end and frees the slot
            except OSError:
                pass
        return True

    def _admit(self, address: str | None, force: bool = False) -> bool:
        """Count a connection from `address`; False over MAX_PER_ADDRESS (unless forced: one of
        its connections was just evicted and will leave in a moment)."""
        if address is None:  # a Unix socket (tests): no addresses to tell apart
            return True
        with self._per_address_lock:
            if not force and self._per_address.get(address, 0) >= MAX_PER_ADDRESS:
                return False
            self._per_address[address] = self._per_address.get(address, 0) + 1
            return True

    def _leave(self, address: str | None) -> None:
        if address is None:
            return
        with self._per_address_lock:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a client went away or timed out: not worth a traceback
            log.info("%s: %s", client_address, exc)
            return
        log.exception("request from %s failed", client_address)

    def scrape(self) -> str:
        started = time.monotonic()
        try:
            text = metrics.render(self._status.get())
            self._note(True, "")
        except ControlError as exc:
            self._note(False, str(exc))
            text = metrics.render_unreachable(str(exc))
        except Exception as exc:  # a garbled answer must not take the page down
            log.exception("cannot render mxknockd's status")
            self._note(False, f"bad status from mxknockd: {exc}")
            text = metrics.render_unreachable(f"bad status from mxknockd: {exc}")
        return text + _scrape_duration(time.monotonic() - started)

    def _note(self, up: bool, message: str) -> None:
        """Log when mxknockd stops or starts answering, not at every scrape."""
        if up != self._was_up:
            if up:
                log.info("mxknockd answers at %s", self.control.path)
            else:
                log.warning("%s", message)
            self._was_up = up


class _HeadReader:
    """The request's byte source in place of rfile: at most MAX_HEAD bytes per request head
    (http.client.LineTooLong beyond), which must arrive within HEAD_TIMEOUT of its first byte
    (TimeoutError), after at most `idle` seconds of waiting for that first byte."""

    def __init__(self, sock: socket.socket, idle: float):
        self.sock = sock
        self.idle = idle
        self.buffer = bytearray()
        self.eof = False
        self.new_request()

    def new_request(self) -> None:
        self.left = MAX_HEAD
        self.deadline: float | None = time.monotonic() + HEAD_TIMEOUT if self.buffer else None

    def readline(self, size: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 or self.eof or (0 <= size <= len(self.buffer)):
                count = end + 1 if end >= 0 else len(self.buffer)
                if size >= 0:
                    count = min(count, size)
                if count > self.left:
                    raise http.client.LineTooLong(f"request head larger than {MAX_HEAD} bytes")
                line = bytes(self.buffer[:count])
                del self.buffer[:count]
                self.left -= count
                return line
            if len(self.buffer) > self.left:
                raise http.client.LineTooLong(f"request head larger than {MAX_HEAD} bytes")
            self._fill()

    def _fill(self) -> None:
        if self.deadline is None:
            self.sock.settimeout(self.idle)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole request head within {HEAD_TIMEOUT:g} s")
            self.sock.settimeout(left)
        chunk = self.sock.recv(4096)
        if not chunk:
            self.eof = True
        elif self.deadline is None:
            self.deadline = time.monotonic() + HEAD_TIMEOUT
        self.buffer += chunk

    def read(self, size: int = -1) -> bytes:  # not used for GET and HEAD; a bounded answer all the same
        return self.readline(size)

    def close(self) -> None:
        self.buffer.clear()


def _host_of(client_address: Any) -> str | None:
    return client_address[0] if isinstance(client_address, tuple) and client_address else None


def _refuse(request: socket.socket, why: str) -> None:
    """503 without a thread and without waiting for the client (the accept loop must go on)."""
    body = f"busy: {why}\n".encode()
    head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    try:
        request.setblocking(False)
        request.send(head.encode() + body)
    except OSError:
        pass


def _scrape_duration(seconds: float) -> str:
    name = f"{metrics.PREFIX}scrape_duration_seconds"
    return (
        f"# HELP {name} time taken to ask mxknockd and render its status\n"
        f"# TYPE {name} gauge\n"
        f"{name} {metrics.format_value(round(seconds, 6))}\n"
    )


def _address_of(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return (name[0], name[1]) if isinstance(name, tuple) else (str(name), 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mxknock-metrics",
        description="serve mxknockd's status as Prometheus metrics at http://ADDRESS:PORT/metrics",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address and port ([ipv6]:port or ipv4:port; default {DEFAULT_LISTEN}, IPv4 and IPv6); "
        "ignored when systemd passes a socket",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"mxknockd's read-only status socket (default {status_socket_path()}; the control socket works too)",
    )
    parser.add_argument(
        "--timeout", type=float, default=SCRAPE_TIMEOUT, metavar="SECONDS", help="how long to wait for mxknockd"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    return parser


class _Stop(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    control = ControlClient(args.socket or status_socket_path(), timeout=args.timeout)
    try:
        inherited = inherited_socket()
    except OSError as exc:
        log.error("cannot use the socket systemd passed (fd %d): %s", SD_LISTEN_FDS_START, exc)
        return 1
    try:
        if inherited is not None:
            server = MetricsServer(None, control, inherited=inherited, verbose=args.verbose)
        else:
            try:
                address = parse_listen(args.listen)
            except ValueError as exc:
                parser.error(f"--listen {exc}")
            server = _listen(address, args.listen == DEFAULT_LISTEN, control, args.verbose)
    except OSError as exc:
        log.error("cannot listen on %s: %s", args.listen, exc)
        return 1
    where = "the socket systemd passed" if inherited is not None else args.listen
    log.info("serving /metrics on %s (%s), asking mxknockd at %s", where, _address_of(server.socket), control.path)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


def _listen(address: tuple[str, int], is_default: bool, control: ControlClient, verbose: bool) -> MetricsServer:
    try:
        return MetricsServer(address, control, verbose=verbose)
    except OSError as exc:
        # A kernel without IPv6 (ipv6.disable=1): the default falls back to IPv4 alone.
        if not is_default or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
        log.warning("no IPv6 here (%s): listening on 0.0.0.0:%d", exc, address[1])
        return MetricsServer(("0.0.0.0", address[1]), control, verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
