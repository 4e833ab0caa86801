"""Benchmark 4: reading the knock lists at scale (status and `mxknock knocks`).

recent.report has two paths: with_knocks=False, the numbers status needs (entries,
live, oldest age), and with_knocks=True, every entry parsed, for `mxknock knocks`.
Both are timed against reading and splitting the same text (the floor for any reader).

Real lists: the engine (bench/nsworker.py) applies the embedded default in a private
namespace, and both knock lists are filled to the kernel's capacity by writing
`+address` to /proc/net/xt_recent/<list>. Timed there: both report paths on one list and
the whole Engine.status(); then status again with 10,000 proven senders in the trust set.

Synthetic lists: kernel-format texts of 1k, 10k and 100k entries (this kernel's lists
hold 100; ip_list_tot can be raised on the appliance) through the same code,
recent.report(name, window, text=..., now_jiffies=..., hz=250, with_knocks=...), read
from a file. Peak Python heap from tracemalloc, in separate runs.
"""

from __future__ import annotations

import ipaddress
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import recent

from .common import V4_DOC_NETS, NsWorker, Row, Section, Spread, bridge_ports, interleaved, judge, private_netns, ratios
from .labs import prefix

WINDOW = 4000
HZ = 250
SIZES = (1000, 10000, 100000)
TRUSTED = 10000
GOAL_N, GOAL_S = 100000, 0.100
NOW_JIFFIES = 2**32 + 10_000_000


def v4_doc_hosts() -> list[str]:
    return [str(h) for net in V4_DOC_NETS for h in ipaddress.IPv4Network(net).hosts()]


def synthetic_text(n: int, family: int) -> str:
    """n entries as the kernel prints them, a third with two stamps, half inside the window.
    IPv6 sources in full form, as the kernel writes them; IPv4 sources cycle through the
    762 documentation hosts (the parser does not care about repeats)."""
    v6 = ipaddress.IPv6Address("2001:db8:b07::")
    v4 = v4_doc_hosts()
    lines = []
    for i in range(n):
        src = v4[i % len(v4)] if family == 4 else (v6 + i + 1).exploded
        last = NOW_JIFFIES - (i % (2 * WINDOW)) * HZ
        stamps, hits = (f"{last - HZ}, {last}", 2) if i % 3 == 0 else (f"{last}", 1)
        lines.append(f"src={src} ttl: 64 last_seen: {last} oldest_pkt: {hits} {stamps}")
    return "\n".join(lines) + "\n"


def read_split(path: Path) -> object:
    return [line.split() for line in path.read_text().splitlines()]


def report(path: Path, with_knocks: bool) -> recent.ListReport:
    text = path.read_text()
    return recent.report(path.name, WINDOW, text=text, now_jiffies=NOW_JIFFIES, hz=HZ, with_knocks=with_knocks)


# The two report paths and the floor, as (name, function of the file).
SYNTHETIC_ARMS: tuple[tuple[str, Callable[[Path], object]], ...] = (
    ("status path", lambda p: report(p, False)),
    ("knocks path", lambda p: report(p, True)),
    ("read+split", read_split),
)


def clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def synthetic(quick: bool) -> dict[tuple[int, int], dict[str, Any]]:
    out: dict[tuple[int, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mxkbench-") as tmp:
        for n in SIZES:
            for family in (4, 6):
                path = Path(tmp) / f"mxknock{family}-list"
                path.write_text(synthetic_text(n, family))
                reps = 2 if quick else {1000: 15, 10000: 7}.get(n, 5)
                times = interleaved(
                    reps, {name: (lambda f=f, p=path: clock(lambda: f(p))) for name, f in SYNTHETIC_ARMS}
                )
                full, numbers = report(path, True), report(path, False)
                if full.entries != n or numbers.entries != n or numbers.live != full.live:
                    raise RuntimeError(f"report found {full.entries}/{numbers.entries} of {n} synthetic entries")
                out[(n, family)] = {
                    "times": times,
                    # `mxknock knocks` also turns every entry into JSON: the extra cost on top.
                    "to_json": min(clock(lambda r=full: r.to_json(with_knocks=True)) for _ in range(3)),
                    "peak": {name: peak(lambda f=f, p=path: f(p)) for name, f in SYNTHETIC_ARMS},
                    "bytes": path.stat().st_size,
                }
    return out


def real(quick: bool) -> dict[str, Any]:
    reps = 5 if quick else 21
    capacity = recent.list_capacity()
    with private_netns(prefix("k")) as ns:
        bridge_ports(ns)
        worker = NsWorker(ns)
        try:
            lists = worker.call("start_engine", window=WINDOW)["knock_lists"]
            v4 = [str(ipaddress.IPv4Address("198.51.100.0") + i + 1) for i in range(capacity)]
            v6 = [str(ipaddress.IPv6Address("2001:db8:b07::") + i + 1) for i in range(capacity)]
            filled = [worker.call("fill_list", name=name, addresses=a) for name, a in zip(lists, (v4, v6), strict=True)]
            name = lists[0]
            times = interleaved(
                reps,
                {
                    "status path": lambda: worker.call("report", name=name, window=WINDOW, with_knocks=False),
                    "knocks path": lambda: worker.call("report", name=name, window=WINDOW, with_knocks=True),
                    "read+split": lambda: worker.call("read_split", name=name),
                    "status": lambda: worker.call("status"),
                },
            )
            status = worker.call("status_json")
            peaks = {
                "knocks path": worker.call("peak", target="report", name=name, window=WINDOW, with_knocks=True),
                "status": worker.call("peak", target="status"),
            }
            peaks = {k: v["peak_bytes"] for k, v in peaks.items()}
            trusted = [str(ipaddress.IPv6Address("2001:db8:7e57::") + i + 1) for i in range(TRUSTED)]
            worker.call("fill_trust", family=6, addresses=trusted)
            with_trust = interleaved(3 if quick else 7, {"status": lambda: worker.call("status")})["status"]
            profile = worker.call("profile", target="status", top=18)
        finally:
            worker.close()
    return {
        "capacity": capacity,
        "filled": filled,
        "times": times,
        "peaks": peaks,
        "with_trust": with_trust,
        "profile": profile,
        "evicting_warning": any("evicting" in w for w in status["warnings"]),
        "health": status["health"],
    }


def run(quick: bool = False) -> Section:
    section = Section(4, "Knock-list scale: reading and reporting status")
    live = real(quick)
    synth = synthetic(quick)
    t = live["times"]
    floor = Spread.of(t["read+split"]).fmt("ms", 1e3)
    for path in ("status path", "knocks path"):
        section.rows.append(
            Row(
                f"report one full knock list ({live['filled'][0]} entries, /proc), {path}",
                Spread.of(t[path]).fmt("ms", 1e3),
                f"{floor} read+split",
                f"{Spread.of(ratios(t[path], t['read+split'])).fmt(digits=1)}×",
            )
        )
    section.rows.append(
        Row(
            "whole Engine.status(), both lists full",
            Spread.of(t["status"]).fmt("ms", 1e3, 1),
            "—",
            f"with {TRUSTED} proven senders: {Spread.of(live['with_trust']).fmt('ms', 1e3, 1)}",
        )
    )
    # Status with one list of n entries: the measured status with the measured cost of one
    # full real list swapped for the synthetic list's (nothing else in status grows with n).
    base = Spread.of(t["status"]).median - Spread.of(t["status path"]).median
    for n in SIZES:
        for family in (4, 6):
            times = synth[(n, family)]["times"]
            goal = n == GOAL_N
            estimate = base + Spread.of(times["status path"]).median
            section.rows.append(
                Row(
                    f"report {n} synthetic IPv{family} entries, status path",
                    Spread.of(times["status path"]).fmt("ms", 1e3, 1),
                    f"{Spread.of(times['read+split']).fmt('ms', 1e3, 1)} read+split",
                    f"{Spread.of(ratios(times['status path'], times['read+split'])).fmt(digits=2)}×; "
                    f"status ≈ {estimate * 1e3:.0f} ms",
                    f"status < {GOAL_S * 1e3:g} ms" if goal else "",
                    judge([base + x for x in times["status path"]], GOAL_S, at_most=True) if goal else "",
                )
            )
    mib = 1 / 2**20
    section.notes += [
        f"Real lists: capacity {live['capacity']} (ip_list_tot), filled {live['filled']} (IPv4, IPv6); "
        f"health with both full and every entry fresh: {live['health']}, eviction warning shown: "
        f"{live['evicting_warning']}. Peak Python heap: knocks path "
        f"{live['peaks']['knocks path'] * mib:.2f} MiB, status {live['peaks']['status'] * mib:.2f} MiB.",
        "The status estimate at N entries is the measured status with one real list's status-path report "
        "replaced by the synthetic one at N (nothing else in status depends on the list's length).",
        "| entries | family | text | status path | knocks path | read+split | + knocks JSON | peak heap: "
        "status path / knocks path / read+split |\n|---|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {n} | IPv{f} | {r['bytes'] * mib:.1f} MiB | "
            + " | ".join(Spread.of(r["times"][a]).fmt("ms", 1e3, 1) for a, _ in SYNTHETIC_ARMS)
            + f" | {r['to_json'] * 1e3:.1f} ms | "
            + " / ".join(f"{r['peak'][a] * mib:.1f}" for a, _ in SYNTHETIC_ARMS)
            + " MiB |"
            for (n, f), r in synth.items()
        ),
        "knocks path: every entry parsed, as `mxknock knocks` needs; + knocks JSON: to_json(with_knocks=True) "
        "of that report on top (best of 3). Peak heap includes the text read from the file.",
        f"Profile of Engine.status() with both lists full and {TRUSTED} proven senders:\n\n```\n"
        + trim(live["profile"])
        + "\n```",
    ]
    return section


def trim(profile: str) -> str:
    lines = [line for line in profile.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if "nsworker.py" not in line)
