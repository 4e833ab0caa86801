"""One form field: label, control, and a line under it with the hint or the error."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Static, TextArea


class FormField(Vertical):
    """The line under the control shows the hint, or the errors in the engine's words."""

    def __init__(self, name: str, label: str, control: Widget, hint: str = ""):
        super().__init__(id=f"field-{name}", classes="form-field")
        self.field_name = name
        self.label_text = label
        self.control = control
        self.hint = hint
        self.errors: list[str] = []

    def compose(self) -> ComposeResult:
        # A control of several lines (TextArea) makes its row as tall as it is.
        with Horizontal(classes="field-row -tall" if isinstance(self.control, TextArea) else "field-row"):
            yield Label(self.label_text, classes="field-label")
            yield self.control
        note = Static(self.hint, classes="field-note", markup=False)
        note.display = bool(self.hint)  # no empty line under fields without a hint
        yield note

    def set_errors(self, errors: list[str]) -> None:
        if errors == self.errors:
            return
        self.errors = list(errors)
        self.set_class(bool(errors), "-invalid")
        self.control.set_class(bool(errors), "-invalid")
        note = self.query_one(".field-note", Static)
        note.update("; ".join(errors) if errors else self.hint)
        note.display = bool(errors or self.hint)


class ConsoleInput(Input):
    """An Input whose own editing keys (Backspace, arrows, Enter) take effect in the order
    they were typed. Textual runs bound keys after the characters that follow them in one
    read (textual#6605), so type-ahead over a serial line or a paste could scramble a
    field. Keys bound further up (Tab, F2) can still overtake characters."""

    async def _on_key(self, event: events.Key) -> None:
        if event.is_printable:
            return  # Input._on_key (called next) inserts it
        for binding in self._bindings.key_to_bindings.get(event.key, []):
            if not binding.priority:
                event.stop()
                event.prevent_default()  # also keeps the app from running it a second time
                await self.run_action(binding.action)
                return


def text_input(value: str = "", id: str | None = None) -> Input:
    """A one-line input for 80x25 forms. No blinking cursor: on a serial line every
    blink is a redraw. Typing adds at the end rather than replacing a selection."""
    field_input = ConsoleInput(value, compact=True, id=id, select_on_focus=False)
    field_input.cursor_blink = False
    return field_input


class ConsoleTextArea(TextArea):
    """A TextArea with ConsoleInput's fix: its own bound keys (Backspace, arrows) take
    effect in the order they were typed, not after the characters typed behind them."""

    async def _on_key(self, event: events.Key) -> None:
        if event.is_printable or event.key == "enter":
            return  # TextArea._on_key (called next) inserts it
        for binding in self._bindings.key_to_bindings.get(event.key, []):
            if not binding.priority:
                event.stop()
                event.prevent_default()
                await self.run_action(binding.action)
                return


def text_area(value: str = "", id: str | None = None) -> TextArea:
    """Several lines, one item a line (SSH keys contain spaces). Line numbers, so the
    errors' "line 2" can be found; wrapped, so a long key's comment stays in sight;
    Tab leaves it like any other field."""
    area = ConsoleTextArea(value, id=id, soft_wrap=True, show_line_numbers=True, compact=True, tab_behavior="focus")
    area.cursor_blink = False
    return area
