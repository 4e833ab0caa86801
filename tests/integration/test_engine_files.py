"""The config file on a real box: broken by hand, or on a full disk (issue 10, items 1 and 7).

A broken file must not crash-loop mxknockd (systemd would restart it forever: no bridge, a
dead console); with a last good config it keeps filtering. A change on a full disk is saved
and live, or neither.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text

BROKEN = {
    "latin-1 byte": b"# caf\xe9: the admin's editor saved Latin-1\n",
    "!!int abc": b"smtp_port: !!int abc\n",
    "integer of 5000 digits": b"window: " + b"9" * 5000 + b"\n",
    "bad timestamp": b"window: !!timestamp 2026-13-45\n",
}


def start_with(appliance: Appliance, raw: bytes) -> None:
    appliance.workdir.mkdir(parents=True, exist_ok=True)
    appliance.config_path.write_bytes(raw)
    appliance.start()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_file_without_a_good_one_keeps_the_daemon_up_and_says_why(appliance: Appliance, name: str) -> None:
    start_with(appliance, BROKEN[name] + config_text(window=600).encode())
    status = appliance.status()
    assert status["health"] == "critical"
    assert status["config"] is None
    assert any("(file)" in p and "not valid" in p for p in status["problems"]), status["problems"]
    assert appliance.process is not None and appliance.process.poll() is None
    assert "Traceback" not in appliance.log()


def test_a_file_broken_by_hand_falls_back_to_the_last_good_config(lab: Lab, appliance: Appliance) -> None:
    good = config_text(window=600)
    appliance.start(good)
    assert appliance.status()["health"] == "ok"
    assert appliance.stop() == 0

    start_with(appliance, BROKEN["latin-1 byte"] + good.encode())
    status = appliance.status()
    assert status["filtering_verified"] is True
    assert status["health"] == "warning"
    assert any("last good config" in w and "not UTF-8: byte 0xe9 at line 1" in w for w in status["warnings"]), status
    # Unlisting works on the last good config: mx2 is shut until the knock.
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"

    appliance.config_path.write_text(good)  # the admin fixes the file
    assert appliance.cli("reload").returncode == 0
    assert appliance.status()["health"] == "ok"


@pytest.fixture
def tiny_disk(appliance: Appliance) -> Path:
    """A 1 MiB tmpfs for the config, so the test can fill it."""
    mount = appliance.workdir / "etc"
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True, timeout=10)
    appliance.config_path = mount / "mxknock.yaml"
    yield mount
    appliance.stop()
    subprocess.run(["umount", "-l", str(mount)], check=False, timeout=10)


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, timeout=10)
    return filler


def whitelist_in_kernel(lab: Lab) -> str:
    return lab.fw_exec(["ipset", "list", "mxknock-allow4"]).stdout


def test_a_whitelist_add_on_a_full_disk_is_neither_saved_nor_live(
    lab: Lab, appliance: Appliance, tiny_disk: Path
) -> None:
    appliance.start(config_text(window=600))
    filler = fill(tiny_disk)
    before = appliance.config_path.read_text()

    result = appliance.cli("whitelist", "add", A.BOT_V4)
    assert result.returncode == 1, result
    assert "cannot save the config" in result.stderr and "nothing was changed" in result.stderr, result.stderr
    assert A.BOT_V4 not in whitelist_in_kernel(lab)
    assert A.BOT_V4 not in appliance.cli("whitelist", "list").stdout
    assert appliance.config_path.read_text() == before
    assert [p.name for p in tiny_disk.iterdir() if p.name.startswith(".mxknock.yaml-")] == []
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"

    filler.unlink()  # space again: the same change goes through, saved and live
    assert appliance.cli("whitelist", "add", A.BOT_V4).returncode == 0
    assert A.BOT_V4 in whitelist_in_kernel(lab)
    assert A.BOT_V4 in appliance.config_path.read_text()


def test_an_apply_on_a_full_disk_changes_nothing(lab: Lab, appliance: Appliance, tiny_disk: Path) -> None:
    appliance.start(config_text(window=600))
    fill(tiny_disk)
    rules_before = [line for line in appliance.iptables_save(4).splitlines() if line.startswith("-A")]

    for extra in ((), ("--confirm-within", "30")):
        result = appliance.apply(config_text(window=600, mode="nolisting"), *extra)
        assert result.returncode == 1, result
        assert "cannot save the config" in result.stderr, result.stderr
        assert appliance.status()["config"]["mode"] == "unlisting"
        assert appliance.status()["pending"] is None
        assert [line for line in appliance.iptables_save(4).splitlines() if line.startswith("-A")] == rules_before
        assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"


def test_a_change_waiting_for_confirmation_is_not_kept_by_a_crash(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=600))
    before = appliance.config_path.read_text()
    assert appliance.apply(config_text(window=600, mode="nolisting"), "--confirm-within", "60").returncode == 0
    staged = [p for p in appliance.config_path.parent.iterdir() if p.name.startswith(".mxknock.yaml-")]
    assert len(staged) == 1  # written before the change went live, put in place only by `confirm`
    appliance.stop(signal.SIGKILL)

    appliance.start()
    assert appliance.status()["config"]["mode"] == "unlisting"  # the file never held the unconfirmed change
    assert appliance.config_path.read_text() == before
    assert not staged[0].exists()


def test_a_rollback_that_fails_in_the_timer_is_reported(lab: Lab, appliance: Appliance) -> None:
    """Issue 11's review: an exception in the confirm timer's thread was lost (no last_error,
    nothing in status) while the file held the old config and the kernel the new one."""
    appliance.start(config_text(window=600))
    assert appliance.apply(config_text(window=900), "--confirm-within", "2").returncode == 0
    lab.fw_exec(["ip", "link", "del", "eth1"])  # the inside NIC goes: nothing can be put back

    deadline = time.monotonic() + 15
    while not any("rolling it back failed" in p for p in appliance.status()["problems"]):
        assert time.monotonic() < deadline, appliance.status()["problems"]
        time.sleep(0.2)
    status = appliance.status()
    assert status["health"] == "critical"
    assert any("not confirmed in time" in p and "mxknock reload" in p for p in status["problems"]), status
    assert appliance.config_path.read_text() == config_text(window=600)
