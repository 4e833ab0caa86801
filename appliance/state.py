"""State that must outlive the daemon and the box: knocks and proven senders.

The kernel holds the live state (xt_recent lists, the trust ipsets); this module
saves it to the state directory and puts it back at start, before the bridge
forwards. Two limits of the kernel shape it:
- a knock written to /proc/net/xt_recent is stamped "now": a restored knock gets a
  fresh window, so only knocks still inside their window are restored;
- an ipset timeout is at most ~24.8 days: the TrustBook remembers each proven
  sender's real expiry and re-adds it before the kernel lets it lapse.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ipsets, recent
from .compiler import IPSET_MAX_TIMEOUT, set_name
from .config import Config

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
                knocks={
                    _family(f): [(_address(e["address"], f), _finite(e["age"])) for e in v]
                    for f, v in data["knocks"].items()
                },
                trusted={
                    _family(f): [(_address(e["address"], f), _finite(e["expires_at"])) for e in v]
                    for f, v in data["trusted"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"unexpected content ({exc})") from None


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


def _address(value: Any, family_key: Any) -> str:
    address = ipaddress.ip_address(str(value))
    if address.version != _family(family_key):
        raise ValueError(f"{value} is not an IPv{family_key} address")
    return str(address)


def write(path: Path, snapshot: Snapshot) -> None:
    """Atomically: a crash mid-write leaves the previous file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(snapshot.to_json(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class StateKeeper:
    """Captures, saves, restores and maintains the state of one running config."""

    def __init__(self, directory: Path, sync_margin: float = 180.0):
        self.path = Path(directory) / FILE_NAME
        self.books: dict[int, TrustBook] = {4: TrustBook(), 6: TrustBook()}
        self.sync_margin = sync_margin
        self.last_problem: str | None = None

    def trusted(self, config: Config, family: int) -> list[tuple[str, float]]:
        """(address, seconds left) of each proven sender in a family."""
        now = time.time()
        kernel = ipsets.entries(set_name("trust", family)) or {}
        book = self.books[family]
        book.observe(kernel, config.trust.lifetime, now)
        return [(_host(a), book.expires[a] - now) for a in sorted(kernel)]

    def maintain(self, config: Config, knock_lists: dict[int, str]) -> None:
        """Periodic: extend long-lived proven senders, then save everything."""
        now = time.time()
        for family in config.families():
            name = set_name("trust", family)
            kernel = ipsets.entries(name) or {}
            book = self.books[family]
            book.observe(kernel, config.trust.lifetime, now)
            for address, timeout in book.due(kernel, config.trust.lifetime, now, self.sync_margin):
                ipsets.add(name, family, _host(address), timeout)
                book.record_write(address, book.expires[address], now + timeout)
        self.save(config, knock_lists)

    def capture(self, config: Config, knock_lists: dict[int, str]) -> Snapshot:
        now = time.time()
        snapshot = Snapshot(saved_at=now)
        for family, list_name in knock_lists.items():
            report = recent.report(list_name, config.window)
            snapshot.knocks[family] = [(k.address, k.age) for k in report.knocks if k.time_left > 0]
        for family in config.families():
            kernel = ipsets.entries(set_name("trust", family)) or {}
            snapshot.trusted[family] = [
                (_host(a), self.books[family].expires.get(a, now + (left or 0))) for a, left in kernel.items()
            ]
        return snapshot

    def save(self, config: Config, knock_lists: dict[int, str]) -> None:
        write(self.path, self.capture(config, knock_lists))

    def restore(self, config: Config, knock_lists: dict[int, str]) -> dict[str, int]:
        """Put saved state back into an empty kernel; entries the kernel still has win."""
        counts = {"knocks": 0, "trusted": 0, "expired": 0}
        try:
            snapshot = read(self.path)
        except StateError as exc:
            self.last_problem = f"saved state skipped: {exc}"
            log.error(self.last_problem)
            return counts
        if snapshot is None:
            return counts
        now = time.time()
        elapsed = max(0.0, now - snapshot.saved_at)
        for family, list_name in knock_lists.items():
            present = {k.address for k in recent.report(list_name, config.window).knocks}
            for address, age in snapshot.knocks.get(family, []):
                if age + elapsed >= config.window:
                    counts["expired"] += 1
                elif address not in present:
                    recent.add(list_name, address)
                    counts["knocks"] += 1
        if config.trust.enabled:
            kernel_timeout = min(config.trust.lifetime, IPSET_MAX_TIMEOUT)
            for family in config.families():
                name = set_name("trust", family)
                present = ipsets.entries(name) or {}
                book = self.books[family]
                prefix = 32 if family == 4 else 128
                for address, expires_at in snapshot.trusted.get(family, []):
                    # A clock jump or a hand-edited file must not make anyone trusted for longer.
                    expires_at = min(expires_at, now + config.trust.lifetime)
                    key = f"{address}/{prefix}"
                    if expires_at <= now:
                        counts["expired"] += 1
                    elif key in present:
                        # Still in the kernel (a daemon restart, not a reboot): keep its timeout.
                        book.record_write(key, expires_at, now + (present[key] or 0))
                    else:
                        timeout = int(min(kernel_timeout, expires_at - now))
                        ipsets.add(name, family, address, timeout)
                        book.record_write(key, expires_at, now + timeout)
                        counts["trusted"] += 1
        log.info("restored %(knocks)d knocks and %(trusted)d proven senders (%(expired)d expired)", counts)
        return counts
