"""Issue 6: knocks and proven senders outlive the daemon and the box.

mxknockd saves them to <state-dir>/state.json periodically and on SIGTERM and puts them
back at start, before the bridge forwards. A "reboot" here wipes everything the kernel
held for us in fw: our chains (iptables-legacy and ip6tables-legacy), and with them the
xt_recent lists, the mxknock-* ipsets, br0 and the conntrack table.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.lab.procs import wait_until

WINDOW = 120
LIFETIME = 36 * 86400


def trusted(appliance: Appliance) -> dict[str, float]:
    """Proven senders -> seconds left (the control API behind `mxknock trusted list`)."""
    return {e["address"]: e["time_left"] for e in appliance.client.call("trusted_list")["trusted"]}


def knocked(appliance: Appliance) -> set[str]:
    """Addresses in the knock lists (`mxknock knocks`), canonical: xt_recent prints IPv6
    addresses uncompressed (2001:0db8:0000:...)."""
    lists = appliance.client.call("knocks")["knock_lists"]
    return {canonical(k["address"]) for kl in lists for k in kl["knocks"]}


def canonical(address: str) -> str:
    return str(ipaddress.ip_address(address))


def kernel_knocks(lab: Lab, name: str) -> str | None:
    """/proc/net/xt_recent/<name> in fw, or None if the list does not exist."""
    proc = lab.exec("fw", ["cat", f"/proc/net/xt_recent/{name}"], check=False)
    return proc.stdout if proc.returncode == 0 else None


def reboot(lab: Lab) -> None:
    """Wipe the kernel state a reboot would lose (the daemon must be stopped)."""
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        rules = lab.exec("fw", [tool, "-S"]).stdout.splitlines()
        for rule in rules:
            if rule.startswith("-A FORWARD") and "-j MXKNOCK" in rule:
                lab.exec("fw", [tool, "-D", *shlex.split(rule)[1:]])
        chains = [r.split()[1] for r in rules if r.startswith("-N MXKNOCK")]
        for chain in chains:
            lab.exec("fw", [tool, "-F", chain])
        for chain in chains:
            lab.exec("fw", [tool, "-X", chain])
        left = lab.exec("fw", [tool, "-S"]).stdout
        assert "MXKNOCK" not in left, left
    for name in lab.exec("fw", ["ipset", "list", "-n"]).stdout.split():
        if name.startswith("mxknock-"):
            lab.exec("fw", ["ipset", "destroy", name])
    lab.exec("fw", ["ip", "link", "del", "br0"])
    lab.exec("fw", [sys.executable, "-c", "from pyroute2 import Conntrack; Conntrack().flush()"])
    assert kernel_knocks(lab, "mxknock4-32") is None  # gone with the last rule naming it
    assert "mxknock" not in lab.exec("fw", ["ipset", "list", "-n"]).stdout
    assert lab.exec("fw", ["ip", "link", "show", "br0"], check=False).returncode != 0


def saved(appliance: Appliance) -> dict[str, object]:
    return json.loads((appliance.state_dir / "state.json").read_text())


def saved_addresses(data: dict[str, object], kind: str) -> set[str]:
    section = data[kind]
    assert isinstance(section, dict)
    return {canonical(e["address"]) for entries in section.values() for e in entries}


def assert_times_close(before: dict[str, float], after: dict[str, float], elapsed: float) -> None:
    assert set(after) == set(before)
    for address, left in before.items():
        assert left - elapsed - 5 <= after[address] <= left + 2, (address, left, after[address], elapsed)


def test_state_survives_restart_reboot_and_crash(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=WINDOW, trust={"enabled": True, "lifetime": LIFETIME}))
    # 192.0.2.200: proven sender by hand, never knocked. 2001:db8::200: earned by a knock and
    # a handshake. 192.0.2.100: a knock only.
    assert appliance.cli("trusted", "add", A.BOT_V4).returncode == 0
    assert lab.connect("bot", A.BOT_V6, A.MX1_V6, 25) == "reset"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"
    assert lab.connect("sender", A.SENDER_V4, A.MX1_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"  # trusted without a knock
    before, t_before = trusted(appliance), time.monotonic()
    assert set(before) == {A.BOT_V4, A.BOT_V6}
    assert all(LIFETIME - 30 < left <= LIFETIME for left in before.values()), before
    assert knocked(appliance) == {A.SENDER_V4, A.BOT_V6}

    # 1. Daemon restart: SIGTERM saves; the kernel kept everything anyway.
    assert appliance.stop(signal.SIGTERM) == 0
    state = saved(appliance)
    assert saved_addresses(state, "trusted") == {A.BOT_V4, A.BOT_V6}
    assert saved_addresses(state, "knocks") == {A.SENDER_V4, A.BOT_V6}
    appliance.start()
    assert_times_close(before, trusted(appliance), time.monotonic() - t_before)
    assert knocked(appliance) == {A.SENDER_V4, A.BOT_V6}

    # 2. Reboot: stop, wipe the kernel state, start. Everything comes from state.json.
    assert appliance.stop(signal.SIGTERM) == 0
    reboot(lab)
    appliance.start()
    status = appliance.status()
    assert status["health"] == "ok", status
    assert status["trusted"] == {"ipv4": 1, "ipv6": 1, "total": 2}
    assert_times_close(before, trusted(appliance), time.monotonic() - t_before)
    proc_list = kernel_knocks(lab, "mxknock4-32")
    assert proc_list is not None and f"src={A.SENDER_V4} " in proc_list, proc_list
    assert A.BOT_V6 in knocked(appliance)
    # Traffic follows: the proven sender and the restored knock pass, a stranger does not.
    stranger = lab.add_bot_addresses(1, 4)[0]
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "accepted"  # and earns trust
    assert lab.connect("bot", stranger, A.MX2_V4, 25) == "reset"
    assert set(trusted(appliance)) == {A.BOT_V4, A.BOT_V6, A.SENDER_V4}

    # 3. Crash: SIGKILL saves nothing, but the periodic save (every second) had it all.
    assert appliance.stop(signal.SIGTERM) == 0
    appliance.start(save_interval=1.0)
    late_trusted = "203.0.113.7"
    assert appliance.cli("trusted", "add", late_trusted).returncode == 0
    assert lab.connect("bot", stranger, A.MX1_V4, 25) == "reset"  # a late knock
    wait_until(
        lambda: (
            late_trusted in saved_addresses(saved(appliance), "trusted")
            and stranger in saved_addresses(saved(appliance), "knocks")
        ),
        timeout=5.0,
        what="a periodic save with the late entries",
    )
    assert appliance.stop(signal.SIGKILL) == -signal.SIGKILL
    reboot(lab)
    appliance.start()
    after = trusted(appliance)
    assert set(after) == {A.BOT_V4, A.BOT_V6, A.SENDER_V4, late_trusted}
    assert stranger in knocked(appliance)
    assert lab.connect("bot", stranger, A.MX2_V4, 25) == "accepted"  # its knock is back


def _bad_address_state() -> str:
    now = time.time()
    return json.dumps(
        {
            "version": 1,
            "saved_at": now,
            "knocks": {"4": [{"address": "not-an-address", "age": 1.0}]},
            "trusted": {"4": [{"address": "192.0.2.300", "expires_at": now + 3600}]},
        }
    )


CORRUPT = {
    "garbage": lambda good: "\x00\x17garbage{{{ not json",
    "truncated": lambda good: good[: len(good) // 2],
    "wrong-shape": lambda good: json.dumps({"version": 1, "knocks": []}),
    "bad-address": lambda good: _bad_address_state(),
}


def is_state_warning(text: str) -> bool:
    # e.g. "saved state skipped: .../state.json is not valid JSON (truncated?): ..."
    return "state" in text.lower() and "skipped" in text.lower()


@pytest.mark.parametrize("damage", list(CORRUPT))
def test_corrupt_state_file_is_reported_and_skipped(lab: Lab, appliance: Appliance, damage: str) -> None:
    # A real state file first (a trusted entry and a knock), then damaged, then a reboot.
    appliance.start(config_text(window=WINDOW))
    assert appliance.cli("trusted", "add", A.BOT_V4).returncode == 0
    assert lab.connect("sender", A.SENDER_V4, A.MX1_V4, 25) == "reset"
    assert appliance.stop(signal.SIGTERM) == 0
    path: Path = appliance.state_dir / "state.json"
    good = path.read_text()
    path.write_text(CORRUPT[damage](good))
    reboot(lab)

    appliance.start()
    status = appliance.status()
    print(status["warnings"])
    assert status["health"] == "warning"
    assert any(is_state_warning(w) for w in status["warnings"]), status["warnings"]
    assert status["filtering_verified"] is True
    out = appliance.cli("status")
    assert out.returncode == 4, out  # healthy but with warnings
    assert any(is_state_warning(line) for line in out.stdout.splitlines() if "warning:" in line), out.stdout

    # Nothing was restored, and the daemon filters as usual.
    assert trusted(appliance) == {}
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    # The next save writes a good file again.
    assert appliance.stop(signal.SIGTERM) == 0
    assert saved_addresses(saved(appliance), "trusted") == {A.BOT_V4}


def list_sources(lab: Lab, name: str) -> set[str]:
    text = kernel_knocks(lab, name) or ""
    return {canonical(line.split()[0].removeprefix("src=")) for line in text.splitlines() if line.startswith("src=")}


def test_a_restart_with_a_full_knock_list_brings_back_no_evicted_knock(lab: Lab, appliance: Appliance) -> None:
    """Issue 10, item 10: knocks evicted since the last save must not come back stamped "now"
    and push out live ones; after a reboot the newest saved knocks return, at most a list's worth."""
    appliance.start(config_text(window=WINDOW, trust={"enabled": False, "lifetime": LIFETIME}))
    capacity = appliance.status()["knock_lists"][0]["capacity"]
    sources = lab.add_bot_addresses(capacity + 30, 4)
    first, late = sources[:capacity], sources[capacity:]
    assert lab.connect_many("bot", [(s, A.MX1_V4, 25) for s in first]) == ["reset"] * capacity
    assert appliance.stop(signal.SIGTERM) == 0  # saves a full list: `first`
    assert saved_addresses(saved(appliance), "knocks") == set(first)
    # While the daemon is down the kernel keeps filtering: 30 more knocks evict the 30 oldest.
    assert lab.connect_many("bot", [(s, A.MX1_V4, 25) for s in late]) == ["reset"] * len(late)
    before = list_sources(lab, "mxknock4-32")
    assert before == set(first[len(late) :]) | set(late)

    appliance.start()
    assert list_sources(lab, "mxknock4-32") == before  # the kernel's list is the truth
    assert lab.connect("bot", first[0], A.MX2_V4, 25) == "reset"  # evicted, and stays so
    assert lab.connect("bot", late[-1], A.MX2_V4, 25) == "accepted"  # live knocks were not pushed out

    # A reboot: the list is gone; the newest saved knocks come back, never more than it holds.
    assert appliance.stop(signal.SIGTERM) == 0
    newest = set(first[len(late) :]) | set(late)
    assert saved_addresses(saved(appliance), "knocks") == newest
    reboot(lab)
    appliance.start()
    assert list_sources(lab, "mxknock4-32") == newest


