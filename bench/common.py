"""Shared helpers: statistics, interleaving, result rows, private namespaces, /proc readers.

Every figure the benchmarks report is a ratio or a difference against a baseline measured
in the same run, arm against arm in alternating order, because other work shares the CPU.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Median with quartiles and range of one set of repetitions."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        vals = sorted(values)
        if len(vals) == 1:
            q1 = q3 = vals[0]
        else:
            q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
        return cls(statistics.median(vals), q1, q3, vals[0], vals[-1], len(vals))

    def fmt(self, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
        """'12.3 ms [11.9–12.8]': the median with the interquartile range."""
        m, a, b = (x * scale for x in (self.median, self.q1, self.q3))
        u = f" {unit}" if unit else ""
        return f"{m:.{digits}f}{u} [{a:.{digits}f}–{b:.{digits}f}]"


def median_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap interval of the median (seeded: the same data give the same interval)."""
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int((1 - level) / 2 * resamples)], meds[int((1 + level) / 2 * resamples) - 1]


def judge(values: Sequence[float], limit: float, *, at_most: bool) -> str:
    """'met' or 'MISSED' when the 95 % interval of the median lies on one side of the limit;
    'unclear' when the noise of this run leaves it straddling the limit."""
    lo, hi = median_ci(values)
    good, bad = (hi <= limit, lo > limit) if at_most else (lo >= limit, hi < limit)
    return "met" if good else "MISSED" if bad else "unclear"


def ratios(subject: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-repetition ratios of paired measurements (same repetition, adjacent in time)."""
    return [s / b for s, b in zip(subject, baseline, strict=True)]


def differences(subject: Sequence[float], baseline: Sequence[float]) -> list[float]:
    return [s - b for s, b in zip(subject, baseline, strict=True)]


def interleaved(reps: int, arms: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each arm once per repetition, flipping the order every repetition (AB BA AB ...),
    so neither arm always runs first; value i of every arm belongs to repetition i."""
    names = list(arms)
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            results[name].append(arms[name]())
    return results


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    metric: str
    value: str  # the subject (mxknock), median [IQR]
    baseline: str  # the baseline measured in the same run
    compare: str  # ratio or difference, median [IQR]
    goal: str = ""
    verdict: str = ""  # judge(): met, MISSED, unclear; empty without a goal


@dataclass
class Section:
    number: int
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # markdown paragraphs and tables
    seconds: float = 0.0
    error: str | None = None


# --- machine -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found[1].strip() if found else cpu
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- namespaces and processes --------------------------------------------------------------


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(argv)}\n{proc.stdout}{proc.stderr}".rstrip())
    return proc.stdout


@contextmanager
def private_netns(name: str) -> Iterator[str]:
    """A fresh network namespace, removed on the way out (its processes killed first)."""
    if Path("/run/netns", name).exists():
        kill_netns(name)
        run(["ip", "netns", "delete", name])
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        kill_netns(name)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def bridge_ports(ns: str) -> None:
    """eth0 and eth1, the ports of the default config, so the engine can build its bridge.
    Veths with their peers left down (no dummy driver here; one pair bridged to itself
    would loop)."""
    for port in ("eth0", "eth1"):
        run(["ip", "-n", ns, "link", "add", port, "type", "veth", "peer", "name", f"peer-{port}"])


def kill_netns(name: str) -> None:
    """SIGKILL what is left in a namespace we made (only ours: our own workers)."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout
    for pid in (int(p) for p in out.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def python_in_ns(ns: str, *args: str) -> list[str]:
    """The venv's Python inside ns (same interpreter as the daemon's)."""
    return in_ns(ns, [sys.executable, *args])


@dataclass(frozen=True)
class ProcSample:
    """RSS and consumed CPU of one process at one moment."""

    rss_kib: int
    hwm_kib: int
    cpu_s: float  # utime + stime of all its threads
    wall: float


def sample(pid: int) -> ProcSample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    hwm = int(re.search(r"^VmHWM:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    # Fields after the command name (which may contain spaces) start at state: utime is 14th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return ProcSample(rss, hwm, (utime + stime) / CLK_TCK, time.monotonic())


def cpu_percent(a: ProcSample, b: ProcSample) -> float:
    """CPU used between two samples, in percent of one core."""
    return 100.0 * (b.cpu_s - a.cpu_s) / (b.wall - a.wall)


# --- documentation addresses ----------------------------------------------------------------

V4_DOC_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
V6_WHITELIST_NET = ipaddress.IPv6Network("2001:db8:a110::/48")


def v4_doc_networks() -> list[str]:
    """Every distinct network inside the three IPv4 documentation /24s (/32 down to /24): 1533."""
    out = []
    for net in V4_DOC_NETS:
        base = ipaddress.IPv4Network(net)
        for prefix in range(32, 23, -1):
            out.extend(str(n) for n in base.subnets(new_prefix=prefix))
    return out


def whitelist(n: int, variant: int = 0) -> list[str]:
    """n distinct documentation networks, half IPv4 (as far as the IPv4 documentation ranges
    reach: 1533) and the rest IPv6 hosts; `variant` changes the last entry, so two variants
    differ in one entry as after a `whitelist add`."""
    v4 = v4_doc_networks()[: min(n // 2, 1533)]
    v6 = [f"{V6_WHITELIST_NET.network_address + i + 1}/128" for i in range(n - len(v4))]
    entries = v4 + v6
    if variant and entries:
        entries[-1] = f"{V6_WHITELIST_NET.network_address + 0x10000000 + variant}/128"
    return entries


class NsWorker:
    """A bench/nsworker.py process inside namespace ns, driven one JSON line at a time."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.proc = subprocess.Popen(
            python_in_ns(ns, "-m", "bench.nsworker"),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def call(self, op: str, timeout: float = 300.0, **args: object) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"worker in {self.ns}: no answer to {op} within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker in {self.ns} exited ({self.proc.poll()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"worker in {self.ns}: {op}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
