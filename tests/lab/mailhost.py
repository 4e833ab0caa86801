"""Starts the receiver (receiver.py) in the mail namespace and reads what it recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import addresses as A
from .netns import LabError, in_ns
from .procs import wait_until

RECEIVER_SCRIPT = Path(__file__).with_name("receiver.py")


@dataclass(frozen=True)
class Received:
    """One message as the mail host saw it."""

    peer: str  # the client's address (the sender as seen by the mail server)
    local: str  # the server address it arrived on: mx1 or mx2, IPv4 or IPv6
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    message_id: str
    data: str
    helo: str | None
    time: float

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Received:
        return cls(
            peer=rec["peer"],
            local=rec["local"],
            mail_from=rec["mail_from"],
            rcpt_tos=tuple(rec["rcpt_tos"]),
            subject=rec["subject"],
            message_id=rec["message_id"],
            data=rec["data"],
            helo=rec.get("helo"),
            time=rec["time"],
        )


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line still being written
    return records


class MailHost:
    def __init__(self, ns: str, workdir: Path) -> None:
        self.ns = ns
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the receiver; wait_ready() tells when it listens."""
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(RECEIVER_SCRIPT), "--dir", str(self.dir)]
        v4s, v6s = A.HOST_ADDRESSES["mail"]
        for addr in (*v4s, *v6s):
            argv += ["--addr", addr]
        for port in A.KNOCK_PORTS:
            argv += ["--plain-port", str(port)]
        log = self.dir / "receiver.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                in_ns(self.ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            raise LabError("receiver not started")
        log = self.dir / "receiver.log"

        def ready() -> bool:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise LabError(f"receiver exited with {proc.returncode}:\n{tail}")
            return (self.dir / "ready").exists()

        wait_until(ready, timeout=timeout, what="the mail receiver")

    def received(self) -> list[Received]:
        return [Received.from_json(r) for r in read_json_lines(self.dir / "received.jsonl")]

    def connections(self) -> list[dict[str, Any]]:
        """Connections accepted on the knock ports: dicts with peer, local, port, time."""
        return read_json_lines(self.dir / "connections.jsonl")

    def wait_for_mail(self, match: str | Callable[[Received], bool], timeout: float = 10.0) -> Received:
        """The first message whose subject equals `match` (or for which match(msg) is true)."""
        pred = match if callable(match) else (lambda m: m.subject == match)
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.received():
                if pred(msg):
                    return msg
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching mail within {timeout}s: {match!r}")
            time.sleep(0.02)
