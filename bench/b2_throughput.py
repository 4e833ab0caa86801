"""Benchmark 2: connection rate and bulk throughput through the bridge.

Five identical labs: mxknockd (embedded default, Unlisting, proven senders on) and a
plain bridge (no br_netfilter), the comparison the goal is about; a second plain bridge,
an A/A control that shows how far two identical labs differ in the same run; and two
that split the cost: br_netfilter on with no rules (the kernel's bridge-to-IP hooks
alone), plus one stateful accept rule (conntrack, which any stateful filter pays). One
sink (bench/netload.py) serves mx2 in each lab's mail namespace.

The SMTP port is 2525 in all three: the lab's aiosmtpd holds port 25, and the same
server on both sides is what makes the figures comparable. mxknock compiles the same
rules for any `smtp_port`, so the connections take the full SMTP path: knocked sources
(16 of them, each refused once at mx1 first) are let through to mx2 by the knock rule,
marked, and earn trust on their first ACK.

Non-mail traffic (issue 10) is measured the same way on another port of mx2 (8080): nothing
mxknock filters, so its raw table keeps it out of conntrack; plain-bridge parity is the goal.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.lab import Lab
from tests.lab import addresses as A

from .common import Row, Section, Spread, in_ns, interleaved, judge, ratios
from .labs import (
    CONNTRACK_ONLY,
    NETLOAD,
    NF_ONLY,
    PLAIN_AGAIN,
    STATEFUL_ACCEPT,
    Pair,
    Sink,
    lab_pair,
    tables,
)

PORT = 2525
OTHER_PORT = 8080  # not a mail port: untracked by mxknock's raw table
SOURCES = 16
CONCURRENCY = 8
BULK_BYTES = 200 * 10**6
GOAL = 0.95


class Rig:
    """A lab with its sink on mx2 and knocked bot sources."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.sink = Sink(lab, A.MX2_V4, PORT)
        self.other = Sink(lab, A.MX2_V4, OTHER_PORT)
        self.sources = [A.BOT_V4, *lab.add_bot_addresses(SOURCES - 1, 4)]
        knocks = lab.connect_many("bot", [(src, A.MX1_V4, PORT) for src in self.sources])
        probes = lab.connect_many("bot", [(src, A.MX2_V4, PORT) for src in self.sources])
        if set(knocks) != {"reset"} or set(probes) != {"accepted"}:
            raise RuntimeError(f"{lab.prefix}: knocks {set(knocks)}, then mx2 {set(probes)}")

    def netload(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        out = self.lab.exec("bot", [sys.executable, str(NETLOAD), *args], timeout=timeout).stdout
        return json.loads(out)

    def rate_args(self, count: int, port: int = PORT) -> list[str]:
        srcs = [arg for src in self.sources for arg in ("--src", src)]
        return [
            "rate", "--dst", A.MX2_V4, "--port", str(port), "--count", str(count),
            "--concurrency", str(CONCURRENCY), *srcs,
        ]  # fmt: skip

    def start_rate(self, seconds: float) -> subprocess.Popen[str]:
        """A rate client that runs for `seconds` in the background (benchmark 5's load)."""
        argv = [sys.executable, str(NETLOAD), *self.rate_args(10**8), "--timeout", str(seconds)]
        return subprocess.Popen(in_ns(self.lab.ns("bot"), argv), stdout=subprocess.PIPE, text=True)

    def rate(self, count: int, port: int = PORT) -> float:
        """New connections per second (handshake completed) from the knocked sources."""
        r = self.netload(*self.rate_args(count, port))
        if r["failed"] or r["connections"] != count:
            raise RuntimeError(f"{self.lab.prefix}: {r['connections']} of {count} connected, {r['failed']} failed")
        return r["connections"] / r["seconds"]

    def bulk(self, size: int, port: int = PORT) -> float:
        """Bytes per second over one connection, until the sink has counted them all."""
        r = self.netload("bulk", "--dst", A.MX2_V4, "--port", str(port), "--src", A.BOT_V4, "--bytes", str(size))
        return r["bytes"] / r["seconds"]

    def close(self) -> None:
        self.sink.stop()
        self.other.stop()


# Kernel symbols by the part of the packet path they belong to (first match wins).
COMPONENTS = (
    ("NAT (null bindings of the empty nat table)", r"^(nf_nat|__nf_nat|nf_xfrm_me_harder)"),
    ("hooks of the mangle/raw/nat/security tables", r"^(iptable_|ip6table_)"),
    (
        "rule evaluation (ipt_do_table, matches, targets)",
        r"^(ipt_do_table|ip6t_do_table|xt_|physdev_mt|conntrack_mt|"
        r"connmark_|connbytes_mt|comment_mt|tcp_mt|multiport_mt|set_match|set_target|reject_tg|mark_tg)",
    ),
    ("xt_recent (knock list)", r"^recent_"),
    ("ipset (whitelist, proven senders)", r"^(ip_set|hash_ip|hash_net)"),
    (
        "conntrack",
        r"^(nf_conntrack|__nf_conntrack|nf_ct_|__nf_ct|nf_confirm|ipv[46]_conntrack|tcp_in_window|"
        r"init_conntrack|hash_conntrack|nf_ct|get_l4proto|nf_checksum|tcp_error)",
    ),
    ("br_netfilter and the netfilter hook walk", r"^(br_nf|nf_hook|setup_pre_routing|br_validate|ip_sabotage)"),
)


def kernel_profile(rig: Rig, seconds: float) -> str | None:
    """perf samples (cpu-clock) of the rate client and the sink in mxknock's lab, with the
    softirq work the kernel does in their context, by component. None without perf."""
    if shutil.which("perf") is None:
        return None
    client = rig.start_rate(seconds + 1.5)
    try:
        time.sleep(0.5)  # past the client's start-up
        with tempfile.TemporaryDirectory(prefix="mxkbench-") as tmp:
            data = str(Path(tmp) / "perf.data")
            pids = f"{client.pid},{rig.sink.proc.pid}"
            record = ["perf", "record", "-q", "-e", "cpu-clock", "-o", data, "-p", pids, "--", "sleep", str(seconds)]
            subprocess.run(record, capture_output=True, timeout=seconds + 30, check=True)
            report = ["perf", "report", "-i", data, "--stdio", "--sort", "sym"]
            text = subprocess.run(report, capture_output=True, text=True, timeout=60).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return f"(perf failed: {exc})"
    finally:
        client.communicate(timeout=seconds + 30)
    shares = {name: 0.0 for name, _ in COMPONENTS}
    top: list[tuple[float, str]] = []
    for m in re.finditer(r"^\s*([\d.]+)%\s+\[k\]\s+(\S+)", text, re.M):
        pct, symbol = float(m[1]), m[2]
        for name, pattern in COMPONENTS:
            if re.match(pattern, symbol):
                shares[name] += pct
                top.append((pct, symbol))
                break
    rows = "\n".join(f"| {name} | {pct:.1f} % |" for name, pct in shares.items())
    symbols = ", ".join(f"{sym} {pct:.2f} %" for pct, sym in sorted(top, reverse=True)[:12])
    return (
        f"Kernel profile (`perf record -e cpu-clock` of the rate client and the sink in mxknock's lab for "
        f"{seconds:g} s; the bridge and netfilter work runs in softirq in their context): share of all "
        "samples by component.\n\n| component | samples |\n|---|---|\n"
        + rows
        + f"\n\nTop netfilter symbols: {symbols}."
    )


def conntrack_count(lab: Lab) -> int:
    return int(lab.fw_exec(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)


def rigs_for(pair: Pair) -> dict[str, Rig]:
    return {name: Rig(lab) for name, lab in pair.labs().items()}


def run(quick: bool = False) -> Section:
    # Many short repetitions: each ratio pairs runs a second apart, so drifting load from
    # other work on the machine cancels out better than in a few long ones.
    reps = 3 if quick else 25
    count = 1000 if quick else 1500
    size = BULK_BYTES // 4 if quick else BULK_BYTES
    section = Section(2, "Connection rate and throughput through the bridge")
    with lab_pair("t", split_cost=True, smtp_port=PORT) as pair:
        rigs = rigs_for(pair)
        try:
            before = pair.appliance.status()["counters"]["after_knock"]["ipv4"]
            rigs["mxknock"].rate(200)  # warm-up: first connections of each source earn trust
            rate = interleaved(reps, {name: (lambda r=rig: r.rate(count)) for name, rig in rigs.items()})
            bulk = interleaved(reps, {name: (lambda r=rig: r.bulk(size)) for name, rig in rigs.items()})
            ct_before = conntrack_count(pair.filtered)
            other_rate = interleaved(
                reps, {name: (lambda r=rig: r.rate(count, OTHER_PORT)) for name, rig in rigs.items()}
            )
            other_bulk = interleaved(
                reps, {name: (lambda r=rig: r.bulk(size, OTHER_PORT)) for name, rig in rigs.items()}
            )
            ct_after = conntrack_count(pair.filtered)
            after = pair.appliance.status()["counters"]["after_knock"]["ipv4"]
            present = {name: tables(lab) for name, lab in pair.labs().items()}
            profile = kernel_profile(rigs["mxknock"], 2.0 if quick else 4.0)
        finally:
            for rig in rigs.values():
                rig.close()

    def compare(values: dict[str, list[float]]) -> str:
        text = f"{Spread.of(ratios(values['mxknock'], values['plain'])).fmt('%', 100, 1)} of plain"
        if PLAIN_AGAIN in values:  # the noise floor: identical labs, same run
            text += f" (A/A control: {Spread.of(ratios(values[PLAIN_AGAIN], values['plain'])).median:.1%})"
        return text

    connections = ("/s", 1.0, 0)
    megabytes = ("MB/s", 1e-6, 0)
    for label, samples, (unit, scale, digits) in (
        ("new TCP connections per second to mx2 (knocked sources)", rate, connections),
        (f"bulk throughput, {size / 1e6:.0f} MB over one connection", bulk, megabytes),
        (f"new TCP connections per second to mx2:{OTHER_PORT} (not mail: untracked)", other_rate, connections),
        (f"bulk throughput to mx2:{OTHER_PORT}, {size / 1e6:.0f} MB (not mail: untracked)", other_bulk, megabytes),
    ):
        section.rows.append(
            Row(
                label,
                Spread.of(samples["mxknock"]).fmt(unit, scale, digits),
                Spread.of(samples["plain"]).fmt(unit, scale, digits),
                compare(samples),
                f"≥ {GOAL:.0%} of plain",
                judge(ratios(samples["mxknock"], samples["plain"]), GOAL, at_most=False),
            )
        )
    arms = [n for n in ("mxknock", CONNTRACK_ONLY, NF_ONLY, PLAIN_AGAIN, "plain") if n in rate]
    section.notes += [
        f"{reps} repetitions per arm, interleaved; each rate repetition completes {count} handshakes "
        f"({CONCURRENCY} in flight, sources round-robin, closed with a reset so no TIME_WAIT piles up); "
        f"each bulk repetition sends {size / 1e6:.0f} MB from a 1 MiB buffer and stops the clock when the "
        "sink has counted every byte. Client and sink are Python (one thread each), as on every side.",
        f"mxknock's `after_knock` counter grew by {after - before} during the run: the connections took "
        "the knock rule, not an accept for everybody.",
        "| arm | connections/s | of plain | MB/s | of plain |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {Spread.of(rate[name]).fmt(digits=0)} | "
            f"{Spread.of(ratios(rate[name], rate['plain'])).fmt('%', 100, 1)} | "
            f"{Spread.of(bulk[name]).fmt(scale=1e-6, digits=0)} | "
            f"{Spread.of(ratios(bulk[name], bulk['plain'])).fmt('%', 100, 1)} |"
            for name in arms
        ),
        f"'{PLAIN_AGAIN}' is a second plain lab: its distance from 100 % is what two identical labs "
        f"differ by in this run, the floor under every other comparison. '{NF_ONLY}' is br0 with "
        "bridge-nf-call-iptables on and no rules (the bridge-to-IP hooks any iptables filtering on a "
        f"bridge pays); '{CONNTRACK_ONLY}' adds `{STATEFUL_ACCEPT}`, so conntrack tracks every packet as "
        "in any stateful filter. What mxknock costs beyond that is its own rules (knock list, sets, "
        "connmark, connbytes) and the tables below.",
        f"Non-mail traffic (port {OTHER_PORT} of mx2) in mxknock's lab: conntrack held {ct_before} entries "
        f"before its runs and {ct_after} after (the raw table keeps it untracked).",
        "| arm | non-mail connections/s | of plain | non-mail MB/s | of plain |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {Spread.of(other_rate[name]).fmt(digits=0)} | "
            f"{Spread.of(ratios(other_rate[name], other_rate['plain'])).fmt('%', 100, 1)} | "
            f"{Spread.of(other_bulk[name]).fmt(scale=1e-6, digits=0)} | "
            f"{Spread.of(ratios(other_bulk[name], other_bulk['plain'])).fmt('%', 100, 1)} |"
            for name in arms
        ),
        f"Tables in mxknockd's namespace: {', '.join(present['mxknock'])}; in the plain lab: "
        f"{', '.join(present['plain']) or 'none'}. mxknock uses filter, and raw (NOTRACK for all but mail); "
        "python-iptables would create the others when it resolves a target name that is not built in "
        "(`Target._is_standard_target()` walks `Rule.tables`, opening every table in `Table.ALL`, and opening "
        "a legacy table registers its hooks: NAT null bindings on every connection), so appliance/netfilter.py "
        "tells it they do not exist.",
    ]
    if profile:
        section.notes.append(profile)
    return section
