"""Changing the bridge of a running appliance: other ports, another bridge name.

A port the config no longer names must leave the bridge (an unfiltered path otherwise
stays open), and a renamed bridge must not leave the old one behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text


@pytest.fixture
def appliance(lab: Lab, tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(lab.ns("fw"), tmp_path / "appliance")
    yield app
    app.stop()


def links(lab: Lab) -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(lab.fw_exec(["ip", "-j", "link", "show"]).stdout)}


def ports_of(lab: Lab, bridge: str) -> set[str]:
    return {name for name, link in links(lab).items() if link.get("master") == bridge}


def knock_then_deliver_works(lab: Lab) -> bool:
    return (
        lab.connect("sender", None, A.MX1_V4, 25) == "reset"
        and lab.connect("sender", None, A.MX2_V4, 25) == "accepted"
        and lab.connect("bot", None, A.MX2_V4, 25) == "reset"
    )


def test_a_port_the_config_no_longer_names_leaves_the_bridge(lab: Lab, appliance: Appliance):
    lab.fw_exec(["ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1"])
    appliance.start(config_text())
    assert ports_of(lab, "br0") == {"eth0", "eth1"}

    appliance.client.call("apply", yaml=config_text(bridge={"name": "br0", "outside": "eth0", "inside": "spare0"}))
    assert ports_of(lab, "br0") == {"eth0", "spare0"}
    assert "UP" not in links(lab)["eth1"]["flags"]  # out of the bridge, and silent
    assert lab.connect("sender", None, A.MX2_V4, 25, timeout=1.5) == "timeout"  # no path to the server now

    appliance.client.call("apply", yaml=config_text())
    assert ports_of(lab, "br0") == {"eth0", "eth1"}
    assert "UP" not in links(lab)["spare0"]["flags"]
    assert knock_then_deliver_works(lab)


def test_a_renamed_bridge_replaces_the_old_one(lab: Lab, appliance: Appliance):
    appliance.start(config_text())
    appliance.client.call("apply", yaml=config_text(bridge={"name": "mxbr", "outside": "eth0", "inside": "eth1"}))
    assert "br0" not in links(lab)
    assert ports_of(lab, "mxbr") == {"eth0", "eth1"}
    assert knock_then_deliver_works(lab)  # the reset route moved with the bridge
    status = appliance.client.call("status")
    assert status["health"] == "ok", status["problems"]
    assert status["bridge"]["name"] == "mxbr"
