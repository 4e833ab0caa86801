"""Fixed addresses and names of the lab (documentation ranges only, RFC 5737 / RFC 3849)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ZONE = "example.test"

MX1_V4 = "192.0.2.10"
MX1_V6 = "2001:db8::10"
MX2_V4 = "192.0.2.20"
MX2_V6 = "2001:db8::20"
SENDER_V4 = "192.0.2.100"
SENDER_V6 = "2001:db8::100"
BOT_V4 = "192.0.2.200"
BOT_V6 = "2001:db8::200"
DNS_V4 = "192.0.2.53"
DNS_V6 = "2001:db8::53"

# Masks of the main addresses; the default routes are on-link anyway (no routers in the lab).
V4_PREFIXLEN = 24
V6_PREFIXLEN = 64

# Role -> (IPv4 addresses, IPv6 addresses) on that namespace's eth0.
HOST_ADDRESSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sender": ((SENDER_V4,), (SENDER_V6,)),
    "bot": ((BOT_V4,), (BOT_V6,)),
    "dns": ((DNS_V4,), (DNS_V6,)),
    "mail": ((MX1_V4, MX2_V4), (MX1_V6, MX2_V6)),
}

# Namespace roles, in creation order. inet is the switch; fw is the appliance.
ROLES: tuple[str, ...] = ("inet", "sender", "bot", "dns", "fw", "mail")

# Ports the mail host listens on besides SMTP, so knock-port probes hit a real listener.
KNOCK_PORTS: tuple[int, ...] = (110, 143, 993, 995)

# Pools for extra bot source addresses (flood tests). Sized to the documentation ranges.
BOT_EXTRA_V4_NETS = ("198.51.100.0/24", "203.0.113.0/24")
BOT_EXTRA_V6_NET = "2001:db8:b07::/64"


@dataclass(frozen=True)
class MxHost:
    """One MX record of example.test and the addresses its name resolves to."""

    name: str
    preference: int
    addresses: tuple[str, ...]


MX1 = MxHost(f"mx1.{ZONE}", 10, (MX1_V4, MX1_V6))
MX2 = MxHost(f"mx2.{ZONE}", 20, (MX2_V4, MX2_V6))

# Ready-made MX sets for the constructor argument `mx=` of Lab.
MX_DUAL_STACK: tuple[MxHost, ...] = (MX1, MX2)
MX_IPV4_ONLY: tuple[MxHost, ...] = (
    MxHost(MX1.name, 10, (MX1_V4,)),
    MxHost(MX2.name, 20, (MX2_V4,)),
)
# The mis-covered pair from DESIGN.md: mx1 A-only, mx2 A+AAAA.
MX_MX1_V4_ONLY: tuple[MxHost, ...] = (MxHost(MX1.name, 10, (MX1_V4,)), MX2)


def family_of(address: str) -> int:
    """4 or 6."""
    return ipaddress.ip_address(address).version


def bot_extra_addresses(n: int, family: int) -> list[str]:
    """The first n spare source addresses of a family (deterministic, so tests can predict them)."""
    if family == 4:
        pool = [str(host) for net in BOT_EXTRA_V4_NETS for host in ipaddress.ip_network(net).hosts()]
    elif family == 6:
        net6 = ipaddress.ip_network(BOT_EXTRA_V6_NET)
        # Enough for any flood test; the /64 itself is far bigger.
        pool = [str(net6.network_address + i) for i in range(1, min(n, 65534) + 1)]
    else:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    if n > len(pool):
        raise ValueError(f"at most {len(pool)} extra IPv{family} addresses, asked for {n}")
    return pool[:n]
