"""Reading (and writing) xt_recent knock lists in /proc/net/xt_recent.

A line looks like
    src=192.0.2.100 ttl: 64 last_seen: 4295072070 oldest_pkt: 2 4295071000, 4295072070
Times are in jiffies, which tick at the kernel's HZ (not CLK_TCK); the current
jiffies value is read from /proc/timer_list.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROC_DIR = Path("/proc/net/xt_recent")
LIST_SIZE_PARAM = Path("/sys/module/xt_recent/parameters/ip_list_tot")
TIMER_LIST = Path("/proc/timer_list")
DEFAULT_LIST_SIZE = 100
HZ_CANDIDATES = (100, 250, 300, 1000)
# Jiffies start 5 minutes before wrapping a 32-bit counter, to flush out wrap bugs.
INITIAL_OFFSET_SECONDS = 300

_LAST_SEEN = re.compile(r" last_seen: (\d+)")
_NUMBER = re.compile(r"\d+")
_LINE = re.compile(
    r"src=(?P<src>\S+) ttl: (?P<ttl>\d+) last_seen: (?P<last>\d+) oldest_pkt: (?P<idx>\d+) ?(?P<stamps>.*)"
)


@dataclass(frozen=True)
class RawEntry:
    address: str
    ttl: int
    last_seen: int  # jiffies
    stamps: tuple[int, ...]  # jiffies of the packets it remembers


@dataclass(frozen=True)
class Knock:
    address: str
    age: float  # seconds since the last knock
    time_left: float  # seconds its window still keeps mx2 open (0 once expired)
    hits: int

    def to_json(self) -> dict:
        return {
            "address": self.address,
            "age": round(self.age, 1),
            "time_left": round(self.time_left, 1),
            "hits": self.hits,
        }


def parse(text: str) -> list[RawEntry]:
    entries = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        stamps = tuple(map(int, _NUMBER.findall(match["stamps"])))
        entries.append(RawEntry(_normalized(match["src"]), int(match["ttl"]), int(match["last"]), stamps))
    return entries


def _normalized(src: str) -> str:
    """The kernel prints IPv6 sources uncompressed (2001:0db8:0000:...): compress them.
    inet_pton/ntop in C, not ipaddress: a full list is 100,000s of lines."""
    try:
        if ":" in src:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, src))
        socket.inet_pton(socket.AF_INET, src)
        return src
    except OSError:
        return str(ipaddress.ip_address(src))  # raises ValueError naming the bad text


def knocks(entries: list[RawEntry], now_jiffies: int, hz: int, window: int) -> list[Knock]:
    result = []
    for entry in entries:
        age = max(0, now_jiffies - entry.last_seen) / hz
        result.append(Knock(entry.address, age, max(0.0, window - age), len(entry.stamps) or 1))
    return result


def read_jiffies(timer_list: str | None = None) -> tuple[int, float]:
    """(jiffies, monotonic seconds) as the kernel printed them together."""
    text = timer_list if timer_list is not None else TIMER_LIST.read_text()
    jiffies = re.search(r"^jiffies: (\d+)", text, re.M)
    now = re.search(r"^now at (\d+) nsecs", text, re.M)
    if not jiffies or not now:
        raise RuntimeError(f"cannot find jiffies in {TIMER_LIST}")
    return int(jiffies[1]), int(now[1]) / 1e9


def hz_from_sample(jiffies: int, monotonic: float) -> int | None:
    """HZ from jiffies = 2^32 - 300*HZ + HZ*uptime; None when too close to call."""
    if abs(monotonic - INITIAL_OFFSET_SECONDS) < 30:
        return None
    estimate = (jiffies - 2**32) / (monotonic - INITIAL_OFFSET_SECONDS)
    best = min(HZ_CANDIDATES, key=lambda hz: abs(hz - estimate))
    return best if abs(best - estimate) < best * 0.05 else None


@lru_cache(maxsize=1)
def kernel_hz() -> int:
    hz = hz_from_sample(*read_jiffies())
    if hz is not None:
        return hz
    # Near 300 s of uptime the formula cannot tell: measure the tick rate instead.
    start, _ = read_jiffies()
    time.sleep(0.2)
    end, _ = read_jiffies()
    return min(HZ_CANDIDATES, key=lambda hz: abs(hz - (end - start) / 0.2))


def list_capacity() -> int:
    try:
        return int(LIST_SIZE_PARAM.read_text())
    except (OSError, ValueError):
        return DEFAULT_LIST_SIZE


@dataclass(frozen=True)
class ListReport:
    name: str
    exists: bool
    entries: int
    capacity: int
    window: int
    oldest_age: float | None
    live: int  # entries still inside the window
    knocks: tuple[Knock, ...]  # empty unless asked for: status needs only the numbers

    @property
    def evicting(self) -> bool:
        """Full, with its oldest entry still inside the window: new knocks push out live ones."""
        return self.entries >= self.capacity and self.oldest_age is not None and self.oldest_age < self.window

    def to_json(self, with_knocks: bool = False) -> dict:
        out = {
            "name": self.name,
            "exists": self.exists,
            "entries": self.entries,
            "live": self.live,
            "capacity": self.capacity,
            "window": self.window,
            "oldest_age": None if self.oldest_age is None else round(self.oldest_age, 1),
            "evicting": self.evicting,
        }
        if with_knocks:
            out["knocks"] = [k.to_json() for k in self.knocks]
        return out


def report(
    name: str,
    window: int,
    text: str | None = None,
    now_jiffies: int | None = None,
    hz: int | None = None,
    with_knocks: bool = True,
) -> ListReport:
    """The state of one knock list; `text`, `now_jiffies` and `hz` are for tests.
    Without `with_knocks` only the numbers are computed (status runs this every refresh)."""
    path = PROC_DIR / name
    if text is None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return ListReport(name, False, 0, list_capacity(), window, None, 0, ())
    if now_jiffies is None:
        now_jiffies, _ = read_jiffies()
    hz = hz or kernel_hz()
    if not with_knocks:
        entries, live, oldest = summary(text, now_jiffies, hz, window)
        return ListReport(name, True, entries, list_capacity(), window, oldest, live, ())
    found = knocks(parse(text), now_jiffies, hz, window)
    oldest_age = max((k.age for k in found), default=None)
    live = sum(1 for k in found if k.time_left > 0)
    return ListReport(name, True, len(found), list_capacity(), window, oldest_age, live, tuple(found))


def summary(text: str, now_jiffies: int, hz: int, window: int) -> tuple[int, int, float | None]:
    """(entries, entries inside the window, age of the oldest) without parsing addresses:
    one regex pass in C, so 100,000 entries take tens of milliseconds, not seconds."""
    seen = [int(j) for j in _LAST_SEEN.findall(text)]
    if not seen:
        return 0, 0, None
    live_since = now_jiffies - window * hz
    live = sum(1 for j in seen if j > live_since)
    return len(seen), live, max(0, now_jiffies - min(seen)) / hz


def add(name: str, address: str) -> None:
    """Record a knock by hand (stamped now; the kernel does not take a time)."""
    (PROC_DIR / name).write_text(f"+{address}\n")


def remove(name: str, address: str) -> None:
    (PROC_DIR / name).write_text(f"-{address}\n")
