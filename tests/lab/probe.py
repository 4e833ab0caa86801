"""Raw probes run inside a lab namespace (stdlib only; executed as a script, not imported).

probe.py connect --timeout T --concurrency C   < [[src, dst, port], ...]   -> JSON results
probe.py hold --src S --dst D --port P --timeout T   (SMTP commands on stdin, replies out)
probe.py dns --server S --name N --type MX|A|AAAA                          -> JSON answer
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import random
import socket
import struct
import sys
from typing import Any

UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


# --- connect ---------------------------------------------------------------------------


async def _connect_one(src: str | None, dst: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if src:
            sock.bind((src, 0))  # probes must bind: the source address is what the box judges
        await asyncio.wait_for(loop.sock_connect(sock, (dst, port)), timeout)
        return "accepted"
    except ConnectionRefusedError:
        return "reset"  # a TCP RST answered our SYN (closed port or REJECT tcp-reset)
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        if exc.errno in UNREACHABLE:
            return "unreachable"  # an ICMP error, not a reset
        return f"error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    finally:
        sock.close()


async def _connect_all(targets: list[list[Any]], timeout: float, concurrency: int) -> list[str]:
    sem = asyncio.Semaphore(max(1, concurrency))

    async def guarded(src: str | None, dst: str, port: int) -> str:
        async with sem:
            return await _connect_one(src, dst, int(port), timeout)

    return list(await asyncio.gather(*(guarded(*t) for t in targets)))


def cmd_connect(args: argparse.Namespace) -> None:
    targets = json.load(sys.stdin)
    if args.concurrency <= 1:  # strictly in order: knock sequences depend on it

        async def serial() -> list[str]:
            return [await _connect_one(s, d, int(p), args.timeout) for s, d, p in targets]

        results = asyncio.run(serial())
    else:
        results = asyncio.run(_connect_all(targets, args.timeout, args.concurrency))
    json.dump(results, sys.stdout)


# --- hold an SMTP session open ----------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _read_reply(reader: Any) -> str:
    lines = []
    for _ in range(100):  # bounded: no SMTP reply has 100 lines
        line = reader.readline()
        if not line:
            raise ConnectionError("connection closed by peer")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            break
    return "\n".join(lines)


def cmd_hold(args: argparse.Namespace) -> None:
    try:
        sock = socket.socket(_family(args.dst), socket.SOCK_STREAM)
        sock.settimeout(args.timeout)
        sock.bind((args.src, 0))
        sock.connect((args.dst, args.port))
        reader = sock.makefile("rb")
        _emit({"reply": _read_reply(reader)})
    except OSError as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return
    for line in sys.stdin:  # ends when the parent closes our stdin
        try:
            sock.sendall(line.rstrip("\r\n").encode() + b"\r\n")
            _emit({"reply": _read_reply(reader)})
        except OSError as exc:
            _emit({"error": f"{type(exc).__name__}: {exc}"})
    sock.close()


# --- a minimal DNS client (no dig in the image) -----------------------------------------

QTYPES = {"A": 1, "MX": 15, "AAAA": 28}


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounded: compression pointers could loop
        length = msg[off]
        if length == 0:
            off += 1
            break
        if length & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        labels.append(msg[off + 1 : off + 1 + length].decode())
        off += 1 + length
    return ".".join(labels), (end if end is not None else off)


def dns_query(server: str, name: str, qtype: str, timeout: float) -> dict[str, Any]:
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", QTYPES[qtype], 1)
    with socket.socket(_family(server), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        msg, _ = sock.recvfrom(4096)
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise ValueError("DNS reply id mismatch")
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
        off += 10
        rdata = msg[off : off + rdlen]
        if rtype == 1:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rtype == 15:
            pref = struct.unpack("!H", rdata[:2])[0]
            answers.append(f"{pref} {_read_name(msg, off + 2)[0]}")
        off += rdlen
    return {"rcode": flags & 0xF, "answers": answers}


def cmd_dns(args: argparse.Namespace) -> None:
    json.dump(dns_query(args.server, args.name, args.type, args.timeout), sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("connect")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=1)
    p.set_defaults(func=cmd_connect)
    p = sub.add_parser("hold")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=25)
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_hold)
    p = sub.add_parser("dns")
    p.add_argument("--server", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--type", choices=sorted(QTYPES), default="MX")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_dns)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
