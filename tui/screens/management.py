"""The management address: the box's own address on the bridge, for SSH and metrics.

The same form, review and countdown as Edit. The countdown matters most here: an
admin who changes the address over SSH can cut himself off, and unless he can keep
the change in time it rolls back by itself.
"""

from __future__ import annotations

from typing import ClassVar

from textual.widget import Widget
from textual.widgets import Select

from .. import form
from .. import management_form as mf
from ..widgets.field import FormField, text_area, text_input
from .form import FormScreen


class ManagementScreen(FormScreen):
    FIELDS: ClassVar[tuple[str, ...]] = mf.FIELDS
    TITLE_TEXT = "Management address"
    INTRO = (
        "Off, the bridge has no address and nobody can reach the box. On, SSH and metrics answer "
        "at this address. F2 shows the change; unless you keep it in time, it rolls back by itself."
    )
    CHECK = "Check that you still get in (open a new SSH session), then press c."

    # ---- the model -------------------------------------------------------------------

    def initial_texts(self) -> dict[str, str]:
        return mf.texts_from(self.base)

    def judge(self, texts: dict[str, str]) -> form.Verdict:
        return mf.judge(self.base, texts)

    def group_errors(self, errors: list[dict[str, str]]) -> dict[str, list[str]]:
        return mf.group_errors(errors, self.texts())

    def quiet_fields(self) -> set[str]:
        # Switched on from off, the empty address is wrong but not yet the admin's
        # mistake: like setup's empty fields it waits until touched (or F2).
        return set(self.judge({**self.initial, "management": mf.ON}).errors)

    def label(self, name: str) -> str:
        return mf.LABELS[name]

    def hint(self, name: str) -> str:
        return mf.HINTS.get(name, "")

    # ---- widgets ---------------------------------------------------------------------

    def make_control(self, name: str) -> Widget:
        value = self.initial.get(name, "")
        if name == "management":
            return Select(mf.SWITCH_OPTIONS, value=value, allow_blank=False, compact=True, id=name)
        if name == "metrics":
            return Select(mf.METRICS_OPTIONS, value=value, allow_blank=False, compact=True, id=name)
        if name == "ssh_keys":
            return text_area(value, id=name)
        return text_input(value, id=name)

    def on_mount(self) -> None:
        self.follow_switch()
        # FormScreen.on_mount runs after this one (Textual calls each class's handler).

    def field_changed(self, name: str) -> None:
        if name == "management":
            self.follow_switch()
        super().field_changed(name)

    def follow_switch(self) -> None:
        """Off: the other fields keep their text (on brings it back) but take no input."""
        off = self.texts()["management"] == mf.OFF
        for name in self.FIELDS[1:]:
            field = self.query_one(f"#field-{name}", FormField)
            field.set_class(off, "-off")
            field.control.disabled = off
