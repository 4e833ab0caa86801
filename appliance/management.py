"""The management address: the box's own address on the bridge, for SSH and metrics.

Without one the bridge holds no address at all (the transparent default); with one,
br0 gets exactly the configured addresses (plus an IPv6 link-local address, which
neighbour discovery with routers expects), a default route per configured gateway
that wins over the reset route, and root's authorized_keys file. Who may reach the
services is the compiler's business (MXKNOCK-INPUT), applied before this.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

from .arp import arp_probe
from .config import METRICS_PORT, IPAddress, IPInterface, Management
from .files import atomic_write

log = logging.getLogger(__name__)

# Below the reset route's metric (bridge.RESET_ROUTE_METRIC): replies to admins beyond
# the subnet go to the gateway; resets of bridged traffic leave by the bridge either way.
ROUTE_METRIC = 100
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
# One neighbour solicitation, answered within the kernel's 1 s retransmit timer, with room.
DAD_WAIT = 2.5
DEFAULTS = {4: "0.0.0.0/0", 6: "::/0"}
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


class ManagementError(RuntimeError):
    pass


def link_local(mac: str) -> ipaddress.IPv6Interface:
    """The EUI-64 link-local address the kernel itself would have made from the MAC."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return ipaddress.IPv6Interface((bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui]), 64))


def wanted_addresses(management: Management | None, mac: str) -> set[IPInterface]:
    if management is None:
        return set()
    wanted = set(management.addresses)
    if management.address(6) is not None:
        wanted.add(link_local(mac))
    return wanted


def withdraw(bridge_name: str, management: Management | None) -> None:
    """Take off the bridge every address and management route `management` does not want
    (None: all of them), adding nothing. The engine does this before the rules change."""
    _sync(bridge_name, management, add=False)


def apply(bridge_name: str, management: Management | None) -> None:
    """Make br0's addresses and management routes what `management` says (None: none)."""
    _sync(bridge_name, management, add=True)


def _sync(bridge_name: str, management: Management | None, add: bool) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge_name)
        if not found:
            raise ManagementError(f"no bridge {bridge_name} to put the management address on")
        index = found[0]
        link = ipr.get_links(index)[0]
        mac = link.get_attr("IFLA_ADDRESS")
        wanted = wanted_addresses(management, mac)
        present = {_interface(msg) for msg in ipr.get_addr(index=index)}
        try:
            if not any(a.version == 6 for a in wanted) and any(a.version == 6 for a in present):
                _drop_ipv6_silently(bridge_name)
                present = {a for a in present if a.version != 6}
            for interface in present - wanted:
                ipr.addr("del", index=index, address=str(interface.ip), prefixlen=interface.network.prefixlen)
            for family in (4, 6):
                gateway = management.gateway(family) if management else None
                _set_default_route(ipr, index, family, gateway, add=False)  # drop the unwanted ones only
            if add:
                carrier = link.get_attr("IFLA_OPERSTATE") == "UP"
                if any(a.version == 6 for a in wanted - present):
                    _ensure_dad(bridge_name)
                for interface in sorted(wanted - present, key=lambda a: a.version):
                    if carrier and interface.version == 4:
                        _refuse_if_taken_v4(bridge_name, mac, interface.ip)
                    ipr.addr("add", index=index, address=str(interface.ip), prefixlen=interface.network.prefixlen)
                if carrier:
                    _refuse_if_taken_v6(ipr, index, wanted - present)
                for family in (4, 6):
                    gateway = management.gateway(family) if management else None
                    _set_default_route(ipr, index, family, gateway, add=True)
        except ManagementError:
            raise
        except Exception as exc:  # pyroute2's NetlinkError carries the kernel's words
            raise ManagementError(f"cannot set the management address on {bridge_name}: {exc}") from exc


def _drop_ipv6_silently(bridge_name: str) -> None:
    """Remove every IPv6 address at once. Deleting them one by one makes the kernel leave
    their multicast groups with MLD reports on the wire (2, measured); turning IPv6 off and
    on again drops them without a word, and the box must stay silent without an address.
    IPv6 stays on for the resets (their route is put back by bridge.ensure_reset_routes)."""
    switch = Path(f"/proc/sys/net/ipv6/conf/{bridge_name}/disable_ipv6")
    switch.write_text("1")
    switch.write_text("0")


def _ensure_dad(bridge_name: str) -> None:
    """Duplicate address detection on, whatever the distribution's defaults say."""
    conf = Path(f"/proc/sys/net/ipv6/conf/{bridge_name}")
    (conf / "accept_dad").write_text("1")
    (conf / "dad_transmits").write_text("1")


def _refuse_if_taken_v4(bridge_name: str, mac: str, address: ipaddress.IPv4Address) -> None:
    try:
        owner = arp_probe(bridge_name, mac, address)
    except OSError as exc:  # no packet socket (a sandbox without AF_PACKET): the address still goes on
        log.warning("cannot check that no other host has %s (%s); using it unchecked", address, exc)
        return
    if owner is not None:
        raise ManagementError(
            f"management.address: {address} is already used by another host on the link ({owner}); pick a free one"
        )


