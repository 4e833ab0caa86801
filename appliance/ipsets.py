"""Kernel ipsets through pyroute2: replaced whole and atomically with `swap`.

A new set is filled under a temporary name and swapped with the live one, so a
packet sees either the old whitelist or the new one, never half of it. After the
swap the temporary name holds the old contents: swapping again is the rollback.

Anyone's `ipset list` holds each set it dumps, and meanwhile the kernel refuses to
swap (EBUSY) or destroy (IPSET_ERR_BUSY) it: those steps retry for a bounded time,
and a staging set (`<name>-new`) is never left behind, not even after a failure.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPSet as IPSetSocket
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.ipset import IPSET_FLAG_LIST_HEADER, IPSET_FLAG_LIST_SETNAME

from . import ipset_bulk
from .ruleset import IPSet

log = logging.getLogger(__name__)

ENOENT = 2
EEXIST = 17
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
BUSY = {errno.EBUSY, ipset_bulk.IPSET_ERR_BUSY}
# An `ipset list` holds each set while it dumps it (a 50k set: ~0.1 s); a monitoring loop
# leaves gaps of a few milliseconds between sets and runs. Polling every 1-3 ms finds such
# a gap (a backoff to 100s of ms missed them: 1 apply in 6 still failed); 5 s at most.
BUSY_BUDGET = 5.0
BUSY_POLL = (0.001, 0.003)
STAGING_SUFFIX = "-new"
OUR_PREFIX = "mxknock-"

T = TypeVar("T")


class SetBusyError(RuntimeError):
    """Someone kept listing a set for the whole retry budget."""


def _staging(name: str) -> str:
    return f"{name}{STAGING_SUFFIX}"


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "code", None) if isinstance(exc, NetlinkError) else getattr(exc, "errno", None)
    return code in BUSY


def retry_busy(step: Callable[[], T], what: str, budget: float = BUSY_BUDGET) -> T:
    """Run `step`, again while the kernel says the set is busy (someone is listing it),
    polling every 1-3 ms (jittered, so as not to stay in step with a loop) for at most
    `budget` seconds; then SetBusyError says what happened."""
    started = time.monotonic()
    tries = 0
    while True:
        try:
            result = step()
        except (NetlinkError, OSError) as exc:
            if not _is_busy(exc):
                raise
            if time.monotonic() - started > budget:
                raise SetBusyError(
                    f"ipset {what}: set busy for {budget:g} s (someone kept listing it, e.g. `ipset list` "
                    "in a loop); nothing was changed, try again"
                ) from exc
            if tries == 0:
                log.info("ipset %s: set busy (someone is listing it), retrying", what)
            tries += 1
            time.sleep(random.uniform(*BUSY_POLL))
            continue
        if tries:
            log.info("ipset %s: done after %d busy retries (%.3f s)", what, tries, time.monotonic() - started)
        return result


def _create(ips: IPSetSocket, spec: IPSet, name: str, exclusive: bool = True) -> None:
    """exclusive=False: an existing set of the same shape is fine (the kernel says so)."""
    ips.create(
        name,
        stype=spec.kind,
        family=FAMILY[spec.family],
        maxelem=spec.maxelem,
        timeout=spec.timeout,
        exclusive=exclusive,
    )


@dataclass
class SwappedSet:
    """A live set whose previous contents wait under the staging name."""

    name: str

    def rollback(self, ips: IPSetSocket) -> None:
        retry_busy(lambda: ips.swap(_staging(self.name), self.name), f"swap back {self.name}")
        _destroy_if_present(ips, _staging(self.name))

    def commit(self, ips: IPSetSocket) -> None:
        _destroy_if_present(ips, _staging(self.name))


def session() -> IPSetSocket:
    """One netlink socket for a whole apply (each new one costs milliseconds)."""
    return IPSetSocket()


def ensure(ips: IPSetSocket, spec: IPSet) -> None:
    """Create a kept set if it is missing; never touch its entries. An existing one stays as
    it is even if its default timeout differs (trust.lifetime changed: the kernel would refuse
    to create it again, EEXIST): every add gives its own timeout, so the default is never used."""
    try:
        _create(ips, spec, spec.name, exclusive=False)
    except NetlinkError as exc:
        if exc.code != EEXIST:  # the same set, only of another default timeout: keep it
            raise


def replace(ips: IPSetSocket, spec: IPSet) -> SwappedSet:
    staging = _staging(spec.name)
    _destroy_if_present(ips, staging)
    _create(ips, spec, staging)
    try:
        retry_busy(lambda: ipset_bulk.add_networks(staging, spec.entries), f"fill {staging}")
        _create(ips, spec, spec.name, exclusive=False)  # the live set, on first use
        retry_busy(lambda: ips.swap(staging, spec.name), f"swap {spec.name}")
    except Exception:
        try:
            _destroy_if_present(ips, staging)
        except Exception:  # the original failure is what the caller must hear about
            log.exception("could not remove the staging set %s", staging)
        raise
    return SwappedSet(spec.name)


def _destroy_if_present(ips: IPSetSocket, name: str) -> None:
    def destroy() -> None:
        try:
            ips.destroy(name)
        except NetlinkError as exc:
            if exc.code != ENOENT:
                raise

    retry_busy(destroy, f"destroy {name}")


def remove_staging_sets() -> list[str]:
    """Destroy every staging set of ours (`mxknock-*-new`) that a crash or a failure left;
    returns their names. Run at start, before the first apply."""
    removed = []
    with IPSetSocket() as ips:
        names = [msg.get_attr("IPSET_ATTR_SETNAME") for msg in ips.list(flags=IPSET_FLAG_LIST_SETNAME)]
        for name in names:
            if name and name.startswith(OUR_PREFIX) and name.endswith(STAGING_SUFFIX):
                _destroy_if_present(ips, name)
                removed.append(name)
    return removed


def entries(name: str) -> dict[str, int | None] | None:
    """{'address/prefix': seconds left (None: no timeout)}, or None if the set does not exist.
    One bulk dump (about a second for 262,144 entries; pyroute2 took ~0.1 ms an entry)."""
    return ipset_bulk.dump(name)


def size(name: str) -> int | None:
    """How many entries a set holds (None if it does not exist), from its header alone:
    no dump of the members, which costs ~0.1 ms an entry through pyroute2."""
    with IPSetSocket() as ips:
        try:
            for msg in ips.list(name, flags=IPSET_FLAG_LIST_HEADER):
                data = msg.get_attr("IPSET_ATTR_DATA")
                if data is not None and data.get_attr("IPSET_ATTR_ELEMENTS") is not None:
                    return data.get_attr("IPSET_ATTR_ELEMENTS")
        except NetlinkError as exc:
            if exc.code == ENOENT:
                return None
            raise
    return 0


def exists(name: str) -> bool:
    return size(name) is not None


def members(name: str) -> set[str] | None:
    """The set's entries as 'address/prefix' strings, or None if it does not exist."""
    found = entries(name)
    return None if found is None else set(found)


def add_many(name: str, entries: Iterable[tuple[str, int | None]]) -> int:
    """Add (address, timeout) entries of one family in bulk; an entry already there gets
    the new timeout. Returns how many."""
    batch = list(entries)
    return retry_busy(lambda: ipset_bulk.add_entries(name, batch), f"add to {name}")


def add(name: str, family: int, address: str, timeout: int | None = None) -> None:
    with IPSetSocket() as ips:
        # exclusive=False: re-adding an entry refreshes its timeout instead of failing.
        ips.add(name, address, family=FAMILY[family], timeout=timeout, exclusive=False)


def delete(name: str, family: int, address: str) -> None:
    with IPSetSocket() as ips:
        ips.delete(name, address, family=FAMILY[family])


def destroy(ips: IPSetSocket, name: str) -> None:
    """Remove a set if it exists."""
    _destroy_if_present(ips, name)
