"""Proven senders: addresses that completed a mail handshake after a knock and pass to
mx2 without knocking until their time runs out. An address added here gets the full
lifetime; a removed one has to knock again. Each change takes effect at once (the
daemon writes the kernel's set itself; the config file does not change)."""

from __future__ import annotations

from typing import Any, ClassVar

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

HINT = "one IPv4 or IPv6 address, e.g. 192.0.2.25; Enter adds"
# The daemon sends every entry (the kernel set holds up to 262144); a table that long
# would take the console seconds to build, so it shows the first ones and says so.
MAX_ROWS = 2000
WIDTHS = {"address": 42, "family": 8, "time_left": 12}


def intro(answer: dict[str, Any] | None, config: dict[str, Any] | None) -> str:
    if answer is None:
        return "Proven senders pass to mx2 without knocking. Changes take effect at once."
    if not answer.get("enabled"):
        return (
            "Proven senders are off in the configuration (trust): every sender knocks. "
            "Entries here are kept and count again once trust is on."
        )
    if config and config.get("mode") == "nolisting":
        return "Mode nolisting: mx2 is open to every sender, so proven senders change nothing now."
    days = answer.get("lifetime", 0) / 86400
    return (
        f"Proven senders pass to mx2 without knocking for {days:g} days, renewed with each connection. "
        "One added here gets the full time. Changes take effect at once."
    )


def counts(entries: list[dict[str, Any]]) -> str:
    v4 = sum(1 for e in entries if e["family"] == "ipv4")
    total = len(entries)
    line = f"{total} proven sender{'' if total == 1 else 's'} (IPv4 {v4}, IPv6 {total - v4})"
    if total > MAX_ROWS:
        line += f"; the first {MAX_ROWS} shown"
    if total:
        line += "; Tab to the list, then d removes one"
    return line


class TrustedScreen(EntryListScreen):
    FIELD = "trusted"

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("a", "focus_add", "Add"),
        Binding("d,delete", "remove", "Remove"),
        Binding("f5", "reload", "Reload", key_display="F5"),
        Binding("escape", "back", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield Static(intro(None, None), id="trusted-intro", classes="intro")
        yield FormField("trusted", "Add", text_input(id="add"), HINT)
        yield Static("Asking mxknockd...", id="trusted-count")
        yield DataTable(id="trusted", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TitleBar).show("Proven senders", self.app.snapshot)
        table = self.query_one(DataTable)
        table.add_column("Address", key="address", width=WIDTHS["address"])
        table.add_column("Family", key="family", width=WIDTHS["family"])
        table.add_column("Time left", key="time_left", width=WIDTHS["time_left"])
        self.query_one("#add", Input).focus()
        self.action_reload()

    def judge(self, text: str) -> tuple[str | None, list[str]]:
        return form.parse_trusted(text, form.families(self.app.snapshot.config) or (4, 6))

    # ---- keys ------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self.field().set_errors(self.judge(event.value)[1])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        address, errors = self.judge(event.value)
        if errors or self.busy:
            return
        if address is None:
            self.field().set_errors(["type an address first"])
            return
        self.send("trusted_add", lambda: self.app.backend.trusted_add([address]))

    def action_reload(self) -> None:
        call_in_thread(self, "trusted_list", self.app.backend.trusted)

    def action_remove(self) -> None:
        self.remove_selected(
            lambda address: f"Remove {address} from the proven senders?\nIt then has to knock again like a new sender.",
            "trusted_remove",
            lambda address: self.app.backend.trusted_remove([address]),
        )

    # ---- answers ---------------------------------------------------------------------

    def on_answer(self, message: Answer) -> None:
        if message.tag != "trusted_list":  # F5 may answer while a change is on its way
            self.busy = False
        if message.error is not None:
            if message.tag == "trusted_list":
                self.query_one("#trusted-count", Static).update(f"Cannot read the proven senders: {message.error}")
            else:
                self.field().set_errors([e["message"] for e in message.error.errors] or [str(message.error)])
            self.refresh_bindings()
            return
        if message.tag == "trusted_add":
            self.query_one("#add", Input).value = ""
            self.notify("Added to the proven senders; in force now.")
        elif message.tag == "trusted_remove":
            self.notify("Removed from the proven senders; in force now.")
        self.show(message.result)
        if message.tag != "trusted_list":
            # The daemon's words were about that change: back to what the field holds now.
            self.field().set_errors(self.judge(self.query_one("#add", Input).value)[1])
            self.app.poll_status()  # the dashboard's count

    def show(self, answer: dict[str, Any]) -> None:
        self.query_one("#trusted-intro", Static).update(intro(answer, self.app.snapshot.config))
        self.entries = list(answer["trusted"])
        table = self.query_one(DataTable)
        current = table.cursor_row
        table.clear()
        for entry in self.entries[:MAX_ROWS]:
            family = entry["family"].replace("ipv", "IPv")
            table.add_row(entry["address"], family, fmt.age(entry["time_left"]), key=entry["address"])
        if table.row_count:
            table.move_cursor(row=min(current, table.row_count - 1))
        self.query_one("#trusted-count", Static).update(counts(self.entries))
        self.refresh_bindings()
