"""Unlisting through the real daemon: knock on mx1, then mx2 (issue 2).

Every rule comes from mxknockd (started with a config file); the tests only probe from
the lab's sender and bot and read the kernel's knock lists for their assertions.
"""

from __future__ import annotations

import time

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text, recent_sources

MX1 = {4: A.MX1_V4, 6: A.MX1_V6}
MX2 = {4: A.MX2_V4, 6: A.MX2_V6}
BOT = {4: A.BOT_V4, 6: A.BOT_V6}
SENDER = {4: A.SENDER_V4, 6: A.SENDER_V6}
KNOCK_LIST = {4: "mxknock4-32", 6: "mxknock6-128"}
# Proven senders would let a source through mx2 without a knock once it got through once.
NO_TRUST = {"enabled": False, "lifetime": 3110400}
OTHER = {4: 6, 6: 4}


def knock_sources(lab: Lab, family: int) -> list[str]:
    """Source addresses in the kernel's knock list of a family (inside fw)."""
    return recent_sources(lab, KNOCK_LIST[family])


def counters(appliance: Appliance) -> dict[str, dict[str, int]]:
    return appliance.status()["counters"]


@pytest.mark.parametrize("family", [4, 6])
def test_postfix_delivers_through_mx2_after_mx1_refuses(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(mode="unlisting", window=600))
    subject = f"unlisting ipv{family}"
    lab.postconf({"smtp_address_preference": f"ipv{family}"})
    t0 = time.monotonic()
    lab.postfix_send(subject=subject)
    msg = lab.wait_for_mail(subject, timeout=20)
    elapsed = time.monotonic() - t0
    print(f"Postfix delivery over IPv{family} through Unlisting: {elapsed * 1000:.0f} ms (queue to receiver)")

    assert msg.local == MX2[family], "the mail must arrive on mx2: mx1 refuses everyone"
    assert msg.peer == SENDER[family]
    log = lab.postfix_log()
    refused = [
        i for i, line in enumerate(log) if f"connect to mx1.{A.ZONE}[{MX1[family]}]:25: Connection refused" in line
    ]
    sent = [
        i for i, line in enumerate(log) if f"relay=mx2.{A.ZONE}[{MX2[family]}]:25" in line and "status=sent" in line
    ]
    assert refused, "Postfix must have been refused at mx1 first:\n" + "\n".join(log)
    assert sent, "\n".join(log)
    assert refused[0] < sent[0]
    assert lab.postfix_queue() == []
    print("\n".join(line for line in log if "smtp[" in line))

    c = counters(appliance)
    assert c["knocks"][f"ipv{family}"] >= 1
    assert c["after_knock"][f"ipv{family}"] == 1
    assert c["refused"]["total"] == 0  # Postfix never came to mx2 without its knock
    assert SENDER[family] in knock_sources(lab, family)


@pytest.mark.parametrize("family", [4, 6])
def test_bot_straight_to_mx2_is_reset_and_knocking_opens_it(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(mode="unlisting", window=600))
    src, mx1, mx2 = BOT[family], MX1[family], MX2[family]
    assert lab.connect("bot", src, mx2, 25) == "reset"
    assert lab.connect("bot", src, mx2, 25) == "reset"  # refusing does not count as a knock
    assert knock_sources(lab, family) == []
    assert lab.connect("bot", src, mx1, 25) == "reset"
    assert knock_sources(lab, family) == [src]
    assert lab.connect("bot", src, mx2, 25) == "accepted"

    c = counters(appliance)
    fam, other = f"ipv{family}", f"ipv{OTHER[family]}"
    assert (c["refused"][fam], c["knocks"][fam], c["after_knock"][fam]) == (2, 1, 1)
    assert (c["refused"][other], c["knocks"][other], c["after_knock"][other]) == (0, 0, 0)


@pytest.mark.parametrize("family", [4, 6])
def test_knock_on_an_imap_port_opens_mx2(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(window=600, knock_ports=[110, 143, 993, 995], trust=NO_TRUST))
    src, mx1, mx2 = BOT[family], MX1[family], MX2[family]
    assert lab.connect("bot", src, mx2, 25) == "reset"
    # A port that is not a knock port knocks nothing (the mail host itself resets it).
    assert lab.connect("bot", src, mx1, 26) == "reset"
    assert lab.connect("bot", src, mx2, 25) == "reset"
    assert knock_sources(lab, family) == []

    assert lab.connect("bot", src, mx1, 143) == "accepted"  # the IMAP connection itself goes through
    assert lab.connect("bot", src, mx2, 25) == "accepted"
    assert knock_sources(lab, family) == [src]
    hits = [(h["peer"], h["local"], h["port"]) for h in lab.knock_port_connections()]
    assert hits == [(src, mx1, 143)]
    assert counters(appliance)["knocks"][f"ipv{family}"] == 1


