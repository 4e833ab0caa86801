"""The dashboard: health, bridge, counters with rates, knock lists; live."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from ..messages import Answer
from ..state import Snapshot
from ..widgets.panels import BridgePanel, CountersPanel, KnockListsPanel, MessagesPanel, SummaryPanel, TitleBar
from ..workers import call_in_thread
from .edit import EditScreen
from .knocks import KnocksScreen
from .management import ManagementScreen
from .rules import RulesScreen
from .setup import SetupScreen
from .trusted import TrustedScreen
from .whitelist import WhitelistScreen


class DashboardScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("e", "edit", "Edit"),
        Binding("s", "setup", "Setup"),
        Binding("w", "whitelist", "Whitelist"),
        # Short words: with m the footer still fits 80 columns (help says it in full).
        Binding("t", "trusted", "Proven"),
        Binding("k", "knocks", "Knocks"),
        Binding("r", "rules", "Rules"),
        Binding("m", "management", "Mgmt"),
        Binding("c", "confirm", "Keep"),
        Binding("b", "rollback", "Roll back"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.note: Text | None = None  # the outcome of the last c / b

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield SummaryPanel(id="summary")
        yield BridgePanel(id="bridge", classes="panel")
        yield CountersPanel(id="counters", classes="panel")
        yield KnockListsPanel(id="knock-lists", classes="panel")
        yield MessagesPanel(id="messages")
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self.show)

    def show(self, snapshot: Snapshot) -> None:
        # Unreachable: no stale or empty numbers, just what is wrong and what to do.
        self.set_class(not snapshot.reachable, "-unreachable")
        self.query_one(TitleBar).show("Dashboard", snapshot)
        self.query_one(SummaryPanel).show(snapshot)
        self.query_one(BridgePanel).show(snapshot)
        self.query_one(CountersPanel).show(snapshot)
        self.query_one(KnockListsPanel).show(snapshot)
        self.query_one(MessagesPanel).show(snapshot, self.note)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        snapshot: Snapshot = self.app.snapshot
        if action in ("edit", "whitelist", "management"):
            # While a change waits for confirmation the daemon takes no other (and the
            # footer needs the room for c and b).
            return snapshot.configured and snapshot.pending is None
        if action in ("knocks", "rules", "trusted"):
            # Proven senders are not part of the config: they can change while one is pending.
            return snapshot.configured
        if action == "setup":
            return snapshot.reachable and not snapshot.configured
        if action in ("confirm", "rollback"):
            return snapshot.pending is not None
        return True

    def action_edit(self) -> None:
        if self.app.snapshot.config is not None:
            self.app.open_form(EditScreen(self.app.snapshot.config))

    def action_management(self) -> None:
        if self.app.snapshot.config is not None:
            self.app.open_form(ManagementScreen(self.app.snapshot.config))

    def action_setup(self) -> None:
        self.app.open_form(SetupScreen())

    def action_whitelist(self) -> None:
        self.app.push_screen(WhitelistScreen())

    def action_trusted(self) -> None:
        self.app.push_screen(TrustedScreen())

    def action_knocks(self) -> None:
        self.app.push_screen(KnocksScreen())

    def action_rules(self) -> None:
        self.app.push_screen(RulesScreen())

    def action_confirm(self) -> None:
        call_in_thread(self, "confirm", self.app.backend.confirm)

    def action_rollback(self) -> None:
        call_in_thread(self, "rollback", self.app.backend.rollback)

    def on_answer(self, message: Answer) -> None:
        if message.error is not None:
            self.note = Text(f"mxknockd: {message.error}", style="bold red")
        elif message.tag == "confirm":
            self.note = Text("The change is kept and saved.", style="green")
        else:
            self.note = Text("The change was rolled back; the previous rules are in force.", style="yellow")
        self.query_one(MessagesPanel).show(self.app.snapshot, self.note)
        self.app.poll_status()
