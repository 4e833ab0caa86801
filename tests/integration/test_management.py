"""The management address (issue 4): the box's own address on br0 for SSH and metrics.

A real mxknockd in the lab's fw namespace puts the address, the gateway route and root's
authorized_keys in place; listeners in fw stand in for sshd and the metrics server (the
image test logs in with a real sshd). Reachability is probed from the lab's sender and bot.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.config import METRICS_PORT, SSH_PORT
from appliance.control import ControlError
from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text

BOX_V4, BOX_V6 = "192.0.2.5", "2001:db8::5"
OTHER_PORT = 8080  # something listening on the box that no rule opens
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx admin@example.test"
LISTENER = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(16); socks.append(s)
print("listening", flush=True)
time.sleep(120)
"""


def management(**changes: object) -> dict:
    return {"address": [f"{BOX_V4}/24", f"{BOX_V6}/64"], "ssh_keys": [SSH_KEY], "metrics": True, **changes}


@contextmanager
def listeners(lab: Lab, ports: tuple[int, ...] = (SSH_PORT, METRICS_PORT, OTHER_PORT)) -> Iterator[None]:
    """Services on the box itself (in fw), dual-stack, for the duration of the block."""
    argv = ["ip", "netns", "exec", lab.ns("fw"), sys.executable, "-c", LISTENER, *map(str, ports)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "listening"
        yield
    finally:
        process.kill()
        process.wait(5)


def br0_addresses(lab: Lab) -> set[str]:
    out = lab.fw_exec(["ip", "-o", "addr", "show", "dev", "br0"]).stdout
    return {line.split()[3] for line in out.splitlines()}


def default_routes(lab: Lab, family: int) -> list[str]:
    return lab.fw_exec(["ip", f"-{family}", "route", "show", "default"]).stdout.splitlines()


def wait_usable(lab: Lab, timeout: float = 5.0) -> None:
    """IPv6 addresses are tentative until duplicate address detection is done (about 1 s)."""
    deadline = time.monotonic() + timeout
    while "tentative" in lab.fw_exec(["ip", "-6", "addr", "show", "dev", "br0"]).stdout:
        assert time.monotonic() < deadline, "the IPv6 management address stayed tentative"
        time.sleep(0.1)


@pytest.fixture
def appliance(lab: Lab, tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(lab.ns("fw"), tmp_path / "appliance")
    yield app
    app.stop()


def test_without_management_the_bridge_has_no_address(lab: Lab, appliance: Appliance):
    appliance.start(config_text())
    assert br0_addresses(lab) == set()
    assert "MXKNOCK-INPUT" not in appliance.iptables_save(4) + appliance.iptables_save(6)
    assert not appliance.config_path.with_name("authorized_keys").exists()
    assert appliance.client.call("status")["management"] is None


def test_management_address_reaches_only_the_services(lab: Lab, appliance: Appliance):
    appliance.start(config_text(management=management(gateway=["192.0.2.1", "fe80::1"])))
    wait_usable(lab)
    addresses = br0_addresses(lab)
    assert {f"{BOX_V4}/24", f"{BOX_V6}/64"} <= addresses
    assert any(a.startswith("fe80::") for a in addresses)  # neighbour discovery with routers
    assert [r for r in default_routes(lab, 4) if "via 192.0.2.1" in r and "metric 100" in r]
    assert [r for r in default_routes(lab, 6) if "via fe80::1" in r and "metric 100" in r]  # a router's usual
    keys = appliance.config_path.with_name("authorized_keys")
    assert SSH_KEY in keys.read_text().splitlines()
    assert keys.stat().st_mode & 0o777 == 0o644

    with listeners(lab):
        for box in (BOX_V4, BOX_V6):
            assert lab.connect("sender", None, box, SSH_PORT) == "accepted", box
            assert lab.connect("sender", None, box, METRICS_PORT) == "accepted", box
            assert lab.connect("sender", None, box, OTHER_PORT, timeout=1.5) == "timeout", box

    # The mail rules are untouched: mx1 still resets (the reset leaves with a gateway route
    # in place) and records the knock, mx2 then accepts, a stranger is refused.
    for mx1, mx2 in ((A.MX1_V4, A.MX2_V4), (A.MX1_V6, A.MX2_V6)):
        assert lab.connect("sender", None, mx1, 25) == "reset"
        assert lab.connect("sender", None, mx2, 25) == "accepted"
        assert lab.connect("bot", None, mx2, 25) == "reset"

    status = appliance.client.call("status")
    assert status["health"] == "ok", status
    assert status["management"]["ssh"] and status["management"]["metrics"]
    assert status["management"]["gateways"] == ["192.0.2.1", "fe80::1"]


def test_allow_list_and_switched_off_services(lab: Lab, appliance: Appliance):
    allow = [f"{A.SENDER_V4}/32", f"{A.SENDER_V6}/128"]
    appliance.start(config_text(management=management(allow=allow, metrics=False)))
    wait_usable(lab)
    with listeners(lab):
        for box in (BOX_V4, BOX_V6):
            assert lab.connect("sender", None, box, SSH_PORT) == "accepted", box
            assert lab.connect("bot", None, box, SSH_PORT, timeout=1.5) == "timeout", box
            assert lab.connect("sender", None, box, METRICS_PORT, timeout=1.5) == "timeout", box
        # No keys: no SSH either (nobody could log in, so nothing is opened).
        appliance.client.call("apply", yaml=config_text(management=management(ssh_keys=[], allow=allow)))
        assert lab.connect("sender", None, BOX_V4, SSH_PORT, timeout=1.5) == "timeout"
        assert lab.connect("sender", None, BOX_V4, METRICS_PORT) == "accepted"
    assert not appliance.config_path.with_name("authorized_keys").exists()


def test_changing_and_removing_management(lab: Lab, appliance: Appliance):
    appliance.start(config_text(management=management(gateway=["192.0.2.1"])))
    appliance.client.call("apply", yaml=config_text(management={"address": "192.0.2.6/24"}))
    assert br0_addresses(lab) == {"192.0.2.6/24"}  # the IPv6 one and its link-local are gone
    assert not [r for r in default_routes(lab, 4) if "metric 100" in r]
    assert "MXKNOCK-INPUT" not in appliance.iptables_save(6)

    appliance.client.call("apply", yaml=config_text())
    assert br0_addresses(lab) == set()
    assert "MXKNOCK-INPUT" not in appliance.iptables_save(4)
    # The kernel flushes br0's IPv4 routes with its last IPv4 address; the reset route is put back.
    assert [r for r in default_routes(lab, 4) if "metric 4294967" in r]
    assert lab.connect("sender", None, A.MX1_V4, 25) == "reset"
    assert appliance.client.call("status")["health"] == "ok"


def test_status_sees_a_lost_reset_route(lab: Lab, appliance: Appliance):
    appliance.start(config_text())
    lab.fw_exec(["ip", "-4", "route", "del", "default", "dev", "br0", "metric", "4294967"])
    status = appliance.client.call("status")
    assert status["health"] == "critical"
    assert any("IPv4 has no route for resets" in p for p in status["problems"]), status["problems"]
    appliance.client.call("reload")
    assert appliance.client.call("status")["health"] == "ok"
    assert lab.connect("sender", None, A.MX1_V4, 25) == "reset"


def test_bad_management_changes_nothing(lab: Lab, appliance: Appliance):
    appliance.start(config_text(management=management()))
    before = (br0_addresses(lab), appliance.iptables_save(4), appliance.iptables_save(6))
    bad = config_text().replace(
        "mode: unlisting", "mode: unlisting\nmanagement: {address: 192.0.2.7/24, gateway: 198.51.100.1}"
    )
    with pytest.raises(ControlError) as info:
        appliance.client.call("apply", yaml=bad)
    assert [e["field"] for e in info.value.errors] == ["management.gateway"]
    after = (br0_addresses(lab), appliance.iptables_save(4), appliance.iptables_save(6))
    assert _without_counters(after) == _without_counters(before)


def test_unconfirmed_management_change_rolls_back(lab: Lab, appliance: Appliance):
    """An admin who moves the address from under his own SSH session gets it back."""
    appliance.start(config_text(management=management()))
    appliance.client.call("apply", yaml=config_text(management={"address": "192.0.2.6/24"}), confirm_within=2)
    assert f"{BOX_V4}/24" not in br0_addresses(lab)
    deadline = time.monotonic() + 10
    while f"{BOX_V4}/24" not in br0_addresses(lab):
        assert time.monotonic() < deadline, "the previous management address did not come back"
        time.sleep(0.2)
    assert "192.0.2.6/24" not in br0_addresses(lab)
    assert appliance.config_path.with_name("authorized_keys").exists()


def _without_counters(state: tuple) -> tuple:
    addresses, *tables = state
    return (addresses, *("\n".join(x for x in t.splitlines() if not x.startswith(("#", ":"))) for t in tables))


# ---- failures after the kernel was touched --------------------------------------------------------


def break_authorized_keys(appliance: Appliance) -> None:
    """A directory where the key file goes: writing the keys fails, after the address is on."""
    keys = appliance.config_path.with_name("authorized_keys")
    keys.unlink(missing_ok=True)
    keys.mkdir(parents=True)


def test_a_failing_change_puts_the_previous_bridge_back(lab: Lab, appliance: Appliance):
    """Other ports, another bridge name and a management address, failing at its last step:
    the previous bridge, ports, rules and addresses are back and the mail flows."""
    lab.fw_exec(["ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1"])
    appliance.start(config_text())
    before = (br0_addresses(lab), appliance.iptables_save(4), appliance.iptables_save(6))
    break_authorized_keys(appliance)
    for bridge in (
        {"name": "br0", "outside": "eth0", "inside": "spare0"},
        {"name": "mxbr", "outside": "eth0", "inside": "eth1"},
    ):
        with pytest.raises(ControlError) as info:
            appliance.client.call("apply", yaml=config_text(bridge=bridge, management=management()))
        assert "authorized_keys" in str(info.value) and "previous configuration is back" in str(info.value)
        links = lab.fw_exec(["ip", "-o", "link", "show"]).stdout
        assert "mxbr" not in links
        assert {line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if "master br0" in line} == {
            "eth0",
            "eth1",
        }
        after = (br0_addresses(lab), appliance.iptables_save(4), appliance.iptables_save(6))
        assert _without_counters(after) == _without_counters(before)
        assert lab.connect("sender", None, A.MX1_V4, 25) == "reset"
        assert lab.connect("sender", None, A.MX2_V4, 25) == "accepted"
        status = appliance.client.call("status")
        assert status["health"] == "ok", status["problems"]


def test_at_boot_a_failing_management_address_does_not_stop_the_mail(lab: Lab, appliance: Appliance):
    break_authorized_keys(appliance)
    appliance.start(config_text(management=management()))
    assert lab.connect("sender", None, A.MX1_V4, 25) == "reset"
    assert lab.connect("sender", None, A.MX2_V4, 25) == "accepted"
    assert br0_addresses(lab) == set()  # not half of it either
    status = appliance.client.call("status")
    assert status["health"] == "warning"
    assert any("management address is not in place" in w for w in status["warnings"]), status["warnings"]
    # Fixed and reloaded: the address is there and the warning gone.
    appliance.config_path.with_name("authorized_keys").rmdir()
    appliance.client.call("reload")
    assert f"{BOX_V4}/24" in br0_addresses(lab)
    assert appliance.client.call("status")["health"] == "ok"


def test_status_names_an_address_nobody_configured(lab: Lab, appliance: Appliance):
    appliance.start(config_text())
    lab.fw_exec(["ip", "addr", "add", "192.0.2.9/24", "dev", "br0"])
    status = appliance.client.call("status")
    assert status["health"] == "warning"
    assert any("192.0.2.9/24" in w and "the box answers there" in w for w in status["warnings"]), status
    appliance.client.call("reload")
    assert br0_addresses(lab) == set()
    assert appliance.client.call("status")["health"] == "ok"
