"""Host-side wrappers that run probe.py and swaks inside a namespace and parse their answers."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .addresses import family_of
from .netns import LabError, in_ns, run

PROBE_SCRIPT = Path(__file__).with_name("probe.py")

# "accepted" | "reset" | "timeout", plus "unreachable" (an ICMP error, kept apart from "reset"
# so a test cannot mistake one for the other) and "error:<ERRNO>" for anything else odd
# (e.g. "error:EADDRNOTAVAIL" for a source address the namespace does not have).
ConnectResult = str


def probe_argv(ns: str, *args: str) -> list[str]:
    return in_ns(ns, [sys.executable, str(PROBE_SCRIPT), *args])


def connect_many(
    ns: str,
    targets: Sequence[tuple[str | None, str, int]],
    *,
    timeout: float = 3.0,
    concurrency: int = 1,
) -> list[ConnectResult]:
    """TCP connects (src, dst, port) from ns in one process; concurrency 1 keeps them in order."""
    if not targets:
        return []
    batches = -(-len(targets) // max(1, concurrency))
    budget = timeout * batches + 10.0
    proc = run(
        probe_argv(ns, "connect", "--timeout", str(timeout), "--concurrency", str(concurrency)),
        input=json.dumps([list(t) for t in targets]),
        timeout=budget,
    )
    return json.loads(proc.stdout)


def dns_query(ns: str, server: str, name: str, qtype: str = "MX", timeout: float = 2.0) -> dict[str, Any]:
    """{"rcode": int, "answers": [...]}; MX answers read "10 mx1.example.test"."""
    proc = run(
        probe_argv(ns, "dns", "--server", server, "--name", name, "--type", qtype, "--timeout", str(timeout)),
        timeout=timeout + 10.0,
    )
    return json.loads(proc.stdout)


@dataclass(frozen=True)
class SmtpReply:
    """An SMTP reply, or the error that replaced it (error is None when the session worked)."""

    text: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> int | None:
        if self.text and self.text[:3].isdigit():
            return int(self.text[:3])
        return None


class HeldSession:
    """An SMTP session kept open by a probe process in a namespace.

    Send commands later (`command("NOOP")`) to see whether the connection still carries data.
    """

    def __init__(self, ns: str, src: str, dst: str, port: int, timeout: float) -> None:
        self.timeout = timeout
        self._closed = False
        self.proc = subprocess.Popen(
            probe_argv(ns, "hold", "--src", src, "--dst", dst, "--port", str(port), "--timeout", str(timeout)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.banner = self._next(timeout + 5.0)

    def _next(self, timeout: float) -> SmtpReply:
        assert self.proc.stdout is not None
        if not self._sel.select(timeout):
            return SmtpReply(None, f"no answer from probe within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            return SmtpReply(None, "probe process ended")
        obj = json.loads(line)
        return SmtpReply(obj.get("reply"), obj.get("error"))

    @property
    def connected(self) -> bool:
        return self.banner.ok

    def command(self, line: str, timeout: float | None = None) -> SmtpReply:
        """Send one SMTP command line and wait for its reply (or the error)."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            return SmtpReply(None, "probe process ended")
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return SmtpReply(None, "probe process ended")
        wait = (timeout if timeout is not None else self.timeout) + 5.0
        return self._next(wait)

    def close(self) -> None:
        """Close our side (no QUIT is sent) and reap the probe. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=self.timeout + 5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._sel.close()

    def __enter__(self) -> HeldSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def swaks(
    ns: str,
    server: str,
    *,
    to: str,
    from_: str,
    port: int = 25,
    src: str | None = None,
    subject: str | None = None,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
) -> tuple[int, str]:
    """Run swaks from ns against server (an IP). Returns (exit code, stdout+stderr)."""
    fam = family_of(server)
    argv = [
        "swaks",
        f"-{fam}",
        "--server",
        server,
        "--port",
        str(port),
        "--to",
        to,
        "--from",
        from_,
        "--timeout",
        f"{max(1, int(timeout) - 2)}s",
    ]
    if src:
        argv += ["--local-interface", src]
    if subject:
        argv += ["--header", f"Subject: {subject}"]
    argv += list(extra)
    try:
        proc = subprocess.run(in_ns(ns, argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"swaks timed out after {timeout}s") from exc
    return proc.returncode, proc.stdout + proc.stderr
