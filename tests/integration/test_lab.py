"""The lab itself, with a plain unfiltered bridge in fw (no mxknock daemon involved)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab import MX_IPV4_ONLY, Lab
from tests.lab import addresses as A
from tests.lab.netns import netns_exists, netns_pids


def test_dns_answers_mx_and_addresses(lab: Lab) -> None:
    mx = lab.dns_query(A.ZONE, "MX")
    assert mx["rcode"] == 0
    assert sorted(mx["answers"]) == ["10 mx1.example.test", "20 mx2.example.test"]
    assert lab.dns_query("mx2.example.test", "AAAA", server=A.DNS_V6)["answers"] == [A.MX2_V6]
    assert lab.dns_query("mx1.example.test", "A", ns="bot")["answers"] == [A.MX1_V4]
    assert lab.dns_query("nope.example.test", "A")["rcode"] == 3  # NXDOMAIN, not forwarded


def test_ipv4_only_mx_variant(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(mx=MX_IPV4_ONLY)
    assert lab.dns_query("mx1.example.test", "AAAA")["answers"] == []
    assert lab.dns_query("mx1.example.test", "A")["answers"] == [A.MX1_V4]


def test_nothing_passes_without_a_bridge(lab: Lab) -> None:
    # fw has bare ports until someone bridges them: the mail host is cut off.
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25, timeout=0.5) != "accepted"


@pytest.mark.parametrize(
    ("preference", "mx1_address", "sender_address"),
    [("ipv4", A.MX1_V4, A.SENDER_V4), ("ipv6", A.MX1_V6, A.SENDER_V6)],
)
def test_postfix_delivers_to_mx1_through_plain_bridge(
    lab: Lab, preference: str, mx1_address: str, sender_address: str
) -> None:
    lab.plain_bridge()
    subject = f"plain bridge {preference}"
    lab.postfix_send(to="user@example.test", subject=subject, address_preference=preference)
    msg = lab.wait_for_mail(subject, timeout=15)
    assert msg.local == mx1_address  # unfiltered: the preferred MX takes it at once
    assert msg.peer == sender_address
    assert msg.rcpt_tos == ("user@example.test",)
    assert msg.mail_from == "probe@sender.example.test"
    assert any(f"relay=mx1.example.test[{mx1_address}]:25" in line for line in lab.postfix_log())
    assert lab.postfix_queue() == []


def test_direct_connects_from_bot(lab: Lab) -> None:
    lab.plain_bridge()
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 143) == "accepted"  # knock-port listener
    assert lab.connect("bot", A.BOT_V6, A.MX1_V6, 26) == "reset"  # nothing listens there
    hits = lab.knock_port_connections()
    assert [(h["peer"], h["local"], h["port"]) for h in hits] == [(A.BOT_V4, A.MX1_V4, 143)]


def test_bot_extra_sources(lab: Lab) -> None:
    lab.plain_bridge()
    v4 = lab.add_bot_addresses(300, 4)
    v6 = lab.add_bot_addresses(50, 6)
    assert v4[0] == "198.51.100.1" and v4[-1].startswith("203.0.113.")
    assert v6[0] == "2001:db8:b07::1"
    targets = [(src, A.MX2_V4 if ":" not in src else A.MX2_V6, 25) for src in v4[:20] + v6[:20]]
    assert lab.connect_many("bot", targets, concurrency=20) == ["accepted"] * len(targets)
    assert lab.connect("bot", "203.0.113.254", A.MX2_V4, 25).startswith("error:")  # not added


def test_held_session_and_swaks(lab: Lab) -> None:
    lab.plain_bridge()
    with lab.hold_open("bot", A.BOT_V6, A.MX2_V6, 25) as held:
        assert held.connected and held.banner.code == 220
        assert held.command("EHLO bot.example.test").code == 250
        assert held.command("NOOP").code == 250
        assert held.command("QUIT").code == 221
        assert not held.command("NOOP").ok  # the server hung up after QUIT
    code, out = lab.swaks(A.MX2_V4, src=A.BOT_V4, subject="swaks v4")
    assert code == 0, out
    code, out = lab.swaks(A.MX2_V6, src=A.BOT_V6, subject="swaks v6")
    assert code == 0, out
    assert lab.wait_for_mail("swaks v4").local == A.MX2_V4
    assert lab.wait_for_mail("swaks v6").peer == A.BOT_V6


def test_teardown_leaves_nothing(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()
    namespaces = lab.topology.namespaces
    workdir: Path = lab.workdir
    assert all(netns_exists(ns) for ns in namespaces)
    assert netns_pids(lab.ns("sender"))  # postfix runs
    t0 = time.monotonic()
    lab.stop()
    assert time.monotonic() - t0 < 5
    assert not any(netns_exists(ns) for ns in namespaces)
    assert not workdir.exists()
    lab.stop()  # idempotent


def test_stale_lab_is_replaced(make_lab: Callable[..., Lab]) -> None:
    first = make_lab()
    # Same prefix again without stopping the first (as after a crash): setup cleans it up.
    again = Lab(first.prefix)
    try:
        again.start()
        again.plain_bridge()
        assert again.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "accepted"
    finally:
        again.stop()
