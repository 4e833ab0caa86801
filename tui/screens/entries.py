"""What the whitelist and proven-senders screens share: an Add field over a table of
entries, removing the selected row after a y/n question, one request at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.screen import Screen
from textual.widgets import DataTable, Input

from ..widgets.field import FormField
from ..workers import call_in_thread
from .dialog import ConfirmDialog


class EntryListScreen(Screen[None]):
    FIELD: ClassVar[str]  # the FormField's name (its id is field-<name>)

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Any] = []
        self.busy = False  # a request is out: no second one until its answer

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "remove":
            return bool(self.entries) and not self.busy
        return True

    def field(self) -> FormField:
        return self.query_one(f"#field-{self.FIELD}", FormField)

    def send(self, command: str, call: Callable[[], Any]) -> None:
        self.busy = True
        call_in_thread(self, command, call)

    def remove_selected(self, question: Callable[[str], str], command: str, call: Callable[[str], Any]) -> None:
        """Ask about the row under the cursor, then `call(its key)` in a worker."""
        table = self.query_one(DataTable)
        if not table.row_count or self.busy:
            return
        key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

        def answered(yes: bool | None) -> None:
            if yes:
                self.send(command, lambda: call(key))

        self.app.push_screen(ConfirmDialog(question(key)), answered)

    def action_focus_add(self) -> None:
        self.query_one("#add", Input).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
