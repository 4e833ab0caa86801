"""The live knock list: who knocked, how long ago, how long mx2 stays open for them."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from .. import format as fmt
from ..messages import Answer
from ..widgets.panels import TitleBar
from ..workers import call_in_thread, running

# (column key, heading, sort key); time columns sort by their seconds, not their text,
# and ties go by address so rows do not swap places between refreshes.
COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("address", "Address", lambda k: k["address"]),
    ("list", "List", lambda k: (k["list"], k["address"])),
    ("age", "Age", lambda k: (k["age"], k["address"])),
    ("time_left", "Time left", lambda k: (k["time_left"], k["address"])),
    ("hits", "Hits", lambda k: (k["hits"], k["address"])),
)
SORT_KEYS = {key: sort for key, _, sort in COLUMNS}
# Fixed widths: the table fits 80 columns and the sort mark does not shift columns.
WIDTHS = {"address": 32, "list": 13, "age": 9, "time_left": 10, "hits": 5}


def rows(knock_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**k, "list": kl["name"]} for kl in knock_lists for k in kl.get("knocks", [])]


def cells(knock: dict[str, Any]) -> tuple[str, ...]:
    left = fmt.age(knock["time_left"]) if knock["time_left"] > 0 else "expired"
    return (knock["address"], knock["list"], fmt.age(knock["age"]), left, str(knock["hits"]))


class KnocksScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("s", "next_sort", "Sort by"),
        Binding("v", "reverse", "Reverse"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = "age"
        self.reverse = False
        self.knocks: list[dict[str, Any]] = []
        self.shown: list[tuple[str, tuple[str, ...]]] = []

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield Static("Asking mxknockd...", id="knock-summary", classes="intro")
        yield DataTable(id="knocks", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, heading, _ in COLUMNS:
            table.add_column(heading, key=key, width=WIDTHS[key])
        self.query_one(TitleBar).show("Knocks", self.app.snapshot)
        self.fetch()
        self.set_interval(self.app.poll_interval, self.fetch)
        table.focus()

    def fetch(self) -> None:
        if not running(self, "knocks"):
            call_in_thread(self, "knocks", self.app.backend.knocks, exclusive=False)

    def on_answer(self, message: Answer) -> None:
        summary = self.query_one("#knock-summary", Static)
        self.query_one(TitleBar).show("Knocks", self.app.snapshot)
        if message.error is not None:
            summary.update(f"Cannot read the knock list: {message.error}")
            return
        lists = message.result
        if not lists:
            summary.update("No knock lists: no configuration is in force.")
        else:
            summary.update(
                "   ".join(
                    f"{kl['name']}: {kl['entries']}/{kl['capacity']}, {kl['live']} live, window {kl['window']} s"
                    + ("  EVICTING" if kl["evicting"] else "")
                    for kl in lists
                )
            )
        self.knocks = rows(lists)
        self.redraw()

    def redraw(self) -> None:
        """Update cells in place when the rows are the same; rebuild (keeping the cursor's
        row) only when knocks come, go or change order."""
        table = self.query_one(DataTable)
        ordered = sorted(self.knocks, key=SORT_KEYS[self.sort_key], reverse=self.reverse)
        wanted = [(f"{k['list']} {k['address']}", cells(k)) for k in ordered]
        if [key for key, _ in wanted] == [key for key, _ in self.shown]:
            for (key, new), (_, old) in zip(wanted, self.shown, strict=True):
                for (column, _, _), value, before in zip(COLUMNS, new, old, strict=True):
                    if value != before:
                        table.update_cell(key, column, value)
        else:
            current = None
            if table.row_count:
                current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            table.clear()
            for key, values in wanted:
                table.add_row(*values, key=key)
            keys = [key for key, _ in wanted]
            if current in keys:
                table.move_cursor(row=keys.index(current))
        self.shown = wanted
        for key, heading, _ in COLUMNS:
            mark = (" v" if self.reverse else " ^") if key == self.sort_key else ""
            table.columns[table_key(table, key)].label = Text(heading + mark)
        table.refresh()

    def action_next_sort(self) -> None:
        keys = [key for key, _, _ in COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.redraw()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.redraw()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_key:
            self.reverse = not self.reverse
        self.sort_key = key
        self.redraw()


def table_key(table: DataTable, key: str) -> Any:
    return next(column_key for column_key in table.columns if column_key.value == key)
