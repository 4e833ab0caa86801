"""The whitelist: addresses and networks that pass without knocking. Each add or
remove takes effect at once (the daemon applies and saves it)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static

from .. import form
from .. import format as fmt
from ..messages import Answer
from ..widgets.field import FormField, text_input
from ..widgets.panels import TitleBar
from ..workers import call_in_thread
from .entries import EntryListScreen

HINT = "addresses or networks, e.g. 198.51.100.7 203.0.113.0/24; Enter adds"


class WhitelistScreen(EntryListScreen):
    FIELD = "whitelist"

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("a", "focus_add", "Add"),
        Binding("d,delete", "remove", "Remove"),
        Binding("escape", "back", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield Static(
            "Whitelisted senders reach the mail server without knocking. Changes take effect at once.",
            classes="intro",
        )
        yield FormField("whitelist", "Add", text_input(id="add"), HINT)
        yield Static("Asking mxknockd...", id="whitelist-count")
        yield DataTable(id="whitelist", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TitleBar).show("Whitelist", self.app.snapshot)
        self.query_one(DataTable).add_column("Address or network", key="entry", width=60)
        self.query_one("#add", Input).focus()
        call_in_thread(self, "whitelist_list", self.app.backend.whitelist)

    def on_input_changed(self, event: Input.Changed) -> None:
        _, errors = form.parse_entries(event.value)
        self.field().set_errors(errors)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        entries, errors = form.parse_entries(event.value)
        if errors or not entries or self.busy:
            if not entries and not errors:
                self.field().set_errors(["type an address or network first"])
            return
        self.send("whitelist_add", lambda: self.app.backend.whitelist_add(entries))

    def action_remove(self) -> None:
        self.remove_selected(
            lambda entry: f"Remove {entry} from the whitelist?\nIt then has to knock like everybody else.",
            "whitelist_remove",
            lambda entry: self.app.backend.whitelist_remove([entry]),
        )

    def on_answer(self, message: Answer) -> None:
        self.busy = False
        if message.error is not None:
            errors = [e["message"] for e in message.error.errors] or [str(message.error)]
            if message.tag == "whitelist_list":
                self.query_one("#whitelist-count", Static).update(f"Cannot read the whitelist: {message.error}")
            else:
                self.field().set_errors(errors)
            self.refresh_bindings()
            return
        if message.tag == "whitelist_add":
            self.query_one("#add", Input).value = ""
            self.field().set_errors([])
            self.notify("Added to the whitelist; in force now.")
        elif message.tag == "whitelist_remove":
            self.notify("Removed from the whitelist; in force now.")
        self.show(message.result)
        if message.tag != "whitelist_list":
            self.app.poll_status()

    def show(self, entries: list[str]) -> None:
        self.entries = [fmt.network(e) for e in entries]  # add answers 192.0.2.1/32, list 192.0.2.1
        table = self.query_one(DataTable)
        current = table.cursor_row
        table.clear()
        for entry in self.entries:
            table.add_row(entry, key=entry)
        if self.entries:
            table.move_cursor(row=min(current, len(self.entries) - 1))
        count = len(self.entries)
        self.query_one("#whitelist-count", Static).update(
            f"{count} entr{'y' if count == 1 else 'ies'}" + ("; Tab to the list, then d removes one" if count else "")
        )
        self.refresh_bindings()
