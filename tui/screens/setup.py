"""First start: no config yet. Pick the two bridge ports, give the MX addresses, apply."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from .. import form
from ..interfaces import Interface
from .form import FormScreen

ROLE_KEYS = {"outside": "o", "inside": "i"}


class InterfaceTable(DataTable):
    """The machine's interfaces; o and i make the highlighted one a bridge port."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("o", "pick('outside')", "Outside port"),
        Binding("i", "pick('inside')", "Inside port"),
    ]

    class Picked(Message):
        def __init__(self, role: str, name: str):
            super().__init__()
            self.role = role
            self.name = name

    def action_pick(self, role: str) -> None:
        if self.row_count:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
            self.post_message(self.Picked(role, str(row_key.value)))


class SetupScreen(FormScreen):
    FIELDS: ClassVar[tuple[str, ...]] = form.SETUP_FIELDS
    TITLE_TEXT = "First start: setup"
    INTRO = (
        "No configuration yet: the bridge stays closed. Press o on the port toward the Internet, "
        "i on the port toward the mail server; F2 shows the rules before applying."
    )

    def __init__(self) -> None:
        self.picks: dict[str, str] = {}
        super().__init__(form.setup_base())

    def initial_texts(self) -> dict[str, str]:
        base = self.base
        return {
            "outside": "",
            "inside": "",
            "mx1": "",
            "mx2": "",
            "mode": base["mode"],
            "window": str(base["window"]),
        }

    def compose_top(self) -> ComposeResult:
        table = InterfaceTable(id="interfaces", cursor_type="row", zebra_stripes=False)
        yield table

    def make_control(self, name: str) -> Widget:
        if name in ROLE_KEYS:
            return Static(f"(press {ROLE_KEYS[name]} on the list)", id=name, classes="picked")
        return super().make_control(name)

    def picked_text(self, name: str) -> str:
        return self.picks.get(name, "")

    def on_mount(self) -> None:
        table = self.query_one(InterfaceTable)
        for heading in ("Interface", "MAC", "Link", "State"):
            table.add_column(heading)
        self.role_column = table.add_column("Role", width=8)  # picks come later: room for "outside"
        try:
            interfaces = self.app.list_interfaces()
        except OSError as exc:
            interfaces = []
            self.notify(f"cannot list the network interfaces: {exc}", severity="error")
        for iface in interfaces:
            table.add_row(*self.row(iface, ""), key=iface.name)
        self.interfaces = {i.name: i for i in interfaces}
        table.focus()
        # FormScreen.on_mount runs after this one (Textual calls each class's handler).

    @staticmethod
    def row(iface: Interface, role: str) -> tuple[str, ...]:
        state = iface.operstate + (f", in {iface.master}" if iface.master else "")
        return (iface.name, iface.mac, iface.link, state, role)

    @on(InterfaceTable.Picked)
    def picked(self, message: InterfaceTable.Picked) -> None:
        other = "inside" if message.role == "outside" else "outside"
        if self.picks.get(other) == message.name:
            del self.picks[other]  # one interface cannot be both ports
        self.picks[message.role] = message.name
        table = self.query_one(InterfaceTable)
        for name in self.interfaces:
            role = next((r for r, n in self.picks.items() if n == name), "")
            table.update_cell(name, self.role_column, role)
        for role in ROLE_KEYS:
            text = self.picks.get(role) or f"(press {ROLE_KEYS[role]} on the list)"
            self.query_one(f"#{role}", Static).update(text)
            if role in self.picks:
                self.dirty.add(role)
        self.field_changed(message.role)
