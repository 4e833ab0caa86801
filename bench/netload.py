"""Traffic for benchmarks 2 and 5, run as a script inside a lab namespace (stdlib only).

netload.py sink --addr A --port P            accept, drain, answer the byte count at EOF
netload.py rate --dst A --port P --count N --concurrency K --src S [--src S ...]
netload.py bulk --dst A --port P --bytes B --src S
Results are one JSON object on stdout. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import struct
import sys
import time

# Defer the choice of the source port to connect(): bind(src, 0) alone would pick one
# without knowing the destination and run out of ports long before the 4-tuples do.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Abortive close (RST): no TIME_WAIT on the client, so repeated runs never exhaust ports.
LINGER_RST = struct.pack("ii", 1, 0)
CHUNK = 1 << 20


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def cmd_sink(args: argparse.Namespace) -> None:
    """One thread, non-blocking: cheap enough per connection that the client stays the limit."""
    sel = selectors.DefaultSelector()
    lsock = socket.socket(_family(args.addr), socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.addr, args.port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    buf = bytearray(CHUNK)
    received: dict[socket.socket, int] = {}
    print("ready", flush=True)
    while True:  # ends when the benchmark kills us
        for key, _ in sel.select():
            if key.data is None:
                for _ in range(64):  # drain the accept queue in bursts
                    try:
                        conn, _addr = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    received[conn] = 0
                    sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                n = conn.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = -1  # reset by the rate client: nothing to answer
            if n > 0:
                received[conn] += n
                continue
            if n == 0 and received[conn]:
                try:
                    conn.setblocking(True)
                    conn.sendall(str(received[conn]).encode())
                except OSError:
                    pass
            sel.unregister(conn)
            del received[conn]
            conn.close()


def _connect_start(src: str, dst: str, port: int) -> socket.socket:
    sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    sock.setblocking(False)
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((src, 0))
    err = sock.connect_ex((dst, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, errno.errorcode.get(err, str(err)))
    return sock


def cmd_rate(args: argparse.Namespace) -> None:
    """Complete `count` handshakes, `concurrency` in flight, sources round-robin; each is
    closed with a reset as soon as it is established."""
    sel = selectors.DefaultSelector()
    started = done = failed = 0
    deadline = time.monotonic() + args.timeout
    t0 = time.perf_counter()

    def launch() -> None:
        nonlocal started, failed
        src = args.src[started % len(args.src)]
        started += 1
        try:
            sel.register(_connect_start(src, args.dst, args.port), selectors.EVENT_WRITE)
        except OSError:
            failed += 1

    for _ in range(min(args.concurrency, args.count)):
        launch()
    while done + failed < args.count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sel.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done += 1
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            else:
                failed += 1
            sock.close()
            if started < args.count:
                launch()
    elapsed = time.perf_counter() - t0
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    json.dump({"connections": done, "failed": failed, "seconds": elapsed}, sys.stdout)


def cmd_bulk(args: argparse.Namespace) -> None:
    """Send `bytes` over one connection; the clock stops when the sink has counted them all."""
    payload = memoryview(bytes(CHUNK))
    sock = socket.socket(_family(args.dst), socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    sock.bind((args.src, 0))
    t0 = time.perf_counter()
    sock.connect((args.dst, args.port))
    left = args.bytes
    while left > 0:
        n = min(left, CHUNK)
        sock.sendall(payload[:n])
        left -= n
    sock.shutdown(socket.SHUT_WR)
    answer = sock.recv(64)
    elapsed = time.perf_counter() - t0
    sock.close()
    if int(answer or b"0") != args.bytes:
        raise SystemExit(f"the sink counted {answer!r} bytes, expected {args.bytes}")
    json.dump({"bytes": args.bytes, "seconds": elapsed}, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sink")
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_sink)
    p = sub.add_parser("rate")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--src", action="append", required=True)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_rate)
    p = sub.add_parser("bulk")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--bytes", type=int, default=200 * 10**6)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_bulk)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
