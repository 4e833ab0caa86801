"""A config form: fields validated as the admin types, by `appliance.config` itself.

Setup, Edit and Management share it. F2 goes to the review (diff, then apply); errors
the daemon sends back land next to the field they name, like local ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Select, Static, TextArea

from appliance.config import MODES

from .. import form
from ..widgets.field import FormField, text_input
from ..widgets.panels import TitleBar
from .pending import CHECK_MAIL
from .review import ReviewScreen


class FormScreen(Screen[dict[str, Any] | None]):
    """Subclasses set FIELDS, TITLE_TEXT, INTRO and `base` (the YAML shape edited); one
    with other fields than the config's top level overrides the model hooks below."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    TITLE_TEXT: ClassVar[str] = ""
    INTRO: ClassVar[str] = ""
    # What to check during the countdown before keeping the change.
    CHECK: ClassVar[str] = CHECK_MAIL
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("f2", "review", "Review & apply", key_display="F2"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, base: dict[str, Any]):
        super().__init__()
        self.base = base
        self.initial = {name: text for name, text in self.initial_texts().items() if name in self.FIELDS}
        self.dirty: set[str] = set()
        self.engine_errors: dict[str, list[str]] = {}
        self.show_all = False
        # Fields wrong from the start (setup's empty addresses) wait until touched; a field
        # that was right shows at once what another field's change did to it.
        self.quiet = self.quiet_fields()

    # ---- the model (form.py's by default) ----------------------------------------------

    def initial_texts(self) -> dict[str, str]:
        return form.texts_from(self.base)

    def judge(self, texts: dict[str, str]) -> form.Verdict:
        return form.judge(self.base, texts, self.FIELDS)

    def group_errors(self, errors: list[dict[str, str]]) -> dict[str, list[str]]:
        return form.group_errors(errors, self.FIELDS)

    def quiet_fields(self) -> set[str]:
        return set(self.judge(self.initial).errors)

    def label(self, name: str) -> str:
        return form.LABELS[name]

    def hint(self, name: str) -> str:
        return form.HINTS.get(name, "")

    # ---- building --------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield Static(self.INTRO, classes="intro")
        yield from self.compose_top()
        for name in self.FIELDS:
            yield FormField(name, self.label(name), self.make_control(name), self.hint(name))
        yield Static("", id="form-general", classes="general-errors")
        yield Footer()

    def compose_top(self) -> ComposeResult:
        return iter(())

    def make_control(self, name: str) -> Widget:
        value = self.initial.get(name, "")
        if name == "mode":
            options = [(f"{mode:<10} {form.MODE_HELP[mode]}", mode) for mode in MODES]
            return Select(options, value=value or MODES[0], allow_blank=False, compact=True, id="mode")
        return text_input(value, id=name)

    def on_mount(self) -> None:
        self.query_one(TitleBar).show(self.TITLE_TEXT, self.app.snapshot)
        self.revalidate()

    # ---- validation as you type ------------------------------------------------------

    def texts(self) -> dict[str, str]:
        values = {}
        for name in self.FIELDS:
            control = self.query_one(f"#field-{name}", FormField).control
            if isinstance(control, Input):
                values[name] = control.value
            elif isinstance(control, Select):
                values[name] = str(control.value)
            elif isinstance(control, TextArea):
                values[name] = control.text
            else:
                values[name] = self.picked_text(name)
        return values

    def picked_text(self, name: str) -> str:
        return ""

    def field_changed(self, name: str) -> None:
        if self.texts().get(name) != self.initial.get(name):
            self.dirty.add(name)
        self.engine_errors.pop(name, None)  # the daemon judged the old value, not this one
        self.engine_errors.pop(form.GENERAL, None)
        self.revalidate()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in self.FIELDS:
            self.field_changed(event.input.id)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id in self.FIELDS:
            self.field_changed(event.select.id)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id in self.FIELDS:
            self.field_changed(event.text_area.id)

    def revalidate(self) -> form.Verdict:
        verdict = self.judge(self.texts())
        for name in self.FIELDS:
            visible = self.show_all or name in self.dirty or name not in self.quiet
            local = verdict.errors.get(name, []) if visible else []
            shown = local + [e for e in self.engine_errors.get(name, []) if e not in local]
            self.query_one(f"#field-{name}", FormField).set_errors(shown)
        general = (verdict.errors.get(form.GENERAL, []) if self.show_all else []) + self.engine_errors.get(
            form.GENERAL, []
        )
        self.query_one("#form-general", Static).update("\n".join(general))
        return verdict

    # ---- review and apply ------------------------------------------------------------

    def action_review(self) -> None:
        self.show_all = True
        verdict = self.revalidate()
        if not verdict.valid:
            self.focus_first_error()
            if not verdict.errors.get(form.GENERAL):
                self.query_one("#form-general", Static).update("Fix the fields marked in red first.")
            return
        self.app.push_screen(ReviewScreen(verdict.data, verdict.config, self.TITLE_TEXT), self.reviewed)

    def focus_first_error(self) -> None:
        for name in self.FIELDS:
            field = self.query_one(f"#field-{name}", FormField)
            if field.errors:
                if field.control.focusable:
                    field.control.focus()
                return

    def reviewed(self, result: dict[str, Any] | None) -> None:
        if result is None:
            return
        if "errors" in result:
            self.engine_errors = self.group_errors(result["errors"])
            self.revalidate()
            self.focus_first_error()
            return
        self.dismiss({**result, "check": self.CHECK})

    def action_cancel(self) -> None:
        self.dismiss(None)
