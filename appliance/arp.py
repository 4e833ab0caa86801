"""IPv4 address conflict detection (RFC 5227 ARP probes) for the management address.

IPv6 has duplicate address detection in the kernel; IPv4 does not, and an address that
another host on the uplink already has would make the box steal its traffic. A probe asks
"who has A?" with sender address 0.0.0.0, so no host's ARP cache learns anything from it.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

ETH_P_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
BROADCAST = b"\xff" * 6
# A header of the Ethernet frame and the ARP payload for IPv4 over Ethernet.
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
PROBES = 3
PROBE_INTERVAL = 0.2  # s; shorter than RFC 5227's 1-2 s: an apply should not take seconds
ANSWER_WAIT = 0.5  # s after the last probe; hosts on one link answer in well under a millisecond


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def probe_frame(mac: str, address: ipaddress.IPv4Address) -> bytes:
    own = mac_bytes(mac)
    header = _ETH.pack(BROADCAST, own, ETH_P_ARP)
    return header + _ARP.pack(1, 0x0800, 6, 4, ARP_REQUEST, own, b"\0" * 4, b"\0" * 6, address.packed)


def claimant(frame: bytes, mac: str, address: ipaddress.IPv4Address) -> str | None:
    """The MAC of another host that says it has `address` (a reply, or a request sent from
    it), else None. Our own frames and other probes (sender 0.0.0.0) claim nothing."""
    if len(frame) < _ETH.size + _ARP.size:
        return None
    _, _, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _, _ = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    if spa != address.packed or sha == mac_bytes(mac):
        return None
    return mac_text(sha)


def arp_probe(interface: str, mac: str, address: ipaddress.IPv4Address) -> str | None:
    """Probe the link for `address`: the MAC of a host that has it, or None (~1 s)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, ETH_P_ARP))
        frame = probe_frame(mac, address)
        for i in range(PROBES):
            sock.send(frame)
            deadline = time.monotonic() + (PROBE_INTERVAL if i < PROBES - 1 else ANSWER_WAIT)
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                owner = claimant(sock.recv(2048), mac, address)
                if owner is not None:
                    return owner
    return None
