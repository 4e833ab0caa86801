"""After an apply: a countdown until the daemon rolls the change back by itself.

The admin keeps the change (confirm) or rolls it back now. If time runs out the
daemon rolls back on its own; this screen sees it in the next status and says so.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from ..messages import Answer
from ..state import Snapshot
from ..workers import call_in_thread

TITLES = {
    "waiting": "Change applied",
    "expired": "Change applied",
    "kept": "Change kept",
    "rolled back": "Change rolled back",
    "timed out": "Change rolled back",
    "gone": "Change no longer pending",
}
WAITING, EXPIRED, KEPT, ROLLED_BACK, TIMED_OUT, GONE = (
    "waiting",
    "expired",
    "kept",
    "rolled back",
    "timed out",
    "gone",
)
FINISHED = (KEPT, ROLLED_BACK, TIMED_OUT, GONE)
CHECK_MAIL = "Check that mail still arrives, then press c."
DRIFT = 1.5  # seconds the daemon's countdown may differ from ours before we follow it


class PendingScreen(ModalScreen[str]):
    """Dismisses with the outcome: kept, rolled back, timed out, or gone (decided elsewhere)."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("c", "keep", "Keep the change"),
        Binding("b", "roll_back", "Roll back now"),
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close", show=False),
    ]

    def __init__(self, applied: dict[str, Any], seconds: float | None, check: str | None = None):
        super().__init__()
        self.applied = applied
        self.seconds = seconds or 0.0
        self.check = check or CHECK_MAIL  # what to try before keeping the change
        self.state = WAITING
        self.busy = False
        self.note = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="pending-box"):
            yield Static("", id="pending-text")
        yield Footer()

    def on_mount(self) -> None:
        self.opened = self.app.clock()
        self.deadline = self.opened + self.seconds
        self.set_interval(0.5, self.tick)
        self.watch(self.app, "snapshot", self.snapshot_changed, init=False)
        self.render_text()

    # ---- time and the daemon's view --------------------------------------------------

    def left(self) -> float:
        return max(0.0, self.deadline - self.app.clock())

    def tick(self) -> None:
        if self.state == WAITING and self.left() <= 0:
            self.state = EXPIRED
            self.app.poll_status()  # the daemon rolls back now: go and see
        elif self.state == EXPIRED:
            self.app.poll_status()
        self.render_text()

    def snapshot_changed(self, snapshot: Snapshot) -> None:
        if self.state not in (WAITING, EXPIRED) or self.busy or not snapshot.reachable:
            return
        if snapshot.asked < self.opened:
            return  # asked before the apply: says nothing about this change
        pending = snapshot.pending
        if pending is not None:
            # The daemon's timer is the one that counts.
            if abs(self.left() - pending["seconds_left"]) > DRIFT:
                self.deadline = self.app.clock() + pending["seconds_left"]
        elif snapshot.config != self.applied or self.state == EXPIRED:
            self.state = TIMED_OUT
        else:
            self.state = GONE  # kept by someone else, e.g. `mxknock confirm`
        self.render_text()
        self.refresh_bindings()

    # ---- keys ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("keep", "roll_back"):
            return self.state in (WAITING, EXPIRED) and not self.busy
        return True

    def action_keep(self) -> None:
        self.send("confirm")

    def action_roll_back(self) -> None:
        self.send("rollback")

    def send(self, command: str) -> None:
        if self.busy or self.state not in (WAITING, EXPIRED):
            return
        self.busy = True
        self.refresh_bindings()
        call_in_thread(self, command, getattr(self.app.backend, command))

    def on_answer(self, message: Answer) -> None:
        self.busy = False
        if message.error is None:
            self.state = KEPT if message.tag == "confirm" else ROLLED_BACK
            self.note = ""
        elif not message.error.unreachable and self.state == EXPIRED:
            self.state = TIMED_OUT  # "nothing is waiting": the daemon got there first
        else:
            self.note = f"mxknockd: {message.error}"
        self.app.poll_status()
        self.render_text()
        self.refresh_bindings()

    def action_close(self) -> None:
        self.dismiss(self.state)

    # ---- text ------------------------------------------------------------------------

    def render_text(self) -> None:
        self.query_one("#pending-box").border_title = TITLES[self.state]
        text = Text()
        if self.state == WAITING:
            text.append("The new rules are in force now.\n\nThey roll back by themselves in ")
            text.append(f" {self.left():.0f} s ", style="bold reverse")
            text.append(f" unless you keep them.\n{self.check}\n")
            text.append("Esc closes this box; the dashboard keeps the countdown, c and b.")
        elif self.state == EXPIRED:
            text.append("Time is up: mxknockd is rolling the change back...", style="bold yellow")
        elif self.state == KEPT:
            text.append("Kept. ", style="bold green")
            text.append("The change is saved in the config file.")
        elif self.state == ROLLED_BACK:
            text.append("Rolled back. ", style="bold yellow")
            text.append("The previous rules are in force again.")
        elif self.state == TIMED_OUT:
            text.append("Not confirmed in time: ", style="bold red")
            text.append("mxknockd rolled the change back by itself. The previous rules are in force.")
        else:
            text.append("The change is no longer pending: it was kept elsewhere (e.g. `mxknock confirm`).")
        if self.state in FINISHED:
            text.append("\n\nPress Enter to close.")
        if self.note:
            text.append(f"\n\n{self.note}", style="bold red")
        self.query_one("#pending-text", Static).update(text)
