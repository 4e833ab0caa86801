"""Benchmark 3: how long putting a whitelist of N entries in force takes.

Two private namespaces, a measuring worker in each (bench/nsworker.py):
- engine: mxknock's own code. `warm` is netfilter.apply(new, previous=in force), what the
  daemon does when only the whitelist changed (sets swapped, tables left alone); `cold`
  is netfilter.apply(new) with no knowledge of the kernel (read, rewrite both tables and
  the sets); `engine` is the whole `mxknock apply` path in the daemon (YAML, validation,
  compile, bridge check, apply, deep verify, save), through Engine.apply_text.
- naive: the same rules by shell tools. `rules` is iptables-legacy-restore and
  ip6tables-legacy-restore of `mxknock rules` output with the whitelist written as one
  rule per entry (`-A MXKNOCK -s X -d mx2 -p tcp --dport 25 -j ACCEPT`; a faithful
  equivalent would need a second rule for mx1, so this flatters the baseline); `ipset` is
  `ipset restore` swapping in the whitelist sets alone.
Each repetition changes one entry (two variants alternate), as `mxknock whitelist add` does.
Whitelist entries: documentation networks, half IPv4 as far as the IPv4 documentation
ranges reach (1533 distinct networks), the rest IPv6 hosts in 2001:db8:a110::/48.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from .common import NsWorker, Row, Section, Spread, bridge_ports, interleaved, judge, private_netns, ratios, whitelist
from .labs import prefix

SIZES = (10, 100, 1000, 10000)
TRUSTED = 10000
GOAL_N, GOAL_S = 1000, 0.020
ARMS = ("warm", "cold", "engine", "verify deep", "verify shallow", "compile", "naive rules", "ipset restore")


def reps_for(n: int, quick: bool) -> int:
    if quick:
        return 3
    return {10: 15, 100: 15, 1000: 11}.get(n, 5)


def measure(engine: NsWorker, naive: NsWorker, n: int, reps: int) -> dict[str, list[float]]:
    engine.call("prepare", n=n)
    naive.call("prepare", n=n)
    arms: dict[str, Callable[[], float]] = {
        "warm": lambda: engine.call("warm"),
        "naive rules": lambda: naive.call("naive", kind="rules"),
        "cold": lambda: engine.call("cold"),
        "ipset restore": lambda: naive.call("naive", kind="ipset"),
        "engine": lambda: engine.call("engine_apply"),
        "verify deep": lambda: engine.call("verify", deep=True),
        "verify shallow": lambda: engine.call("verify", deep=False),
        "compile": lambda: engine.call("compile"),
    }
    return interleaved(reps, arms)


def proven_senders(n: int) -> list[str]:
    return [str(ipaddress.IPv6Address("2001:db8:7e57::") + i + 1) for i in range(n)]


def run(quick: bool = False) -> Section:
    section = Section(3, "Apply latency of a whitelist of N entries")
    results: dict[int, dict[str, list[float]]] = {}
    profiles: dict[str, str] = {}
    biggest = SIZES[-1]
    with private_netns(prefix("a-eng")) as ns_engine, private_netns(prefix("a-naive")) as ns_naive:
        bridge_ports(ns_engine)
        engine, naive = NsWorker(ns_engine), NsWorker(ns_naive)
        try:
            for n in SIZES:
                results[n] = measure(engine, naive, n, reps_for(n, quick))
            # Where the time goes: the goal's case, and the daemon's whole path at the largest size.
            engine.call("prepare", n=GOAL_N)
            profiles["warm"] = engine.call("profile", target="warm", top=25)
            engine.call("prepare", n=biggest)
            profiles["engine"] = engine.call("profile", target="engine_apply", top=25)
            # The proven senders' set is the kernel's to fill (up to 262,144 entries); an apply
            # should not cost more because it is full.
            engine.call("prepare", n=GOAL_N)
            naive.call("prepare", n=GOAL_N)
            engine.call("fill_trust", family=6, addresses=proven_senders(TRUSTED))
            with_trust = interleaved(
                3 if quick else 5,
                {"engine": lambda: engine.call("engine_apply"), "warm": lambda: engine.call("warm")},
            )
        finally:
            engine.close()
            naive.close()

    for n in SIZES:
        r = results[n]
        relative = Spread.of(ratios(r["warm"], r["naive rules"]))
        warm = Spread.of(r["warm"])
        section.rows.append(
            Row(
                f"apply {n} whitelist entries (warm: sets only)",
                warm.fmt("ms", 1e3),
                f"{Spread.of(r['naive rules']).fmt('ms', 1e3)} iptables-restore",
                f"{relative.fmt(digits=2)}× the baseline's time",
                f"< {GOAL_S * 1e3:g} ms" if n == GOAL_N else "",
                judge(r["warm"], GOAL_S, at_most=True) if n == GOAL_N else "",
            )
        )
    section.rows.append(
        Row(
            f"apply {GOAL_N} entries with {TRUSTED} proven senders: warm / whole `mxknock apply`",
            f"{Spread.of(with_trust['warm']).fmt('ms', 1e3, 1)} / {Spread.of(with_trust['engine']).fmt('ms', 1e3, 0)}",
            f"{Spread.of(results[GOAL_N]['warm']).fmt('ms', 1e3, 1)} / "
            f"{Spread.of(results[GOAL_N]['engine']).fmt('ms', 1e3, 0)} without",
            f"{Spread.of(with_trust['engine']).median / Spread.of(results[GOAL_N]['engine']).median:.1f}× "
            "the whole path without them",
        )
    )
    for n in (GOAL_N, biggest):
        r = results[n]
        section.rows.append(
            Row(
                f"apply {n} entries, cold / whole `mxknock apply` in the daemon",
                f"{Spread.of(r['cold']).fmt('ms', 1e3, 1)} / {Spread.of(r['engine']).fmt('ms', 1e3, 0)}",
                f"{Spread.of(r['naive rules']).fmt('ms', 1e3, 1)} iptables-restore",
                f"{Spread.of(ratios(r['cold'], r['naive rules'])).fmt(digits=1)}× / "
                f"{Spread.of(ratios(r['engine'], r['naive rules'])).fmt(digits=1)}× the baseline's time",
            )
        )

    header = "| N | " + " | ".join(ARMS) + " |\n|---|" + "---|" * len(ARMS)
    body = "\n".join(
        f"| {n} | " + " | ".join(Spread.of(results[n][a]).fmt(scale=1e3, digits=2) for a in ARMS) + " |" for n in SIZES
    )
    split = ", ".join(f"{n}: {sum(':' not in e for e in whitelist(n))} IPv4" for n in SIZES)
    section.notes += [
        "All times in ms, median [IQR]. Repetitions: "
        + ", ".join(f"{n}: {reps_for(n, quick)}" for n in SIZES)
        + f"; the arms alternate within each repetition. Entries per size ({split}, rest IPv6).",
        header + "\n" + body,
        "warm = netfilter.apply(new, previous=in force); cold = netfilter.apply(new); engine = "
        "Engine.apply_text (the daemon's whole path, incl. verify deep); verify deep/shallow = "
        "netfilter.verify reading the sets' members or only checking they exist; compile = "
        "compile_config; naive rules = iptables-legacy-restore + ip6tables-legacy-restore with one rule per "
        "entry; ipset restore = `ipset restore` swapping the whitelist sets (the shell-tool sets-only change).",
        growth(results),
        f"Profile (cProfile, cumulative time; cProfile itself slows the calls) of a warm apply at {GOAL_N} "
        f"entries:\n\n```\n{trim(profiles['warm'])}\n```",
        f"Profile of the whole `mxknock apply` path (Engine.apply_text) at {biggest} entries:\n\n"
        f"```\n{trim(profiles['engine'])}\n```",
    ]
    return section


def growth(results: dict[int, dict[str, list[float]]]) -> str:
    """Marginal cost per entry between the two largest sizes."""
    a, b = SIZES[-2], SIZES[-1]

    def per_entry(arm: str) -> float:
        return (Spread.of(results[b][arm]).median - Spread.of(results[a][arm]).median) / (b - a) * 1e6

    parts = ", ".join(f"{arm} {per_entry(arm):.1f} µs" for arm in ("warm", "cold", "engine", "naive rules"))
    return f"Growth from {a} to {b} entries, per added entry: {parts}."


def trim(profile: str) -> str:
    """pstats' table without its preamble and without the benchmark's own wrappers."""
    lines = [line for line in profile.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if "nsworker.py" not in line)
