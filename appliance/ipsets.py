"""Kernel ipsets through pyroute2: replaced whole and atomically with `swap`.

A new set is filled under a temporary name and swapped with the live one, so a
packet sees either the old whitelist or the new one, never half of it. After the
swap the temporary name holds the old contents: swapping again is the rollback.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pyroute2 import IPSet as IPSetSocket
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.ipset import IPSET_FLAG_LIST_HEADER

from . import ipset_bulk
from .ruleset import IPSet

ENOENT = 2
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _staging(name: str) -> str:
    return f"{name}-new"


def _exists(ips: IPSetSocket, name: str) -> bool:
    try:
        list(ips.headers(name))  # a lazy generator: the error comes when it is read
    except NetlinkError as exc:
        if exc.code == ENOENT:
            return False
        raise
    return True


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
        ips.swap(_staging(self.name), self.name)
        ips.destroy(_staging(self.name))

    def commit(self, ips: IPSetSocket) -> None:
        ips.destroy(_staging(self.name))


def session() -> IPSetSocket:
    """One netlink socket for a whole apply (each new one costs milliseconds)."""
    return IPSetSocket()


def ensure(ips: IPSetSocket, spec: IPSet) -> None:
    """Create a kept set if it is missing; never touch its entries."""
    _create(ips, spec, spec.name, exclusive=False)


def replace(ips: IPSetSocket, spec: IPSet) -> SwappedSet:
    staging = _staging(spec.name)
    _destroy_if_present(ips, staging)
    _create(ips, spec, staging)
    try:
        ipset_bulk.add_networks(staging, spec.entries)
        _create(ips, spec, spec.name, exclusive=False)  # the live set, on first use
        ips.swap(staging, spec.name)
    except Exception:
        ips.destroy(staging)
        raise
    return SwappedSet(spec.name)


def _destroy_if_present(ips: IPSetSocket, name: str) -> None:
    try:
        ips.destroy(name)
    except NetlinkError as exc:
        if exc.code != ENOENT:
            raise


def entries(name: str) -> dict[str, int | None] | None:
    """{'address/prefix': seconds left (None: no timeout)}, or None if the set does not exist."""
    with IPSetSocket() as ips:
        if not _exists(ips, name):
            return None
        found: dict[str, int | None] = {}
        for msg in ips.list(name):
            adt = msg.get_attr("IPSET_ATTR_ADT")
            if adt is None:
                continue
            for data in adt.get_attrs("IPSET_ATTR_DATA"):
                ip_from = data.get_attr("IPSET_ATTR_IP_FROM")
                address = ip_from.get_attr("IPSET_ATTR_IPADDR_IPV4") or ip_from.get_attr("IPSET_ATTR_IPADDR_IPV6")
                # hash:ip entries carry no CIDR: they are single addresses.
                prefix = data.get_attr("IPSET_ATTR_CIDR") or (32 if ":" not in address else 128)
                found[f"{address}/{prefix}"] = data.get_attr("IPSET_ATTR_TIMEOUT")
        return found


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
