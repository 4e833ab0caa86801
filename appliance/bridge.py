"""The transparent bridge, with pyroute2: create or adopt it, and keep it closed until filtered.

Order matters: the bridge is prepared (ports enslaved, br_netfilter on, the route
that lets resets leave) while it is down; it is brought up only after the rules are
in place and verified. If filtering cannot be verified, `close()` stops forwarding.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute

from .config import Bridge

# The reset route is a last resort: a management default route, if any, wins.
RESET_ROUTE_METRIC = 4294967
IFF_UP = 1
NF_SYSCTLS = {
    4: Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
    6: Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
}

# Conntrack, per network namespace (the bridge's): only mail connections are tracked
# (the raw table untracks the rest), so the established timeout can be what mail needs
# instead of the kernel's 5 days, which abandoned handshakes would otherwise keep.
# RFC 5321 4.5.3.2: the longest an SMTP session sits idle is 10 min (waiting for the reply
# to the end of DATA); IMAP IDLE on a knock port re-issues at least every 29 min (RFC 2177).
# 30 min covers both with a margin; a table filled by abandoned sessions drains in 30 min.
CONNTRACK = Path("/proc/sys/net/netfilter")
ESTABLISHED_TIMEOUT = 1800
TIMEOUT_SYSCTL = "nf_conntrack_tcp_timeout_established"


class BridgeError(RuntimeError):
    pass


def _write_sysctl(path: Path, value: str) -> None:
    # pyroute2 has no sysctl API; /proc/sys is per network namespace, so this is ours.
    path.write_text(value + "\n")


def _read_sysctl(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def prepare(bridge: Bridge) -> None:
    """Create or adopt the bridge and enslave both ports, without starting to forward."""
    with IPRoute() as ipr:
        for role in ("outside", "inside"):
            port = getattr(bridge, role)
            if _index(ipr, port) is None:
                raise BridgeError(
                    f"bridge.{role}: no network interface named {port!r}; see `ip link` for the names this machine has"
                )
        nf_flags = {"br_nf_call_iptables": 1, "br_nf_call_ip6tables": 1}
        # No multicast snooping: the bridge would send its own MLD/IGMP reports and be seen.
        settings = {"br_stp_state": 0, "br_forward_delay": 0, "br_mcast_snooping": 0, **nf_flags}
        index = _index(ipr, bridge.name)
        if index is None:
            ipr.link("add", ifname=bridge.name, kind="bridge", **settings)
            index = _index(ipr, bridge.name)
        elif _bridge_settings_differ(ipr, index, settings):
            # Only when something differs: setting a bridge's options, even to the values
            # it has, makes the kernel re-send the box's MLD reports.
            ipr.link("set", index=index, kind="bridge", **settings)
        adopted_running = bool(ipr.get_links(index)[0]["flags"] & IFF_UP)
        if not adopted_running:
            # The bridge must be up to take routes; ports that are down keep it from
            # forwarding anything until open_ports().
            for port in (bridge.outside, bridge.inside):
                ipr.link("set", index=_index(ipr, port), state="down")
        for sysctl in NF_SYSCTLS.values():
            _write_sysctl(sysctl, "1")
        ipv4 = Path(f"/proc/sys/net/ipv4/conf/{bridge.name}")
        if ipv4.exists():
            # The box routes nothing: with a management address it takes no redirects
            # (anyone on the link could send them) and sends none.
            _write_sysctl(ipv4 / "accept_redirects", "0")
            _write_sysctl(ipv4 / "send_redirects", "0")
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{bridge.name}")
        if ipv6.exists():
            # IPv6 must be on for IPv6 resets to be routed, but without an address of its own
            # (no link-local: no DAD or MLD from the box), and never learning routes from outside.
            _write_sysctl(ipv6 / "accept_ra", "0")
            _write_sysctl(ipv6 / "accept_redirects", "0")
            _write_sysctl(ipv6 / "addr_gen_mode", "1")
            _write_sysctl(ipv6 / "disable_ipv6", "0")
        for port in (bridge.outside, bridge.inside):
            port_ipv6 = Path(f"/proc/sys/net/ipv6/conf/{port}/disable_ipv6")
            if port_ipv6.exists():
                _write_sysctl(port_ipv6, "1")  # a port is layer 2 only: no ND or MLD of its own
            ipr.link("set", index=_index(ipr, port), master=index)
        _release_other_ports(ipr, index, {bridge.outside, bridge.inside})
        ipr.link("set", index=index, state="up")
        _add_reset_routes(ipr, index, bridge.name)
    tune_conntrack()


def tune_conntrack() -> None:
    """The established timeout for the (mail) connections conntrack still tracks. Without
    conntrack loaded yet there is nothing to tune: status says so if it stays that way."""
    path = CONNTRACK / TIMEOUT_SYSCTL
    if path.exists():
        _write_sysctl(path, str(ESTABLISHED_TIMEOUT))


def _bridge_settings_differ(ipr: IPRoute, index: int, settings: dict[str, int]) -> bool:
    info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return True
    return any(data.get_attr(f"IFLA_{name.upper()}") != value for name, value in settings.items())


def _release_other_ports(ipr: IPRoute, index: int, wanted: set[str]) -> None:
    """A port the config no longer names (outside/inside changed) leaves the bridge, and
    stays down: unfiltered, it must not carry anything of its own."""
    for link in ipr.get_links():
        if link.get_attr("IFLA_MASTER") == index and link.get_attr("IFLA_IFNAME") not in wanted:
            ipr.link("set", index=link["index"], master=0, state="down")


def remove(name: str) -> None:
    """Delete a bridge the config no longer names (bridge.name changed); its routes go with it."""
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is not None:
            ipr.link("del", index=index)


def _add_reset_routes(ipr: IPRoute, index: int, name: str) -> None:
    # A reset (REJECT tcp-reset) on bridged traffic is only sent if some route
    # leads back toward the client; it then leaves with the mail server's MAC.
    ipr.route("replace", dst="0.0.0.0/0", oif=index, priority=RESET_ROUTE_METRIC, family=socket.AF_INET)
    if Path(f"/proc/sys/net/ipv6/conf/{name}").exists():
        ipr.route("replace", dst="::/0", oif=index, priority=RESET_ROUTE_METRIC, family=socket.AF_INET6)


def ensure_reset_routes(name: str) -> None:
    """Put the reset routes back: the kernel flushes an interface's IPv4 routes when its
    last IPv4 address goes (e.g. the management address is removed)."""
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is not None:
            _add_reset_routes(ipr, index, name)


def open_ports(bridge: Bridge) -> None:
    """Start forwarding: call only once the rules are verified."""
    with IPRoute() as ipr:
        for name in (bridge.name, bridge.outside, bridge.inside):
            ipr.link("set", index=_index(ipr, name), state="up")


def close(bridge: Bridge) -> None:
    """Stop forwarding (fail closed): both ports go down; the bridge keeps its routes."""
    with IPRoute() as ipr:
        for name in (bridge.outside, bridge.inside):
            index = _index(ipr, name)
            if index is not None:
                ipr.link("set", index=index, state="down")


@dataclass(frozen=True)
class PortState:
    name: str
    present: bool
    enslaved: bool
    up: bool
    carrier: bool


@dataclass(frozen=True)
class BridgeState:
    name: str
    present: bool
    up: bool
    nf_call_iptables: bool
    nf_call_ip6tables: bool
    sysctl_iptables: bool
    sysctl_ip6tables: bool
    ports: tuple[PortState, ...]
    reset_routes: tuple[int, ...] = ()  # families with the route resets need

    @property
    def filtering(self) -> bool:
        """br_netfilter really hands bridged packets to iptables (else every rule is bypassed)."""
        return (
            self.present
            and self.nf_call_iptables
            and self.nf_call_ip6tables
            and self.sysctl_iptables
            and self.sysctl_ip6tables
            and all(p.enslaved for p in self.ports)
        )

    @property
    def forwarding(self) -> bool:
        return self.present and self.up and all(p.up and p.enslaved for p in self.ports)

    def to_json(self) -> dict:
        return {**asdict(self), "filtering": self.filtering, "forwarding": self.forwarding}


def read_state(bridge: Bridge) -> BridgeState:
    with IPRoute() as ipr:
        index = _index(ipr, bridge.name)
        link = ipr.get_links(index)[0] if index is not None else None
        data = {}
        if link is not None:
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            data = data or {}
        reset_routes = tuple(
            family
            for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6))
            if index is not None
            and any(
                r.get_attr("RTA_PRIORITY") == RESET_ROUTE_METRIC and r["dst_len"] == 0
                for r in ipr.get_routes(family=af, oif=index)
            )
        )
        ports = []
        for name in (bridge.outside, bridge.inside):
            port_index = _index(ipr, name)
            port = ipr.get_links(port_index)[0] if port_index is not None else None
            ports.append(
                PortState(
                    name=name,
                    present=port is not None,
                    enslaved=port is not None and index is not None and port.get_attr("IFLA_MASTER") == index,
                    up=port is not None and bool(port["flags"] & IFF_UP),
                    carrier=port is not None and port.get_attr("IFLA_CARRIER") == 1,
                )
            )

    def flag(attr: str) -> bool:
        return bool(data.get_attr(attr)) if data else False

    return BridgeState(
        name=bridge.name,
        present=link is not None,
        up=link is not None and bool(link["flags"] & IFF_UP),
        nf_call_iptables=flag("IFLA_BR_NF_CALL_IPTABLES"),
        nf_call_ip6tables=flag("IFLA_BR_NF_CALL_IP6TABLES"),
        sysctl_iptables=_read_sysctl(NF_SYSCTLS[4]) == "1",
        sysctl_ip6tables=_read_sysctl(NF_SYSCTLS[6]) == "1",
        ports=tuple(ports),
        reset_routes=reset_routes,
    )


@dataclass(frozen=True)
class ConntrackState:
    """The fill of this namespace's conntrack table (None: conntrack is not loaded).
    The count is per namespace; the maximum is the whole box's (read-only in a namespace)."""

    entries: int | None
    max: int | None
    timeout_established: int | None

    @property
    def fill(self) -> float | None:
        if self.entries is None or not self.max:
            return None
        return self.entries / self.max

    def to_json(self) -> dict:
        fill = self.fill
        return {
            **asdict(self),
            "fill": None if fill is None else round(fill, 4),
            "expected_timeout_established": ESTABLISHED_TIMEOUT,
        }


def read_conntrack() -> ConntrackState:
    def number(name: str) -> int | None:
        text = _read_sysctl(CONNTRACK / name)
        return int(text) if text and text.isdigit() else None

    return ConntrackState(number("nf_conntrack_count"), number("nf_conntrack_max"), number(TIMEOUT_SYSCTL))
