"""The ARP probe's frames (RFC 5227), built and read without a network."""

from __future__ import annotations

import ipaddress
import struct

from appliance.arp import ARP_REPLY, ARP_REQUEST, claimant, mac_bytes, probe_frame

OWN = "52:54:00:00:00:01"
OTHER = "52:54:00:00:00:99"
ADDRESS = ipaddress.IPv4Address("192.0.2.5")


def frame(op: int, sender_mac: str, sender_ip: str, target_ip: str = "192.0.2.5") -> bytes:
    eth = b"\xff" * 6 + mac_bytes(sender_mac) + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_bytes(sender_mac)
    arp += ipaddress.IPv4Address(sender_ip).packed + b"\0" * 6 + ipaddress.IPv4Address(target_ip).packed
    return eth + arp


def test_a_probe_asks_for_the_address_from_no_address() -> None:
    raw = probe_frame(OWN, ADDRESS)
    assert raw[:6] == b"\xff" * 6 and raw[6:12] == mac_bytes(OWN) and raw[12:14] == b"\x08\x06"
    assert raw == frame(ARP_REQUEST, OWN, "0.0.0.0")


def test_a_reply_or_a_request_from_the_address_is_a_claim() -> None:
    assert claimant(frame(ARP_REPLY, OTHER, "192.0.2.5"), OWN, ADDRESS) == OTHER
    assert claimant(frame(ARP_REQUEST, OTHER, "192.0.2.5", "192.0.2.1"), OWN, ADDRESS) == OTHER


def test_probes_our_own_frames_and_other_addresses_claim_nothing() -> None:
    assert claimant(frame(ARP_REQUEST, OTHER, "0.0.0.0"), OWN, ADDRESS) is None  # another host probing
    assert claimant(probe_frame(OWN, ADDRESS), OWN, ADDRESS) is None
    assert claimant(frame(ARP_REPLY, OWN, "192.0.2.5"), OWN, ADDRESS) is None
    assert claimant(frame(ARP_REPLY, OTHER, "192.0.2.6"), OWN, ADDRESS) is None
    assert claimant(b"\x00" * 20, OWN, ADDRESS) is None
    ipv4_frame = frame(ARP_REPLY, OTHER, "192.0.2.5")
    assert claimant(ipv4_frame[:12] + b"\x08\x00" + ipv4_frame[14:], OWN, ADDRESS) is None
