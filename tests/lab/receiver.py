"""The lab mail host: an aiosmtpd receiver plus accept-and-close listeners on knock ports.

Run as a script inside the mail namespace (stdlib + aiosmtpd only, no package imports), e.g.
    receiver.py --dir D --addr 192.0.2.10 --addr 2001:db8::10 --plain-port 110
Each message becomes one JSON line in D/received.jsonl; each knock-port connection one line in
D/connections.jsonl. D/ready appears once every listener is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    # One write() of one line on an O_APPEND file: readers never see interleaved records.
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class RecordingHandler:
    """Accepts every message and records where it came from and where it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        local = server.transport.get_extra_info("sockname") if server.transport else None
        raw = envelope.original_content or b""
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
        record = {
            "time": time.time(),
            "peer": session.peer[0] if session.peer else None,
            "peer_port": session.peer[1] if session.peer else None,
            "local": local[0] if local else None,
            "local_port": local[1] if local else None,
            "helo": session.host_name,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(headers.get("Subject", "")),
            "message_id": str(headers.get("Message-ID", "")),
            "data": raw.decode("utf-8", "replace"),
        }
        append_json_line(self.path, record)
        return "250 2.0.0 Ok: stored by lab receiver"


class AcceptAndClose(asyncio.Protocol):
    """A knock-port listener: complete the handshake, note it, hang up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        append_json_line(
            self.path,
            {"time": time.time(), "peer": peer[0], "local": local[0], "port": local[1]},
        )
        transport.close()


async def serve(directory: Path, addrs: list[str], smtp_port: int, plain_ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    handler = RecordingHandler(directory / "received.jsonl")
    conn_log = directory / "connections.jsonl"
    servers = []
    for addr in addrs:
        servers.append(
            await loop.create_server(
                lambda: SMTP(handler, hostname="mail.example.test", ident="lab receiver"),
                host=addr,
                port=smtp_port,
                reuse_address=True,
            )
        )
        for port in plain_ports:
            servers.append(
                await loop.create_server(lambda: AcceptAndClose(conn_log), host=addr, port=port, reuse_address=True)
            )
    (directory / "ready").write_text(str(os.getpid()))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--addr", action="append", required=True)
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--plain-port", type=int, action="append", default=[])
    args = parser.parse_args()
    asyncio.run(serve(args.dir, args.addr, args.smtp_port, args.plain_port))


if __name__ == "__main__":
    main()
