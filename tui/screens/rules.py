"""The rules in force, as iptables-save text (what `mxknock rules` prints offline)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..messages import Answer
from ..widgets.panels import TitleBar
from ..workers import call_in_thread


class RulesScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("f5", "reload", "Reload", key_display="F5"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        with VerticalScroll(id="rules-view"):
            yield Static("Asking mxknockd...", id="rules", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TitleBar).show("Rules in force", self.app.snapshot)
        self.query_one("#rules-view").focus()
        self.action_reload()

    def action_reload(self) -> None:
        call_in_thread(self, "rules", self.app.backend.rules)

    def on_answer(self, message: Answer) -> None:
        text = f"Cannot read the rules: {message.error}" if message.error else message.result or "(no rules yet)"
        self.query_one("#rules", Static).update(text)
