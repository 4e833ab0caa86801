"""mxknock's benchmarks (issue 5): run them, print a table, write bench/results.md.

    python -m bench.run [--quick] [--only N ...] [--output PATH]

Root only (namespaces, netfilter). Each benchmark compares mxknock with a baseline
measured in the same run; see each module's docstring for what exactly is measured.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from .common import Section, machine

MODULES = {
    1: "bench.b1_delivery",
    2: "bench.b2_throughput",
    3: "bench.b3_apply",
    4: "bench.b4_knocklist",
    5: "bench.b5_footprint",
    6: "bench.b6_trust",
}
RESULTS = Path(__file__).with_name("results.md")


def run_one(number: int, quick: bool) -> Section:
    t0 = time.monotonic()
    try:
        section: Section = importlib.import_module(MODULES[number]).run(quick=quick)
    except Exception as exc:  # one broken benchmark must not hide the others' results
        traceback.print_exc()
        section = Section(number, MODULES[number], error=f"{type(exc).__name__}: {exc}")
    section.seconds = time.monotonic() - t0
    return section


def table(sections: list[Section]) -> list[str]:
    lines = [
        "| # | metric | mxknock | baseline | comparison | goal | |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sections:
        if s.error:
            lines.append(f"| {s.number} | {s.title} | failed: {s.error.splitlines()[0]} | | | | |")
        for r in s.rows:
            lines.append(
                f"| {s.number} | {r.metric} | {r.value} | {r.baseline} | {r.compare} | {r.goal} | {r.verdict} |"
            )
    return lines


def report(sections: list[Section], args: argparse.Namespace, total: float) -> str:
    out = ["# mxknock benchmarks", ""]
    out += [f"- {k}: {v}" for k, v in machine_info.items()]
    out += [
        f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- run: `python -m bench.run{' --quick' if args.quick else ''}"
        + "".join(f" --only {n}" for n in args.only or ())
        + f"` in {total:.0f} s",
        "",
        "Medians with the interquartile range in brackets. Baselines run in the same process, "
        "alternating with the subject (order flipped every repetition); comparisons are medians "
        "of per-repetition ratios or differences. The machine is shared, so absolute figures "
        "wander; the comparisons are what to read. A goal is 'met' or 'MISSED' when the 95 % "
        "bootstrap interval of the median lies wholly on one side of it, 'unclear' otherwise.",
        "",
        *table(sections),
        "",
    ]
    for s in sections:
        out += [f"## {s.number}. {s.title}", "", f"Took {s.seconds:.0f} s.", ""]
        if s.error:
            out += [f"Failed: `{s.error}`", ""]
        for note in s.notes:
            out += [note, ""]
    return "\n".join(out)


machine_info: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", type=int, action="append", choices=sorted(MODULES), help="run benchmark N only")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the markdown report")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    machine_info.update(machine())
    t0 = time.monotonic()
    sections = []
    for number in sorted(set(args.only or MODULES)):
        print(f"== benchmark {number}: {MODULES[number]}", flush=True)
        sections.append(run_one(number, args.quick))
        print("\n".join(table(sections[-1:])), flush=True)
    text = report(sections, args, time.monotonic() - t0)
    args.output.write_text(text)
    print()
    print("\n".join(table(sections)))
    print(f"\nwritten to {args.output}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
