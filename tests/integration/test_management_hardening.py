"""The management address against a careless admin and a busy link (issue 10, item 11):
an address another host has is refused, nothing of a removed address stays behind, and a
box without an address sends nothing on the wire."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.lab import Lab
from tests.lab.appliance import Appliance, config_text

BOX = {4: "192.0.2.5", 6: "2001:db8::5"}
PREFIX = {4: 24, 6: 64}


def management(*families: int) -> dict:
    return {"address": [f"{BOX[f]}/{PREFIX[f]}" for f in families]}


def br0_addresses(lab: Lab) -> str:
    return lab.fw_exec(["ip", "-o", "addr", "show", "dev", "br0"]).stdout


@pytest.mark.parametrize("family", [4, 6])
def test_an_address_another_host_has_is_refused(lab: Lab, appliance: Appliance, family: int) -> None:
    appliance.start(config_text(window=600))
    option = [] if family == 4 else ["nodad"]
    lab.exec("bot", ["ip", "addr", "add", f"{BOX[family]}/{PREFIX[family]}", "dev", "eth0", *option])
    time.sleep(0.2)

    result = appliance.apply(config_text(window=600, management=management(family)))
    assert result.returncode == 1, result
    assert f"{BOX[family]} is already used by another host on the link" in result.stderr, result.stderr
    assert BOX[family] not in br0_addresses(lab)
    assert appliance.status()["config"].get("management") is None  # the previous config is back

    lab.exec("bot", ["ip", "addr", "del", f"{BOX[family]}/{PREFIX[family]}", "dev", "eth0"])
    time.sleep(0.2)
    assert appliance.apply(config_text(window=600, management=management(family))).returncode == 0
    assert BOX[family] in br0_addresses(lab)


def test_removing_the_address_removes_its_sets(lab: Lab, appliance: Appliance) -> None:
    appliance.start(
        config_text(window=600, management={**management(4, 6), "allow": ["192.0.2.0/24", "2001:db8::/64"]})
    )
    names = lab.fw_exec(["ipset", "list", "-n"]).stdout.split()
    assert {"mxknock-manage4", "mxknock-manage6"} <= set(names)

    assert appliance.apply(config_text(window=600)).returncode == 0
    names = lab.fw_exec(["ipset", "list", "-n"]).stdout.split()
    assert "mxknock-manage4" not in names and "mxknock-manage6" not in names, names
    assert "mxknock-trust4" in names  # what senders earned stays


def test_removing_the_ipv6_address_sends_nothing_on_the_wire(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600, management=management(4, 6)))
    mac = lab.fw_exec(["cat", "/sys/class/net/br0/address"]).stdout.strip()
    # The joins' own reports: after duplicate address detection (1 s) the kernel reports
    # each group twice, up to 1 s apart. Wait for the detection, then for the reports.
    deadline = time.monotonic() + 10
    while "tentative" in br0_addresses(lab) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)
    capture = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("inet"), "tcpdump", "-l", "-n", "-e", "-Q", "in", "-i", "to-fw",
         f"ether src {mac}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)  # tcpdump is listening
        assert appliance.apply(config_text(window=600)).returncode == 0
        assert "2001:db8::5" not in br0_addresses(lab) and "fe80:" not in br0_addresses(lab)
        time.sleep(3)  # MLDv2 repeats a state change twice within 1 s
    finally:
        capture.terminate()
        frames, _ = capture.communicate(timeout=5)
    assert frames.strip() == "", f"the box sent frames after its address went:\n{frames}"
    status = appliance.status()
    assert status["filtering_verified"] is True
    assert lab.connect("bot", "2001:db8::200", "2001:db8::20", 25) == "reset"  # IPv6 resets still routed
