"""First start: no config yet. Pick the two bridge ports, give the MX addresses, apply."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from appliance.interfaces import Interface

from .. import form
from .form import FormScreen

ROLE_KEYS = {"outside": "o", "inside": "i"}
# How often the NIC list is read again: a cable plugged in shows up as "link" this soon.
LINK_REFRESH_SECONDS = 2.0


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
        "i on the port toward the mail server (Link shows which has a cable); F2 reviews."
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
        self.columns = [table.add_column(heading) for heading in ("Interface", "MAC", "Link", "State")]
        self.role_column = table.add_column("Role", width=8)  # picks come later: room for "outside"
        self.interfaces: dict[str, Interface] = {}
        self.listing_failed = False
        self.refresh_interfaces()
        table.focus()
        self.set_interval(LINK_REFRESH_SECONDS, self.refresh_interfaces)
        # FormScreen.on_mount runs after this one (Textual calls each class's handler).

    def refresh_interfaces(self) -> None:
        """Read the NICs again: the admin tells the ports apart by plugging a cable in and
        watching its Link change. Rows stay in place; picks of a NIC that is gone are dropped."""
        try:
            found = {i.name: i for i in self.app.list_interfaces()}
        except OSError as exc:
            if not self.listing_failed:  # once, not every 2 s
                self.notify(f"cannot list the network interfaces: {exc}", severity="error")
            self.listing_failed = True
            return
        self.listing_failed = False
        table = self.query_one(InterfaceTable)
        for name in self.interfaces.keys() - found.keys():
            table.remove_row(name)
        for name, iface in found.items():
            if name not in self.interfaces:
                table.add_row(*self.cells(iface), "", key=name)  # no pick names a new NIC
            elif iface != self.interfaces[name]:
                for column, value in zip(self.columns, self.cells(iface), strict=True):
                    table.update_cell(name, column, value)
        self.interfaces = found
        gone = [role for role, name in self.picks.items() if name not in found]
        if gone:  # else nothing to redraw: every 2 s on a 115200 baud serial line adds up
            for role in gone:
                del self.picks[role]
            self.show_picks()
            for role in gone:
                self.field_changed(role)

    @staticmethod
    def cells(iface: Interface) -> tuple[str, str, str, str]:
        """Interface, MAC, Link, State: what the NIC itself says (the Role is the admin's)."""
        state = iface.operstate + (f", in {iface.master}" if iface.master else "")
        return (iface.name, iface.mac, iface.link, state)

    @on(InterfaceTable.Picked)
    def picked(self, message: InterfaceTable.Picked) -> None:
        other = "inside" if message.role == "outside" else "outside"
        if self.picks.get(other) == message.name:
            del self.picks[other]  # one interface cannot be both ports
        self.picks[message.role] = message.name
        self.dirty.update(self.picks)
        self.show_picks()
        self.field_changed(message.role)

    def show_picks(self) -> None:
        """The Role column and the two port fields, from self.picks."""
        table = self.query_one(InterfaceTable)
        for name in self.interfaces:
            role = next((r for r, n in self.picks.items() if n == name), "")
            table.update_cell(name, self.role_column, role)
        for role in ROLE_KEYS:
            text = self.picks.get(role) or f"(press {ROLE_KEYS[role]} on the list)"
            self.query_one(f"#{role}", Static).update(text)
