"""Helpers for the console tests: a fake clock, fake interfaces, settling the app."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich.console import Console

from appliance.interfaces import Interface

if TYPE_CHECKING:
    from textual.pilot import Pilot
    from textual.widget import Widget

INTERFACES = [
    Interface("eth0", "52:54:00:00:00:01", "up", True, None),
    Interface("eth1", "52:54:00:00:00:02", "up", True, None),
    Interface("eth2", "52:54:00:00:00:03", "down", None, None),
    Interface("enp3s0", "52:54:00:00:00:04", "up", False, None),
]


class FakeClock:
    """The app's clock: countdowns and rates move only when a test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def settle(pilot: Pilot[Any], rounds: int = 5) -> None:
    """Let thread workers finish and their messages be handled (a handler may start
    another worker, hence the loop; each pause costs at least 20 ms, hence the exit)."""
    for _ in range(rounds):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(worker.is_running for worker in pilot.app.workers):
            return


async def poll(pilot: Pilot[Any]) -> None:
    """One status poll, as the 2 s timer would do, handled to the end."""
    await settle(pilot)
    pilot.app.poll_status()
    await settle(pilot)


def text_of(widget: Widget, width: int = 400) -> str:
    """What a Static shows, as plain text (wide: assertions do not depend on wrapping)."""
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    content = widget.content  # type: ignore[attr-defined]
    console.print(content)
    return console.export_text()