def _refuse_if_taken_v6(ipr: IPRoute, index: int, added: set[IPInterface]) -> None:
    """The kernel runs duplicate address detection on each new IPv6 address: wait for its
    verdict, and take back an address another host already has."""
    wanted = {str(a.ip) for a in added if a.version == 6 and not a.ip.is_link_local}
    deadline = time.monotonic() + DAD_WAIT
    while wanted:
        states = {
            msg.get_attr("IFA_ADDRESS"): msg.get_attr("IFA_FLAGS") or msg["flags"]
            for msg in ipr.get_addr(index=index, family=socket.AF_INET6)
        }
        for address in sorted(wanted):
            flags = states.get(address, 0)
            if flags & IFA_F_DADFAILED:
                interface = next(a for a in added if str(a.ip) == address)
                ipr.addr("del", index=index, address=address, prefixlen=interface.network.prefixlen)
                raise ManagementError(
                    f"management.address: {address} is already used by another host on the link; pick a free one"
                )
            if not flags & IFA_F_TENTATIVE:
                wanted.discard(address)
        if not wanted or time.monotonic() > deadline:
            return  # still tentative: status reports it once DAD has spoken
        time.sleep(0.05)


def _interface(msg) -> IPInterface:
    return ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")


def _set_default_route(ipr: IPRoute, index: int, family: int, gateway: IPAddress | None, add: bool) -> None:
    ours = [
        route
        for route in ipr.get_routes(family=FAMILIES[family], oif=index)
        if route.get_attr("RTA_PRIORITY") == ROUTE_METRIC and route["dst_len"] == 0
    ]
    for route in ours:
        if gateway is None or route.get_attr("RTA_GATEWAY") != str(gateway):
            ipr.route("del", dst=DEFAULTS[family], oif=index, priority=ROUTE_METRIC, family=FAMILIES[family])
    if gateway is not None and add:
        ipr.route(
            "replace",
            dst=DEFAULTS[family],
            gateway=str(gateway),
            oif=index,
            priority=ROUTE_METRIC,
            family=FAMILIES[family],
        )


def write_authorized_keys(path: Path, management: Management | None) -> None:
    """root's authorized_keys for sshd (image/…/sshd_config.d): written whole and
    atomically, removed when there are no keys (then nobody can log in over SSH)."""
    try:
        _write_keys(path, management.ssh_keys if management else ())
    except OSError as exc:
        raise ManagementError(f"cannot write root's SSH keys to {path}: {exc.strerror or exc}") from exc


def _write_keys(path: Path, keys: tuple[str, ...]) -> None:
    if not keys:
        path.unlink(missing_ok=True)
        return
    header = "# written by mxknockd from management.ssh_keys; edits here are lost\n"
    # sshd's StrictModes: owned by root, writable by nobody else
    atomic_write(path, header + "".join(key + "\n" for key in keys), mode=0o644)


@dataclass(frozen=True)
class AddressState:
    address: str
    tentative: bool  # duplicate address detection still running
    dad_failed: bool  # another host on the link has this address


@dataclass(frozen=True)
class ManagementState:
    addresses: tuple[AddressState, ...]
    gateways: tuple[str, ...]

    def to_json(self) -> dict:
        return asdict(self)


def read_state(bridge_name: str) -> ManagementState:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge_name)
        if not found:
            return ManagementState((), ())
        index = found[0]
        addresses = []
        for msg in ipr.get_addr(index=index):
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            addresses.append(
                AddressState(
                    address=str(_interface(msg)),
                    tentative=bool(flags & IFA_F_TENTATIVE),
                    dad_failed=bool(flags & IFA_F_DADFAILED),
                )
            )
        gateways = [
            route.get_attr("RTA_GATEWAY")
            for family in FAMILIES.values()
            for route in ipr.get_routes(family=family, oif=index)
            if route.get_attr("RTA_PRIORITY") == ROUTE_METRIC and route["dst_len"] == 0
        ]
    return ManagementState(tuple(addresses), tuple(g for g in gateways if g))


def report(wanted: Management, state: ManagementState) -> dict:
    """The status' `management` entry: what is on the bridge, and what the config opens."""
    return {
        **state.to_json(),
        "ssh": bool(wanted.ssh_keys),
        "metrics": wanted.metrics,
        "metrics_port": METRICS_PORT,
        "allow": [str(n) for n in wanted.allow],
    }


def problems(management: Management | None, state: ManagementState) -> list[str]:
    """What keeps the configured management address from working, and any address on
    the bridge the config does not give it (the box would answer there) (for status)."""
    configured = {str(a) for a in management.addresses} if management else set()
    ipv6 = management is not None and management.address(6) is not None
    result = [
        f"the bridge has an address the config does not give it: {a.address} (the box answers there);"
        " `mxknock reload` removes it"
        for a in state.addresses
        if a.address not in configured and not (ipv6 and a.address.startswith("fe80:"))
    ]
    if management is None:
        return result
    found = {a.address: a for a in state.addresses}
    for interface in management.addresses:
        entry = found.get(str(interface))
        if entry is None:
            result.append(f"management address {interface} is not on the bridge")
        elif entry.dad_failed:
            result.append(f"management address {interface.ip} is already used by another host on the link")
    for gateway in management.gateways:
        if str(gateway) not in state.gateways:
            result.append(f"management gateway {gateway} has no route")
    return result
