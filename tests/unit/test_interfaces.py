"""The NIC list of the console's setup and the image's prestart, read from a fake sysfs."""

from __future__ import annotations

from pathlib import Path

from appliance.interfaces import list_interfaces


def fake_sysfs(root: Path) -> Path:
    """A /sys/class/net lookalike: loopback, a bridge, ports with and without carrier."""

    def link(name: str, kind: str = "1", **files: str) -> Path:
        d = root / name
        d.mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        for key, value in files.items():
            (d / key).write_text(value + "\n")
        return d

    link("lo", kind="772", address="00:00:00:00:00:00", operstate="unknown", carrier="1")
    bridge = link("br0", address="52:54:00:aa:aa:aa", operstate="up", carrier="1")
    (bridge / "bridge").mkdir()
    eth0 = link("eth0", address="52:54:00:00:00:01", operstate="up", carrier="1")
    (eth0 / "master").symlink_to(bridge)
    link("eth1", address="52:54:00:00:00:02", operstate="up", carrier="0")
    link("eth2", address="52:54:00:00:00:03", operstate="down")  # carrier unreadable while down
    return root


def test_interfaces_are_read_from_sysfs(tmp_path):
    found = {i.name: i for i in list_interfaces(fake_sysfs(tmp_path / "net"))}
    assert sorted(found) == ["eth0", "eth1", "eth2"]  # no loopback, no bridge
    assert (found["eth0"].mac, found["eth0"].link, found["eth0"].master) == ("52:54:00:00:00:01", "link", "br0")
    assert (found["eth1"].link, found["eth1"].master) == ("no link", None)
    assert (found["eth2"].operstate, found["eth2"].carrier, found["eth2"].link) == ("down", None, "?")
    # What the image's prestart brings up without a config: down and in no bridge.
    assert [i.name for i in found.values() if i.administratively_down and i.master is None] == ["eth2"]


def test_no_sysfs_means_no_interfaces(tmp_path):
    assert list_interfaces(tmp_path / "missing") == []


def test_this_machines_interfaces_can_be_listed():
    for iface in list_interfaces():  # whatever this machine has; it must not raise
        assert iface.name and iface.operstate
