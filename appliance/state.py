"""State that must outlive the daemon and the box: knocks and proven senders.

The kernel holds the live state (xt_recent lists, the trust ipsets); this module
saves it to the state directory and puts it back at start, before the bridge
forwards. Two limits of the kernel shape it:
- a knock written to /proc/net/xt_recent is stamped "now": a restored knock gets a
  fresh window, so only knocks still inside their window are restored, and only into a
  list the kernel did not keep (after a daemon restart the kernel's list is the truth:
  a knock missing from it was evicted since the save and must not push out live ones);
- an ipset timeout is at most ~24.8 days: the TrustBook remembers each proven
  sender's real expiry and re-adds it before the kernel lets it lapse.

A full trust set is 262,144 entries: they are read and written in bulk (ipset_bulk),
and saving runs outside the engine's lock, so the control API never waits for it.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ipsets, recent
from .compiler import IPSET_MAX_TIMEOUT, set_name
from .config import Config
from .files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/var/lib/mxknock")
FILE_NAME = "state.json"
VERSION = 1
REFRESH_TOLERANCE = 5.0  # seconds; ipset timeouts are whole seconds and reads take time


class StateError(ValueError):
    """The state file is unreadable or corrupt; it is reported and skipped."""


@dataclass
class Snapshot:
    saved_at: float  # wall clock (survives reboots, unlike monotonic time)
    knocks: dict[int, list[tuple[str, float]]] = field(default_factory=dict)  # family -> (address, age)
    trusted: dict[int, list[tuple[str, float]]] = field(default_factory=dict)  # family -> (address, expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "saved_at": self.saved_at,
            "knocks": {str(f): [{"address": a, "age": age} for a, age in v] for f, v in self.knocks.items()},
            "trusted": {str(f): [{"address": a, "expires_at": e} for a, e in v] for f, v in self.trusted.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        try:
            if data["version"] != VERSION:
                raise StateError(f"state version {data['version']} is not {VERSION}")
            return cls(
                saved_at=_finite(data["saved_at"]),
                knocks={_family(f): _entries(v, f, "age") for f, v in data["knocks"].items()},
                trusted={_family(f): _entries(v, f, "expires_at") for f, v in data["trusted"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"unexpected content ({exc})") from None


def _entries(items: Any, family_key: Any, time_key: str) -> list[tuple[str, float]]:
    """[(canonical address, time)] of one family's list; up to 262,144 of them, so the
    checks are inlined (inet_pton/ntop, float, isfinite) rather than called per entry."""
    family = socket.AF_INET if _family(family_key) == 4 else socket.AF_INET6
    pton, ntop, isfinite = socket.inet_pton, socket.inet_ntop, math.isfinite
    out = []
    for entry in items:
        address, when = entry["address"], float(entry[time_key])
        try:
            address = ntop(family, pton(family, address))
        except (OSError, TypeError):
            raise ValueError(f"{address!r} is not an IPv{family_key} address") from None
        if not isfinite(when) or when < 0:
            raise ValueError(f"{entry[time_key]!r} is not a time")
        out.append((address, when))
    return out


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not a time")
    return number


def _family(key: Any) -> int:
    family = int(key)
    if family not in (4, 6):
        raise ValueError(f"{key!r} is not an address family")
    return family


def write(path: Path, snapshot: Snapshot) -> None:
    """Atomically: a crash mid-write leaves the previous file, never half of one."""
    atomic_write(path, _encoded(snapshot.to_json()), mode=0o600)


ENCODE_CHUNK = 8192


def _encoded(data: dict[str, Any]) -> Iterator[str]:
    """The same JSON as json.dumps(data), in pieces: json.dump encodes in pure Python (~10 s
    for 262,144 proven senders here), one json.dumps in C holds the GIL for the whole of
    it (~0.6 s, the control API's threads wait); a few thousand entries at a time neither."""
    head = {k: v for k, v in data.items() if k != "trusted"}
    yield json.dumps(head)[:-1] + ', "trusted": {'
    for i, (family, entries) in enumerate(data["trusted"].items()):
        yield f"{', ' if i else ''}{json.dumps(family)}: ["
        for start in range(0, len(entries), ENCODE_CHUNK):
            yield (", " if start else "") + json.dumps(entries[start : start + ENCODE_CHUNK])[1:-1]
        yield "]"
    yield "}}"


def read(path: Path) -> Snapshot | None:
    """The saved snapshot; None if there is none; StateError if it is corrupt."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON (truncated?): {exc}") from None
    try:
        return Snapshot.from_json(data)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from None


@dataclass
class TrustBook:
    """Each proven sender's real expiry (wall clock), beyond what an ipset timeout can hold."""

    expires: dict[str, float] = field(default_factory=dict)
    # The kernel expiry of entries we wrote ourselves (restore, extend, add by hand): as long
    # as the kernel shows that expiry, no connection has refreshed the entry since.
    written: dict[str, float] = field(default_factory=dict)

    def record_write(self, address: str, expires_at: float, kernel_expiry: float) -> None:
        self.expires[address] = expires_at
        self.written[address] = kernel_expiry

    def observe(self, kernel: dict[str, int | None], lifetime: int, now: float) -> None:
        """Learn from the kernel: an entry a connection refreshed (SET --exist, with the full
        kernel timeout) now expires `lifetime` after that; entries the kernel dropped are gone."""
        kernel_timeout = min(lifetime, IPSET_MAX_TIMEOUT)
        for address, left in kernel.items():
            kernel_expiry = now + (left or 0)
            written = self.written.get(address)
            if written is not None and kernel_expiry <= written + REFRESH_TOLERANCE:
                continue
            self.written.pop(address, None)
            refreshed_at = kernel_expiry - kernel_timeout
            self.expires[address] = max(self.expires.get(address, 0.0), refreshed_at + lifetime)
        for address in set(self.expires) - set(kernel):
            del self.expires[address]
            self.written.pop(address, None)

    def due(self, kernel: dict[str, int | None], lifetime: int, now: float, margin: float) -> list[tuple[str, int]]:
        """Entries the kernel will drop within `margin` although their lifetime goes on:
        (address, timeout to re-add them with)."""
        kernel_timeout = min(lifetime, IPSET_MAX_TIMEOUT)
        out = []
        for address, left in kernel.items():
            left = left or 0
            expiry = self.expires.get(address, now + left)
            if left < margin and expiry > now + left + 1:
                out.append((address, int(min(kernel_timeout, expiry - now))))
        return out


def _host(address: str) -> str:
    return address.split("/")[0]


def knocks_to_restore(
    saved: list[tuple[str, float]], present: set[str], capacity: int, window: int, elapsed: float
) -> tuple[list[str], int]:
    """(knocks to write, oldest first; how many saved knocks had expired).

    A knock is written with the time of the write, so what is written last is the newest:
    oldest first keeps the kernel's eviction order. Only knocks still inside their window,
    and never more than the list holds (the newest win). If the kernel kept its list (a
    daemon restart, not a reboot: it holds entries), the kernel is the truth: a saved knock
    it no longer holds was evicted since the save, and writing it back would push out a
    live one. A reboot (or a new list) leaves the list empty."""
    live = [(address, age + elapsed) for address, age in saved if age + elapsed < window]
    expired = len(saved) - len(live)
    if present:
        return [], expired
    newest = sorted(live, key=lambda item: item[1])[: max(0, capacity)]
    return [address for address, _ in reversed(newest)], expired


class StateKeeper:
    """Captures, saves, restores and maintains the state of one running config.

    Thread-safe on its own: `_books` guards the TrustBooks (the control API's trusted
    commands and the periodic upkeep both change them), `_saving` makes saves one at a
    time. Neither is held while the file is written."""

    # Proven senders restored before the bridge forwards; the rest right after. 262,144
    # took under a second in bulk here, so the rest is normally empty.
    RESTORE_BUDGET = 2.0  # seconds
    RESTORE_CHUNK = 16384

    def __init__(self, directory: Path, sync_margin: float = 180.0):
        self.path = Path(directory) / FILE_NAME
        self.books: dict[int, TrustBook] = {4: TrustBook(), 6: TrustBook()}
        self.sync_margin = sync_margin
        self.restore_problem: str | None = None  # the saved state was skipped (until a save succeeds)
        self.save_problem: str | None = None  # the last save failed (until one succeeds)
        self.deferred: dict[int, list[tuple[str, float]]] = {}  # proven senders left for after the ports open
        self._books = threading.RLock()
        self._saving = threading.Lock()

    @property
    def last_problem(self) -> str | None:
        """What status warns about: a save that fails now, else a skipped saved state."""
        return self.save_problem or self.restore_problem

    def trusted(self, config: Config, family: int) -> list[tuple[str, float]]:
        """(address, seconds left) of each proven sender in a family: one bulk dump."""
        kernel = ipsets.entries(set_name("trust", family)) or {}
        now = time.time()
        with self._books:
            book = self.books[family]
            book.observe(kernel, config.trust.lifetime, now)
            expires = book.expires
            return [(a.partition("/")[0], expires[a] - now) for a in sorted(kernel)]

    def change(self, step: Callable[[], None]) -> None:
        """Run a change of the kernel set and the books (trusted add/remove) so that the
        upkeep never works from a dump older than it."""
        with self._books:
            step()

    def maintain(self, config: Config, knock_lists: dict[int, str]) -> None:
        """Periodic: extend long-lived proven senders, then save everything. Runs without
        the engine's lock; two saves never overlap."""
        with self._saving:
            kernel_by_family: dict[int, dict[str, int | None]] = {}
            for family in config.families():
                name = set_name("trust", family)
                with self._books:  # the dump inside: a trusted remove cannot slip in between
                    kernel = ipsets.entries(name) or {}
                    now = time.time()
                    book = self.books[family]
                    book.observe(kernel, config.trust.lifetime, now)
                    due = book.due(kernel, config.trust.lifetime, now, self.sync_margin)
                    if due:
                        ipsets.add_many(name, [(_host(a), timeout) for a, timeout in due])
                        for address, timeout in due:
                            book.record_write(address, book.expires[address], now + timeout)
                            kernel[address] = timeout
                kernel_by_family[family] = kernel
            self._write(self.capture(config, knock_lists, kernel_by_family))

    def capture(
        self,
        config: Config,
        knock_lists: dict[int, str],
        kernel_by_family: dict[int, dict[str, int | None]] | None = None,
    ) -> Snapshot:
        now = time.time()
        snapshot = Snapshot(saved_at=now)
        for family, list_name in knock_lists.items():
            report = recent.report(list_name, config.window)
            snapshot.knocks[family] = [(k.address, k.age) for k in report.knocks if k.time_left > 0]
        for family in config.families():
            if kernel_by_family is not None and family in kernel_by_family:
                kernel = kernel_by_family[family]
            else:
                kernel = ipsets.entries(set_name("trust", family)) or {}
            with self._books:
                expires = dict(self.books[family].expires)
            snapshot.trusted[family] = [(_host(a), expires.get(a, now + (left or 0))) for a, left in kernel.items()]
            # Not yet back in the kernel (restore's rest, see finish_restore): still ours to keep.
            snapshot.trusted[family] += [(a, e) for a, e in self.deferred.get(family, ()) if e > now]
        return snapshot

    def save(self, config: Config, knock_lists: dict[int, str]) -> None:
        with self._saving:
            self._write(self.capture(config, knock_lists))

    def _write(self, snapshot: Snapshot) -> None:
        """Write the file; a failure (a full disk) is a warning in status until a save works."""
        try:
            write(self.path, snapshot)
        except OSError as exc:
            self.save_problem = (
                f"state not saved to {self.path}: {exc.strerror or exc}; knocks and proven senders "
                "would be lost at the next restart"
            )
            raise
        self.save_problem = None
        self.restore_problem = None  # the file is good again: the skipped one is history

    def restore(self, config: Config, knock_lists: dict[int, str]) -> dict[str, int]:
        """Put saved state back before the bridge forwards; entries the kernel still has win.

        Order: knocks first (at most a list's capacity, and a sender that knocked before the
        restart retries mx2 within its window), then proven senders in bulk, the latest-expiring
        first, for at most RESTORE_BUDGET seconds. The rest waits in `deferred` for
        finish_restore() after the ports are open: until then such a sender only needs to
        knock again, while closed ports would stop all mail and every other flow."""
        counts = {"knocks": 0, "trusted": 0, "expired": 0, "deferred": 0}
        started = time.monotonic()  # the budget counts reading the file too
        try:
            snapshot = read(self.path)
        except StateError as exc:
            self.restore_problem = f"saved state skipped: {exc}"
            log.error(self.restore_problem)
            return counts
        if snapshot is None:
            return counts
        now = time.time()
        elapsed = max(0.0, now - snapshot.saved_at)
        for family, list_name in knock_lists.items():
            report = recent.report(list_name, config.window)
            present = {k.address for k in report.knocks}
            write_now, expired = knocks_to_restore(
                snapshot.knocks.get(family, []), present, report.capacity, config.window, elapsed
            )
            for address in write_now:
                recent.add(list_name, address)
            counts["knocks"] += len(write_now)
            counts["expired"] += expired
        if config.trust.enabled:
            for family in config.families():
                pending, expired = self._trust_to_restore(config, family, snapshot.trusted.get(family, []), now)
                counts["expired"] += expired
                done = 0
                while done < len(pending) and time.monotonic() - started < self.RESTORE_BUDGET:
                    chunk = pending[done : done + self.RESTORE_CHUNK]
                    self._add_trusted(config, family, chunk)
                    done += len(chunk)
                counts["trusted"] += done
                if pending[done:]:
                    self.deferred[family] = pending[done:]
                    counts["deferred"] += len(pending) - done
        log.info(
            "restored %(knocks)d knocks and %(trusted)d proven senders (%(expired)d expired, "
            "%(deferred)d left for after the ports open)",
            counts,
        )
        return counts

    def finish_restore(self, config: Config) -> int:
        """The proven senders restore() left for after the ports are open; returns how many."""
        done = 0
        for family, pending in sorted(self.deferred.items()):
            for i in range(0, len(pending), self.RESTORE_CHUNK):
                self._add_trusted(config, family, pending[i : i + self.RESTORE_CHUNK])
            done += len(pending)
        self.deferred = {}
        if done:
            log.info("restored the remaining %d proven senders", done)
        return done

    def _trust_to_restore(
        self, config: Config, family: int, saved: list[tuple[str, float]], now: float
    ) -> tuple[list[tuple[str, float]], int]:
        """(address, expires_at) not in the kernel, latest expiry first; and how many expired.
        Entries still in the kernel (a daemon restart, not a reboot) keep their timeout."""
        present = ipsets.entries(set_name("trust", family)) or {}
        prefix = 32 if family == 4 else 128
        book = self.books[family]
        pending = []
        expired = 0
        with self._books:
            for address, expires_at in saved:
                # A clock jump or a hand-edited file must not make anyone trusted for longer.
                expires_at = min(expires_at, now + config.trust.lifetime)
                key = f"{address}/{prefix}"
                if expires_at <= now:
                    expired += 1
                elif key in present:
                    book.record_write(key, expires_at, now + (present[key] or 0))
                else:
                    pending.append((address, expires_at))
        pending.sort(key=lambda item: item[1], reverse=True)
        return pending, expired

    def _add_trusted(self, config: Config, family: int, chunk: list[tuple[str, float]]) -> None:
        kernel_timeout = min(config.trust.lifetime, IPSET_MAX_TIMEOUT)
        now = time.time()
        batch = [(address, max(1, int(min(kernel_timeout, expires_at - now)))) for address, expires_at in chunk]
        ipsets.add_many(set_name("trust", family), batch)
        prefix = 32 if family == 4 else 128
        with self._books:
            book = self.books[family]
            for (address, expires_at), (_, timeout) in zip(chunk, batch, strict=True):
                book.record_write(f"{address}/{prefix}", expires_at, now + timeout)
