"""Namespaces, veths, addresses and routes of the lab (no processes: see the service modules).

sender ─┐
bot    ─┼─ inet (switch sw0) ── eth0 [fw] eth1 ── eth0 mail (mx1 + mx2)
dns    ─┘
"""

from __future__ import annotations

from collections.abc import Sequence

from . import addresses as A
from .netns import delete_netns, ip_batch, kill_netns_processes, netns_exists, run, write_sysctls

SWITCH = "sw0"

# Every new namespace: addresses usable at once (no DAD), no RA autoconfig noise.
_BASE_SYSCTLS: dict[str, int] = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.dad_transmits": 0,
    "net.ipv6.conf.default.dad_transmits": 0,
    "net.ipv6.conf.default.accept_ra": 0,
    "net.ipv6.conf.all.disable_ipv6": 0,
    "net.ipv6.conf.default.disable_ipv6": 0,
}

# br_netfilter is built in and on by default in each new netns: keep the switch a plain switch,
# so nothing in `inet` can filter or conntrack lab traffic.
_NO_BRIDGE_NF: dict[str, int] = {
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.bridge.bridge-nf-call-ip6tables": 0,
    "net.bridge.bridge-nf-call-arptables": 0,
}


class Topology:
    """Builds and removes the six namespaces `<prefix>-<role>`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def ns(self, role: str) -> str:
        if role not in A.ROLES:
            raise ValueError(f"unknown role {role!r}; one of {A.ROLES}")
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(role) for role in A.ROLES]

    def build(self) -> None:
        ip_batch(None, (f"netns add {ns}" for ns in self.namespaces))
        for ns in self.namespaces:
            write_sysctls(ns, _BASE_SYSCTLS)
        write_sysctls(self.ns("inet"), _NO_BRIDGE_NF)
        self._build_switch()
        self._build_fw_links()
        for role, (v4s, v6s) in A.HOST_ADDRESSES.items():
            self._configure_host(role, v4s, v6s)

    def destroy(self) -> None:
        """Kill every process in the lab's namespaces, then delete them. Idempotent."""
        present = [ns for ns in self.namespaces if netns_exists(ns)]
        kill_netns_processes(present)
        for ns in present:
            delete_netns(ns)

    def _build_switch(self) -> None:
        inet = self.ns("inet")
        # Snooping off: with no MLD querier a snooping bridge can starve ND of the many
        # flood-test addresses; a plain switch floods multicast, which is what we want.
        lines = [f"link add {SWITCH} type bridge stp_state 0 mcast_snooping 0", f"link set {SWITCH} up"]
        for role in ("sender", "bot", "dns", "fw"):
            port = f"to-{role}"
            lines += [
                f"link add {port} type veth peer name eth0 netns {self.ns(role)}",
                f"link set {port} master {SWITCH}",
                f"link set {port} up",
            ]
        ip_batch(inet, ["link set lo up", *lines])

    def _build_fw_links(self) -> None:
        # The appliance gets two bare ports; the daemon makes br0, routes and sysctls itself.
        fw = self.ns("fw")
        ip_batch(
            fw,
            [
                "link set lo up",
                f"link add eth1 type veth peer name eth0 netns {self.ns('mail')}",
                "link set eth0 up",
                "link set eth1 up",
            ],
        )

    def _configure_host(self, role: str, v4s: Sequence[str], v6s: Sequence[str]) -> None:
        lines = ["link set lo up", "link set eth0 up"]
        lines += [f"addr add {a}/{A.V4_PREFIXLEN} dev eth0" for a in v4s]
        lines += [f"addr add {a}/{A.V6_PREFIXLEN} dev eth0 nodad" for a in v6s]
        # No routers: every documentation address is on-link. (`ip -batch` takes no -6; ::/0 it is.)
        lines += ["route replace default dev eth0", "route replace ::/0 dev eth0"]
        ip_batch(self.ns(role), lines)

    # --- helpers used by Lab -------------------------------------------------------------

    def add_addresses(self, role: str, addrs: Sequence[str]) -> None:
        lines = []
        for a in addrs:
            if A.family_of(a) == 4:
                lines.append(f"addr add {a}/32 dev eth0")
            else:
                lines.append(f"addr add {a}/128 dev eth0 nodad")
        ip_batch(self.ns(role), lines, timeout=60.0)

    def plain_bridge(self, *, netfilter: bool = False) -> None:
        fw = self.ns("fw")
        flag = 1 if netfilter else 0
        write_sysctls(
            fw,
            {
                "net.bridge.bridge-nf-call-iptables": flag,
                "net.bridge.bridge-nf-call-ip6tables": flag,
            },
        )
        ip_batch(
            fw,
            [
                "link add br0 type bridge stp_state 0 mcast_snooping 0",
                "link set eth0 master br0",
                "link set eth1 master br0",
                "link set br0 up",
            ],
        )

    def remove_bridge(self, name: str = "br0") -> None:
        run(["ip", "-n", self.ns("fw"), "link", "del", name], check=False)