def test_state_warnings_clear_once_a_save_succeeds(lab: Lab, appliance: Appliance) -> None:
    """Issue 10, items 14 and 7: a skipped saved state warns until the next good save (it used
    to warn, and `status` exit 4, until the next restart); a failing save warns while it lasts."""
    state_dir: Path = appliance.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text("garbage{")
    appliance.start(config_text(window=WINDOW), save_interval=1.0)
    assert any(is_state_warning(w) for w in appliance.status()["warnings"])
    wait_until(lambda: appliance.status()["health"] == "ok", timeout=10.0, what="the warning to clear")
    assert appliance.cli("status").returncode == 0
    assert saved(appliance)["version"] == 1  # a good file again

    # The state directory becomes unwritable (here: a file in its place, as root ignores modes;
    # a full disk fails the same way): status warns while saves fail...
    moved = state_dir.with_name("state.moved")
    state_dir.rename(moved)
    state_dir.write_text("not a directory")
    wait_until(
        lambda: any("state not saved" in w for w in appliance.status()["warnings"]),
        timeout=10.0,
        what="a warning about failing saves",
    )
    assert appliance.status()["health"] == "warning"
    assert appliance.cli("status").returncode == 4
    # ...and not once they work again.
    state_dir.unlink()
    moved.rename(state_dir)
    wait_until(lambda: appliance.status()["health"] == "ok", timeout=10.0, what="the save warning to clear")
