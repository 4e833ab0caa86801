"""Benchmark 1: delivery delay of legitimate mail, mxknock (Unlisting) vs a plain bridge.

A real Postfix in each of two identical labs sends to user@example.test (MX 10 mx1, MX 20
mx2, dual stack, IPv6 preferred). Through mxknock every mail is refused at mx1 (both
addresses) and delivered to mx2; through the plain bridge it goes to mx1 directly. The
mails alternate between the labs, one at a time.

Per mail: submission (the moment `sendmail` is started, through the lab's namespace
wrappers; under load they can return after the mail has already arrived, so their return
is no usable mark) to arrival (the receiver's clock when DATA completed). tcpdump in each sender namespace adds the
network part alone (first SYN to arrival) and the fallback (last RST from mx1 to the SYN
to mx2). All clocks are the host's realtime clock, shared by every namespace.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import Lab
from tests.lab import addresses as A

from .common import Row, Section, Spread, differences, in_ns, interleaved, judge
from .labs import lab_pair

GOAL_MS = 1.0
MX1 = {A.MX1_V4, A.MX1_V6}
MX2 = {A.MX2_V4, A.MX2_V6}
_PACKET = re.compile(r"^(\d+\.\d+) IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\]")


@dataclass(frozen=True)
class Mail:
    started: float  # before sendmail was called
    arrived: float
    local: str  # the server address it arrived on


@dataclass(frozen=True)
class Packet:
    time: float
    src: str
    dst: str
    flags: str


class Capture:
    """tcpdump on the sender's only link, SMTP port only, text output with epoch stamps."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.path = path
        self.out = path.open("w")
        argv = ["tcpdump", "-i", "eth0", "-n", "-tt", "-l", "--immediate-mode", "-s", "128", "tcp port 25"]
        self.proc = subprocess.Popen(in_ns(lab.ns("sender"), argv), stdout=self.out, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for _ in range(5):  # "verbose output suppressed", then "listening on eth0"
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break
        if self.proc.poll() is not None:
            raise RuntimeError(f"tcpdump failed: {line}")

    def stop(self) -> list[Packet]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.out.close()
        packets = []
        for line in self.path.read_text().splitlines():
            m = _PACKET.match(line)
            if m:
                packets.append(Packet(float(m[1]), m[2], m[4], m[6]))
        return packets


def send_one(lab: Lab, subject: str) -> Mail:
    started = time.time()
    lab.postfix_send(subject=subject)
    msg = lab.wait_for_mail(subject, timeout=30)
    return Mail(started, msg.time, msg.local)


def analyse(mail: Mail, packets: list[Packet]) -> dict[str, float | None]:
    """Network timings of one delivery from the capture (None when a step is missing)."""
    window = [p for p in packets if mail.started <= p.time <= mail.arrived]
    syns = [p for p in window if p.flags == "S"]
    first_syn = syns[0].time if syns else None
    to_mx2 = next((p.time for p in syns if p.dst in MX2), None)
    resets = [
        p.time for p in window if p.flags.startswith("R") and p.src in MX1 and (to_mx2 is None or p.time < to_mx2)
    ]
    # The handshake that carries the mail: mx1's through the plain bridge, mx2's through mxknock.
    synack = next((p.time for p in window if p.flags == "S."), None)
    return {
        "smtp_phase": None if first_syn is None else mail.arrived - first_syn,
        "setup": synack - first_syn if synack is not None and first_syn is not None else None,
        "fallback": to_mx2 - resets[-1] if to_mx2 is not None and resets else None,
        "knock_span": to_mx2 - first_syn if to_mx2 is not None and first_syn is not None else None,
        "resets": float(len(resets)),
    }


def span(values: list[float]) -> str:
    lo, hi = min(values, default=0), max(values, default=0)
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"


def run(quick: bool = False) -> Section:
    n = 6 if quick else 40
    section = Section(1, "Delivery delay of legitimate mail (real Postfix)")
    with lab_pair("d") as pair:
        labs = pair.labs()
        captures = {name: Capture(lab, lab.workdir / "sender-capture.txt") for name, lab in labs.items()}
        mails: dict[str, list[Mail]] = {name: [] for name in labs}
        try:
            for name, lab in labs.items():
                send_one(lab, f"warm-up {name}")  # spawns Postfix's smtp process; not counted

            def arm(name: str) -> float:
                mail = send_one(labs[name], f"bench {name} {len(mails[name])}")
                mails[name].append(mail)
                return mail.arrived - mail.started

            delays = interleaved(n, {name: (lambda name=name: arm(name)) for name in labs})
        finally:
            packets = {name: cap.stop() for name, cap in captures.items()}
    filtered, plain = delays["mxknock"], delays["plain"]
    net = {name: [analyse(m, packets[name]) for m in mails[name]] for name in labs}
    wrong = [m.local for m in mails["mxknock"] if m.local not in MX2] + [
        m.local for m in mails["plain"] if m.local not in MX1
    ]
    if wrong:
        section.notes.append(f"**Unexpected arrival addresses:** {wrong}")

    diff = Spread.of(differences(filtered, plain))
    section.rows.append(
        Row(
            "delivery, submission → arrival",
            Spread.of(filtered).fmt("ms", 1e3),
            Spread.of(plain).fmt("ms", 1e3),
            f"{diff.fmt('ms', 1e3)} added",
            f"≤ {GOAL_MS:g} ms added (median)",
            judge(differences(filtered, plain), GOAL_MS / 1e3, at_most=True),
        )
    )
    for key, metric, digits, goal in (
        ("smtp_phase", "network part, first SYN → arrival", 2, False),
        ("setup", "connection setup, first SYN → SYN-ACK that carries the mail", 3, True),
    ):
        values = {name: [x[key] for x in net[name]] for name in labs}
        if not all(v is not None for vs in values.values() for v in vs):
            section.notes.append(f"The capture missed a step of '{metric}' for some mails; row left out.")
            continue
        added = Spread.of(differences(values["mxknock"], values["plain"]))  # type: ignore[arg-type]
        section.rows.append(
            Row(
                metric,
                Spread.of(values["mxknock"]).fmt("ms", 1e3, digits),  # type: ignore[arg-type]
                Spread.of(values["plain"]).fmt("ms", 1e3, digits),  # type: ignore[arg-type]
                f"{added.fmt('ms', 1e3, digits)} added",
                f"≤ {GOAL_MS:g} ms added (median)" if goal else "",
                judge(differences(values["mxknock"], values["plain"]), GOAL_MS / 1e3, at_most=True)  # type: ignore[arg-type]
                if goal
                else "",
            )
        )
    fallbacks = [x["fallback"] for x in net["mxknock"] if x["fallback"] is not None]
    spans = [x["knock_span"] for x in net["mxknock"] if x["knock_span"] is not None]
    resets = [x["resets"] for x in net["mxknock"]]
    if fallbacks:
        section.rows.append(
            Row(
                "fallback, last RST from mx1 → SYN to mx2",
                Spread.of(fallbacks).fmt("ms", 1e3, 3),  # type: ignore[arg-type]
                "—",
                f"first SYN → SYN to mx2: {Spread.of(spans).fmt('ms', 1e3, 3)}",  # type: ignore[arg-type]
            )
        )
    section.notes += [
        f"{n} mails per side, alternating between the labs (order flipped every round), after one "
        "warm-up mail each. Values are medians [interquartile range]; 'added' is the median of the "
        "per-round differences (mxknock − plain).",
        f"Through mxknock Postfix met {span(resets)} resets from mx1 per mail (the lab's Postfix prefers "
        "IPv6: mx1's IPv6 address, then its IPv4 address) before connecting to mx2.",
        "Submission → arrival includes starting `sendmail` through the lab's wrappers (`ip netns exec`, "
        "`unshare`, bind mounts), Postfix's own queue handling (pickup, cleanup, qmgr, DNS lookups) "
        "and the Python receiver's SMTP dialogue, which vary by milliseconds from mail to "
        "mail, so its median difference carries that noise. The capture isolates what the bridge "
        "changes: connection setup runs from Postfix's first SYN to the SYN-ACK of the connection "
        "that then carries the mail (mx1 through the plain bridge; mx2, after the resets, through "
        "mxknock), and it is the precise estimate of the delay mxknock adds.",
    ]
    return section
