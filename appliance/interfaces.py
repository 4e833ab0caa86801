"""The machine's network interfaces, read from /sys/class/net (read-only).

The console's first-start setup lists them to pick the outside and inside ports (it runs
on the appliance itself, so it reads sysfs directly; the app takes the lister as a
parameter so tests can replace it), and the image's prestart brings the unused ones up
so that the setup can show their links.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYS_NET = Path("/sys/class/net")
ARPHRD_ETHER = "1"  # only Ethernet-like links can be bridge ports


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    operstate: str  # "up", "down", "unknown", ...
    carrier: bool | None  # None: cannot tell (the link is administratively down)
    master: str | None  # the bridge it is a port of, if any

    @property
    def administratively_down(self) -> bool:
        # The kernel answers a read of carrier with EINVAL exactly while the link is down.
        return self.carrier is None

    @property
    def link(self) -> str:
        if self.carrier is None:
            return "?"
        return "link" if self.carrier else "no link"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # carrier reads fail with EINVAL while the link is down
        return None


def list_interfaces(root: Path = SYS_NET) -> list[Interface]:
    """Ethernet interfaces that could be bridge ports: no loopback, no bridges."""
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if _read(entry / "type") != ARPHRD_ETHER or (entry / "bridge").exists():
            continue
        carrier = _read(entry / "carrier")
        master = entry / "master"
        found.append(
            Interface(
                name=entry.name,
                mac=_read(entry / "address") or "",
                operstate=_read(entry / "operstate") or "unknown",
                carrier=None if carrier is None else carrier == "1",
                master=master.resolve().name if master.exists() else None,
            )
        )
    return found
