"""Nolisting, backup-mx and selective modes through the real daemon (issue 2)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text, recent_sources

MX1 = {4: A.MX1_V4, 6: A.MX1_V6}
MX2 = {4: A.MX2_V4, 6: A.MX2_V6}
BOT = {4: A.BOT_V4, 6: A.BOT_V6}
KNOCK_LIST = {4: "mxknock4-32", 6: "mxknock6-128"}
NO_TRUST = {"enabled": False, "lifetime": 3110400}


def knock_sources(lab: Lab, family: int) -> list[str]:
    """Source addresses in the kernel's knock list of a family (inside fw)."""
    return recent_sources(lab, KNOCK_LIST[family])


@pytest.mark.parametrize("family", [4, 6])
def test_nolisting_resets_mx1_and_opens_mx2_to_all(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(mode="nolisting", window=600))
    others = lab.add_bot_addresses(2, family)
    # Nobody has knocked: mx2 is open to every source anyway.
    assert lab.connect_many("bot", [(src, MX2[family], 25) for src in (BOT[family], *others)]) == ["accepted"] * 3
    assert lab.connect("bot", BOT[family], MX1[family], 25) == "reset"
    assert lab.connect("bot", BOT[family], MX2[family], 25) == "accepted"
    # mx1 still records knocks, so a switch back to unlisting finds a warm list.
    assert knock_sources(lab, family) == [BOT[family]]
    counters = appliance.status()["counters"]
    assert counters["open"][f"ipv{family}"] == 4
    assert counters["refused"]["total"] == 0
    assert counters["knocks"][f"ipv{family}"] == 1


@pytest.mark.parametrize("family", [4, 6])
def test_backup_mx_accepts_mx1_and_knocks(lab: Lab, appliance: Appliance, family: int) -> None:
    # Trust off: with it, the completed handshake to mx1 would also make the bot a proven sender.
    appliance.start(config_text(mode="backup-mx", window=600, trust=NO_TRUST))
    src = BOT[family]
    assert lab.connect("bot", src, MX2[family], 25) == "reset"
    assert knock_sources(lab, family) == []
    assert lab.connect("bot", src, MX1[family], 25) == "accepted"
    assert knock_sources(lab, family) == [src]
    assert lab.connect("bot", src, MX2[family], 25) == "accepted"
    # Another source that never came to mx1 is still refused at mx2.
    (other,) = lab.add_bot_addresses(1, family)
    assert lab.connect("bot", other, MX2[family], 25) == "reset"
    counters = appliance.status()["counters"]
    fam = f"ipv{family}"
    assert (counters["knocks"][fam], counters["after_knock"][fam], counters["refused"][fam]) == (1, 1, 2)


def test_backup_mx_session_to_mx1_reaches_the_server(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(mode="backup-mx", window=600))
    code, out = lab.swaks(A.MX1_V4, src=A.BOT_V4, subject="backup-mx via mx1")
    assert code == 0, out
    assert lab.wait_for_mail("backup-mx via mx1", timeout=10).local == A.MX1_V4


@pytest.mark.parametrize("family", [4, 6])
def test_selective_unlists_only_the_selected_networks(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(mode="selective", window=600, selective=["198.51.100.0/24", "2001:db8:b07::/64"]))
    (inside,) = lab.add_bot_addresses(1, family)  # 198.51.100.1 or 2001:db8:b07::1
    outside = BOT[family]  # 192.0.2.200 or 2001:db8::200
    assert ipaddress.ip_address(inside) in ipaddress.ip_network(
        "198.51.100.0/24" if family == 4 else "2001:db8:b07::/64"
    )

    # Outside the selective networks: Nolisting, mx2 open without a knock.
    assert lab.connect("bot", outside, MX2[family], 25) == "accepted"
    # Inside: Unlisting, the knock on mx1 comes first.
    assert lab.connect("bot", inside, MX2[family], 25) == "reset"
    assert lab.connect("bot", inside, MX1[family], 25) == "reset"
    assert lab.connect("bot", inside, MX2[family], 25) == "accepted"
    # mx1 refuses everybody in this mode.
    assert lab.connect("bot", outside, MX1[family], 25) == "reset"
    counters = appliance.status()["counters"]
    fam = f"ipv{family}"
    assert (counters["open"][fam], counters["refused"][fam], counters["after_knock"][fam]) == (1, 1, 1)
