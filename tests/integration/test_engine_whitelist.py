"""The whitelist, changed on the running daemon with `mxknock whitelist add|remove` (issue 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

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


def _whitelist(tag: int, n: int) -> list[str]:
    return [f"2001:db8:{tag:x}:{i:x}::/64" for i in range(n)]


def test_applies_succeed_while_an_admin_lists_the_sets(lab: Lab, appliance: Appliance) -> None:
    """Issue 10, item 6: `ipset list` holds each set while it dumps it, and the kernel then
    refuses to swap or destroy it ("set busy"). Applies retry; no staging set is left."""
    size = 50_000
    texts = [config_text(window=600, trust=NO_TRUST, whitelist=_whitelist(tag, size)) for tag in (0xA, 0xB)]
    appliance.start(texts[0])
    lister = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("fw"), "sh", "-c", "while :; do ipset list >/dev/null 2>&1; done"],
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        for i in range(6):
            done = appliance.apply(texts[(i + 1) % 2])
            assert done.returncode == 0, (i, done.stdout, done.stderr)
    finally:
        os.killpg(lister.pid, signal.SIGTERM)
        lister.wait(timeout=10)
    names = lab.exec("fw", ["ipset", "list", "-n"]).stdout.split()
    assert not [n for n in names if n.endswith("-new")], names
    status = appliance.status()
    assert status["filtering_verified"] is True, status
    # The last apply is in force: its networks pass, the other's do not.
    assert "2001:db8:a::/64" in appliance.client.call("whitelist_list")["whitelist"]


def test_a_staging_set_left_behind_is_removed_at_start(lab: Lab, appliance: Appliance) -> None:
    lab.exec("fw", ["ipset", "create", "mxknock-allow4-new", "hash:net"])
    lab.exec("fw", ["ipset", "create", "someone-elses-new", "hash:net"])
    appliance.start(config_text(window=600, trust=NO_TRUST))
    names = lab.exec("fw", ["ipset", "list", "-n"]).stdout.split()
    assert "mxknock-allow4-new" not in names
    assert "someone-elses-new" in names  # not ours: left alone
