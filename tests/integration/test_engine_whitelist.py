"""The whitelist, changed on the running daemon with `mxknock whitelist add|remove` (issue 2)."""

from __future__ import annotations

import yaml

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text

NO_TRUST = {"enabled": False, "lifetime": 3110400}


def test_whitelisted_address_passes_without_knock_until_removed(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600, trust=NO_TRUST))
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"

    added = appliance.cli("whitelist", "add", A.BOT_V4, A.BOT_V6)
    assert added.returncode == 0, added.stderr
    assert lab.connect_many("bot", [(A.BOT_V4, A.MX2_V4, 25), (A.BOT_V6, A.MX2_V6, 25), (A.BOT_V4, A.MX1_V4, 25)]) == [
        "accepted",
        "accepted",
        "accepted",
    ]  # whitelisted: mx1 lets it in too
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "reset"  # nobody else
    listed = appliance.cli("whitelist", "list")
    assert listed.returncode == 0 and listed.stdout.split() == [A.BOT_V4, A.BOT_V6]
    assert yaml.safe_load(appliance.config_path.read_text())["whitelist"] == [A.BOT_V4, A.BOT_V6]
    counters = appliance.status()["counters"]
    assert counters["whitelisted"]["total"] == 3
    assert counters["knocks"]["total"] == 0  # passing the whitelist records no knock

    removed = appliance.cli("whitelist", "remove", A.BOT_V4)
    assert removed.returncode == 0, removed.stderr
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"  # still listed
    assert yaml.safe_load(appliance.config_path.read_text())["whitelist"] == [A.BOT_V6]

    # Removing what is not there is bad input, and changes nothing.
    missing = appliance.cli("whitelist", "remove", A.BOT_V4)
    assert missing.returncode == 2
    assert "whitelist" in missing.stderr and "not in the whitelist" in missing.stderr
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"


def test_whitelisted_networks(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600, trust=NO_TRUST))
    v4 = lab.add_bot_addresses(2, 4)  # 198.51.100.1, .2
    v6 = lab.add_bot_addresses(2, 6)  # 2001:db8:b07::1, ::2
    targets = [(src, A.MX2_V4, 25) for src in v4] + [(src, A.MX2_V6, 25) for src in v6]
    assert lab.connect_many("bot", targets) == ["reset"] * 4

    added = appliance.cli("whitelist", "add", "198.51.100.0/24", "2001:db8:b07::/64")
    assert added.returncode == 0, added.stderr
    assert lab.connect_many("bot", targets) == ["accepted"] * 4
    # The bot's own addresses are outside those networks.
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "reset"

    # A network with host bits set is refused, naming the entry.
    bad = appliance.cli("whitelist", "add", "198.51.100.1/24")
    assert bad.returncode == 2
    assert "whitelist[+0]" in bad.stderr and "198.51.100.0/24" in bad.stderr

    removed = appliance.cli("whitelist", "remove", "198.51.100.0/24", "2001:db8:b07::/64")
    assert removed.returncode == 0, removed.stderr
    assert lab.connect_many("bot", targets) == ["reset"] * 4
