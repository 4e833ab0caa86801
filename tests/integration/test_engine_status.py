"""`mxknock status`: healthy, evicting under a flood, and not configured at all (issue 2)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text, recent_sources

NO_TRUST = {"enabled": False, "lifetime": 3110400}
LIST_SIZE = Path("/sys/module/xt_recent/parameters/ip_list_tot")


def knock_sources(lab: Lab, name: str) -> list[str]:
    return recent_sources(lab, name)


def test_status_of_a_healthy_appliance(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600))
    result = appliance.cli("--json", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    assert status["health"] == "ok" and status["problems"] == [] and status["warnings"] == []
    assert status["filtering_verified"] is True
    bridge = status["bridge"]
    assert (bridge["name"], bridge["present"], bridge["up"]) == ("br0", True, True)
    assert bridge["filtering"] is True and bridge["forwarding"] is True
    # br_netfilter: the bridge's own flags and the namespace's sysctls, all on.
    flags = ("nf_call_iptables", "nf_call_ip6tables", "sysctl_iptables", "sysctl_ip6tables")
    assert {flag: bridge[flag] for flag in flags} == dict.fromkeys(flags, True)
    assert [(p["name"], p["present"], p["enslaved"], p["up"], p["carrier"]) for p in bridge["ports"]] == [
        ("eth0", True, True, True, True),
        ("eth1", True, True, True, True),
    ]
    assert [kl["name"] for kl in status["knock_lists"]] == ["mxknock4-32", "mxknock6-128"]
    assert all(kl["exists"] and not kl["evicting"] for kl in status["knock_lists"])
    assert status["config"]["mode"] == "unlisting" and status["pending"] is None

    # What the JSON says is what the kernel does: sysctls and bridge flags read in fw.
    for sysctl in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        assert lab.fw_exec(["cat", f"/proc/sys/net/bridge/{sysctl}"]).stdout.strip() == "1"
    details = lab.fw_exec(["ip", "-d", "link", "show", "br0"]).stdout
    assert "nf_call_iptables 1" in details and "nf_call_ip6tables 1" in details

    text = appliance.cli("status")
    assert text.returncode == 0
    for words in (
        "health: OK",
        "filtering verified: yes",
        "bridge br0: up, ports eth0(up, link)  eth1(up, link)",
        "br_netfilter: bridge nf_call_iptables=1 nf_call_ip6tables=1, sysctls 1/1",
    ):
        assert words in text.stdout, text.stdout


def test_flood_beyond_the_list_size_is_reported_as_eviction(lab: Lab, appliance: Appliance) -> None:
    capacity = int(LIST_SIZE.read_text())
    appliance.start(config_text(window=600, trust=NO_TRUST))
    # The first knocker, then more sources than the list holds.
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "reset"
    flood = lab.add_bot_addresses(capacity + 10, 4)
    results = lab.connect_many("bot", [(src, A.MX1_V4, 25) for src in flood], concurrency=20, timeout=3.0)
    assert results == ["reset"] * len(flood)

    listed = knock_sources(lab, "mxknock4-32")
    assert len(listed) == capacity
    # The oldest knock was pushed out by the flood: that legitimate sender is refused at mx2.
    assert A.BOT_V4 not in listed
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", listed[-1], A.MX2_V4, 25) == "accepted"

    result = appliance.cli("--json", "status")
    assert result.returncode == 4, result.stdout + result.stderr
    status = json.loads(result.stdout)
    print(json.dumps({k: status[k] for k in ("health", "warnings", "knock_lists")}, indent=2))
    lists = {kl["name"]: kl for kl in status["knock_lists"]}
    v4, v6 = lists["mxknock4-32"], lists["mxknock6-128"]
    assert v4["evicting"] is True
    assert (v4["entries"], v4["capacity"], v4["live"]) == (capacity, capacity, capacity)
    assert v6["evicting"] is False and v6["entries"] == 0
    assert status["health"] == "warning" and status["problems"] == []
    assert status["counters"]["knocks"]["ipv4"] == capacity + 11
    (warning,) = status["warnings"]
    assert f"knock list mxknock4-32 is full ({capacity}/{capacity})" in warning and "evicting" in warning

    text = appliance.cli("status")
    print(text.stdout)
    assert text.returncode == 4
    assert "health: WARNING" in text.stdout
    assert f"warning: knock list mxknock4-32 is full ({capacity}/{capacity}) and evicting" in text.stdout
    assert "EVICTING" in text.stdout


def test_without_a_config_nothing_forwards_until_one_is_applied(lab: Lab, appliance: Appliance) -> None:
    appliance.start()  # no file at its --config path
    assert not appliance.config_path.exists()
    text = appliance.cli("status")
    assert text.returncode == 5, text.stdout + text.stderr
    assert "health: CRITICAL" in text.stdout and "no configuration" in text.stdout
    status = json.loads(appliance.cli("--json", "status").stdout)
    assert status["config"] is None and status["filtering_verified"] is False
    assert any("no configuration" in p for p in status["problems"])

    # No bridge, so nothing passes between the outside and the mail server. These probes use
    # spare bot addresses: a SYN the bot queued for an unresolved neighbour is still sent once
    # the bridge comes up, and one aimed at mx1 would then be a real knock for its source.
    assert lab.fw_exec(["ip", "link", "show", "br0"], check=False).returncode != 0
    (early4,), (early6,) = lab.add_bot_addresses(1, 4), lab.add_bot_addresses(1, 6)
    for src, dst in ((early4, A.MX2_V4), (early6, A.MX2_V6), (early4, A.MX1_V4)):
        assert lab.connect("bot", src, dst, 25, timeout=1.0) in ("timeout", "unreachable")

    result = appliance.apply(config_text(window=600))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(appliance.config_path.read_text())["window"] == 600
    assert appliance.cli("status").returncode == 0
    assert lab.connect_many("bot", [(A.BOT_V4, A.MX2_V4, 25), (A.BOT_V4, A.MX1_V4, 25), (A.BOT_V4, A.MX2_V4, 25)]) == [
        "reset",
        "reset",
        "accepted",
    ]
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "reset"


def test_stopped_daemon_is_unreachable_and_the_rules_stay(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600, trust=NO_TRUST))
    rules = appliance.iptables_save(4)
    assert appliance.stop() == 0
    result = appliance.cli("status")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not running" in result.stderr
    # The kernel keeps filtering without the daemon: fail-closed for spam, open after a knock.
    assert "-j MXKNOCK" in appliance.iptables_save(4) and "-j MXKNOCK" in appliance.iptables_save(6)
    assert [line for line in appliance.iptables_save(4).splitlines() if line.startswith("-A")] == [
        line for line in rules.splitlines() if line.startswith("-A")
    ]
    assert lab.connect_many("bot", [(A.BOT_V4, A.MX2_V4, 25), (A.BOT_V4, A.MX1_V4, 25), (A.BOT_V4, A.MX2_V4, 25)]) == [
        "reset",
        "reset",
        "accepted",
    ]


def test_status_catches_br_netfilter_turned_off_and_a_reload_repairs_it(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600))
    # Someone turns bridged IPv4 filtering off behind the daemon's back (sysctl and bridge flag:
    # the kernel filters if either is on). Every rule is then silently bypassed...
    lab.fw_exec(["sh", "-c", "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables"])
    lab.fw_exec(["ip", "link", "set", "br0", "type", "bridge", "nf_call_iptables", "0"])
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "reset"
    # ...and status must say so.
    text = appliance.cli("status")
    assert text.returncode == 5, text.stdout
    assert "br_netfilter is off" in text.stdout and "filtering verified: NO" in text.stdout
    status = appliance.status()
    assert status["filtering_verified"] is False and status["bridge"]["filtering"] is False

    reload = appliance.cli("reload")
    assert reload.returncode == 0, reload.stderr
    assert appliance.cli("status").returncode == 0
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"


def test_status_catches_a_port_that_went_down(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600))
    lab.fw_exec(["ip", "link", "set", "eth1", "down"])
    text = appliance.cli("status")
    assert text.returncode == 5, text.stdout
    assert "not forwarding" in text.stdout and "eth1(down" in text.stdout
    assert appliance.cli("reload").returncode == 0
    assert appliance.cli("status").returncode == 0
    assert lab.connect_many("bot", [(A.BOT_V4, A.MX2_V4, 25), (A.BOT_V4, A.MX1_V4, 25), (A.BOT_V4, A.MX2_V4, 25)]) == [
        "reset",
        "reset",
        "accepted",
    ]
