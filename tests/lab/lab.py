"""The Lab: the whole test topology as one context manager.

with Lab(prefix="mxk123") as lab:
    lab.plain_bridge()
    lab.postfix_send(subject="hi")
    lab.wait_for_mail("hi")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import addresses as A
from .dns import start_dnsmasq, wait_dnsmasq
from .mailhost import MailHost, Received
from .netns import LabError, in_ns, run
from .postfix import PostfixSender
from .probes import ConnectResult, HeldSession, SmtpReply, connect_many, dns_query, swaks
from .procs import stop_process
from .topology import Topology

REQUIRED_TOOLS = ("ip", "unshare", "postfix", "dnsmasq")

__all__ = ["HeldSession", "Lab", "LabError", "Received", "SmtpReply", "missing_requirements"]


def missing_requirements() -> list[str]:
    """Why the lab cannot run here (empty when it can): not root, or tools missing."""
    problems = [] if os.geteuid() == 0 else ["not root"]
    problems += [f"{tool} not found" for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    return problems


def default_workdir(prefix: str) -> Path:
    # Deterministic per prefix, so a crashed run's leftovers are found and removed next time.
    return Path(tempfile.gettempdir()) / f"mxklab-{prefix}"


class Lab:
    def __init__(
        self,
        prefix: str = "mxk",
        *,
        mx: Sequence[A.MxHost] = A.MX_DUAL_STACK,
        workdir: Path | None = None,
        postfix_settings: Mapping[str, str] | None = None,
    ) -> None:
        if not prefix or len(prefix) > 20 or "/" in prefix:
            raise ValueError(f"bad namespace prefix {prefix!r}")
        self.prefix = prefix
        self.mx = tuple(mx)
        self.workdir = workdir or default_workdir(prefix)
        self.topology = Topology(prefix)
        self.mail = MailHost(self.ns("mail"), self.workdir / "mail")
        self.postfix = PostfixSender(self.ns("sender"), self.workdir / "sender", postfix_settings)
        self.timings: dict[str, float] = {}
        self.bot_extra: list[str] = []
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._held: list[HeldSession] = []

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Lab:
        """Build everything; on any failure tear down what was built and re-raise."""
        try:
            self._timed("cleanup_stale", self.stop)
            t0 = time.monotonic()
            self.workdir.mkdir(mode=0o755, parents=True)
            self._timed("topology", self.topology.build)
            # dnsmasq and the receiver start while Postfix does; then wait for both.
            self._dnsmasq = start_dnsmasq(self.ns("dns"), self.mx, self.workdir / "dns")
            self.mail.start()
            self._timed("postfix", self._start_postfix)
            self._timed("dns_receiver_ready", self._wait_ready)
            self.timings["total"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every process in the lab's namespaces, delete them and the work dir. Idempotent."""
        for held in self._held:
            held.close()
        self._held.clear()
        self.topology.destroy()
        # Reap our own children (already killed with their namespace) so no zombies remain.
        stop_process(self._dnsmasq)
        stop_process(self.mail.proc)
        self._dnsmasq = self.mail.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _timed(self, name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[name] = time.monotonic() - t0

    def _wait_ready(self) -> None:
        assert self._dnsmasq is not None
        wait_dnsmasq(self._dnsmasq, self.workdir / "dns")
        self.mail.wait_ready()

    def _start_postfix(self) -> None:
        self.postfix.dir.mkdir()
        self.postfix.prepare()
        self.postfix.start()

    def state(self) -> dict[str, Any]:
        """What `python -m tests.lab down` needs to find this lab again."""
        return {"prefix": self.prefix, "workdir": str(self.workdir)}

    # --- namespaces ----------------------------------------------------------------------

    def ns(self, role: str) -> str:
        """Namespace name of a role: inet, sender, bot, dns, fw, mail."""
        return self.topology.ns(role)

    def _resolve_ns(self, ns: str) -> str:
        # Accept a role ("bot") or a full namespace name ("mxk123-bot").
        return self.ns(ns) if ns in A.ROLES else ns

    def exec(
        self, ns: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in a lab namespace (role or full name); output captured as text."""
        return run(in_ns(self._resolve_ns(ns), argv), timeout=timeout, check=check)

    def fw_exec(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the appliance namespace."""
        return self.exec("fw", argv, timeout=timeout, check=check)

    def plain_bridge(self, *, netfilter: bool = False) -> None:
        """An unfiltered br0 over fw's eth0+eth1 (baseline; the daemon builds its own br0).

        netfilter=True keeps br_netfilter on (no rules) to measure its cost alone.
        """
        self.topology.plain_bridge(netfilter=netfilter)

    def remove_bridge(self, name: str = "br0") -> None:
        self.topology.remove_bridge(name)

    # --- mail host -----------------------------------------------------------------------

    def received(self) -> list[Received]:
        return self.mail.received()

    def wait_for_mail(self, match: str | Callable[[Received], bool], timeout: float = 10.0) -> Received:
        """First received message with this subject (or matching a predicate); TimeoutError."""
        return self.mail.wait_for_mail(match, timeout)

    def knock_port_connections(self) -> list[dict[str, Any]]:
        """Connections the mail host accepted on ports 110/143/993/995."""
        return self.mail.connections()

    # --- sender (Postfix) ----------------------------------------------------------------

    def postfix_send(
        self,
        to: str = f"user@{A.ZONE}",
        subject: str = "lab test",
        *,
        address_preference: str | None = None,
        sender: str = f"probe@sender.{A.ZONE}",
        body: str = "lab test message\n",
    ) -> str:
        """Queue a message in the sender's Postfix; returns its Message-ID."""
        return self.postfix.send(to, subject, sender=sender, body=body, address_preference=address_preference)

    def postfix_flush(self) -> None:
        self.postfix.flush()

    def postfix_queue(self) -> list[dict[str, Any]]:
        return self.postfix.queue()

    def postfix_log(self) -> list[str]:
        return self.postfix.log()

    def postconf(self, settings: Mapping[str, str]) -> None:
        """Change the sender's main.cf (e.g. smtp_connect_timeout) and wait for the reload."""
        self.postfix.postconf(settings)

    # --- DNS -----------------------------------------------------------------------------

    def dns_query(
        self, name: str = A.ZONE, qtype: str = "MX", *, ns: str = "sender", server: str = A.DNS_V4
    ) -> dict[str, Any]:
        return dns_query(self._resolve_ns(ns), server, name, qtype)

    # --- bot and probes ------------------------------------------------------------------

    def add_bot_addresses(self, n: int, family: int) -> list[str]:
        """Add n more source addresses to the bot (198.51.100/24, 203.0.113/24 or
        2001:db8:b07::/64); returns them. Calling again continues where the last call ended."""
        have = [a for a in self.bot_extra if A.family_of(a) == family]
        new = A.bot_extra_addresses(len(have) + n, family)[len(have) :]
        self.topology.add_addresses("bot", new)
        self.bot_extra += new
        return new

    def connect(self, ns: str, src: str | None, dst: str, port: int, timeout: float = 3.0) -> ConnectResult:
        """One TCP connect from ns with src bound: accepted, reset, timeout (or unreachable)."""
        return connect_many(self._resolve_ns(ns), [(src, dst, port)], timeout=timeout)[0]

    def connect_many(
        self,
        ns: str,
        targets: Sequence[tuple[str | None, str, int]],
        *,
        timeout: float = 3.0,
        concurrency: int = 1,
    ) -> list[ConnectResult]:
        """Many connects in one process; concurrency 1 runs them strictly in order."""
        return connect_many(self._resolve_ns(ns), targets, timeout=timeout, concurrency=concurrency)

    def hold_open(self, ns: str, src: str, dst: str, port: int = 25, timeout: float = 5.0) -> HeldSession:
        """Open an SMTP session and keep it; .banner, .command("NOOP"), .close()."""
        held = HeldSession(self._resolve_ns(ns), src, dst, port, timeout)
        self._held.append(held)
        return held

    def swaks(
        self,
        server: str,
        *,
        to: str = f"user@{A.ZONE}",
        from_: str = f"bot@bot.{A.ZONE}",
        src: str | None = None,
        ns: str = "bot",
        port: int = 25,
        subject: str | None = None,
        extra: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> tuple[int, str]:
        """swaks from the bot (IPv4 or IPv6 follows the server address): (exit code, output)."""
        return swaks(
            self._resolve_ns(ns),
            server,
            to=to,
            from_=from_,
            port=port,
            src=src,
            subject=subject,
            extra=extra,
            timeout=timeout,
        )