def test_window_expires(lab: Lab, appliance: Appliance) -> None:
    window = 2
    appliance.start(config_text(window=window, trust=NO_TRUST))
    targets = [(BOT[4], MX1[4], 25), (BOT[6], MX1[6], 25), (BOT[4], MX2[4], 25), (BOT[6], MX2[6], 25)]
    assert lab.connect_many("bot", targets) == ["reset", "reset", "accepted", "accepted"]
    knocked = time.monotonic()
    time.sleep(max(0.0, knocked + window + 1.0 - time.monotonic()))
    assert lab.connect("bot", BOT[4], MX2[4], 25) == "reset"
    assert lab.connect("bot", BOT[6], MX2[6], 25) == "reset"
    # The entries stay in the list, but none of them counts any more.
    lists = {kl["name"]: kl for kl in appliance.status()["knock_lists"]}
    assert [(lists[KNOCK_LIST[f]]["entries"], lists[KNOCK_LIST[f]]["live"]) for f in (4, 6)] == [(1, 0), (1, 0)]
    # A fresh knock opens it again.
    assert lab.connect_many("bot", [(BOT[4], MX1[4], 25), (BOT[4], MX2[4], 25)]) == ["reset", "accepted"]


def test_session_held_open_survives_the_window(lab: Lab, appliance: Appliance) -> None:
    window = 3
    appliance.start(config_text(window=window, trust=NO_TRUST))
    sessions = {}
    for family in (4, 6):
        assert lab.connect("bot", BOT[family], MX1[family], 25) == "reset"
        held = lab.hold_open("bot", BOT[family], MX2[family], 25)
        assert held.connected, held.banner
        assert held.banner.code == 220
        assert held.command("EHLO bot.example.test").code == 250
        sessions[family] = held
    knocked = time.monotonic()
    time.sleep(max(0.0, knocked + window + 1.0 - time.monotonic()))
    for family, held in sessions.items():
        # New connections are refused again: the window really is over...
        assert lab.connect("bot", BOT[family], MX2[family], 25) == "reset"
        # ...but the session opened inside it keeps going.
        reply = held.command("NOOP")
        assert reply.ok and reply.code == 250, f"IPv{family} session cut after the window: {reply}"
        assert held.command("QUIT").code == 221
        held.close()


@pytest.mark.parametrize(("knock_family", "other_family"), [(4, 6), (6, 4)])
def test_knock_in_one_family_does_not_open_the_other(
    lab: Lab, appliance: Appliance, knock_family: int, other_family: int
) -> None:
    appliance.start(config_text(window=600))
    assert lab.connect("bot", BOT[knock_family], MX1[knock_family], 25) == "reset"
    assert lab.connect("bot", BOT[other_family], MX2[other_family], 25) == "reset"
    assert lab.connect("bot", BOT[knock_family], MX2[knock_family], 25) == "accepted"
    # A completed handshake in one family (a proven sender there) opens nothing in the other.
    assert lab.connect("bot", BOT[other_family], MX2[other_family], 25) == "reset"
    assert knock_sources(lab, knock_family) == [BOT[knock_family]]
    assert knock_sources(lab, other_family) == []


def test_knock_prefix_opens_mx2_for_the_knockers_network_only(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600, knock_prefix={"ipv4": 24, "ipv6": 64}, trust=NO_TRUST))
    v4 = lab.add_bot_addresses(2, 4)  # 198.51.100.1, .2: one /24, not the bot's 192.0.2.0/24
    v6 = lab.add_bot_addresses(2, 6)  # 2001:db8:b07::1, ::2: one /64, not the bot's 2001:db8::/64
    probes = [
        (v4[0], MX1[4], 25),  # knock from .1
        (v4[1], MX2[4], 25),  # its neighbour in the /24 gets through
        (BOT[4], MX2[4], 25),  # another /24 does not
        (v6[0], MX1[6], 25),
        (v6[1], MX2[6], 25),
        (BOT[6], MX2[6], 25),
    ]
    assert lab.connect_many("bot", probes) == ["reset", "accepted", "reset", "reset", "accepted", "reset"]
    lists = {kl["name"]: kl["entries"] for kl in appliance.status()["knock_lists"]}
    assert lists == {"mxknock4-24": 1, "mxknock6-64": 1}
