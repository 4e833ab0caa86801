"""Review a change before it is applied: config and rules, before and after, as diffs.

"Before" comes from the daemon (`config`, `rules`); "after" is compiled here with the
pure compiler, so nothing touches the kernel until the admin presses a.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from appliance.compiler import compile_config
from appliance.config import Config

from .. import diff, form
from ..messages import Answer
from ..widgets.panels import TitleBar
from ..workers import call_in_thread, running

DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))


def render_diff(title: str, lines: list[str]) -> Text:
    text = Text()
    text.append(f"{title}\n", style="bold underline")  # Text(style=) would style every line
    if not lines:
        text.append("  no change\n")
    for line in lines:
        style = next((s for prefix, s in DIFF_STYLES if line.startswith(prefix)), "")
        text.append(line + "\n", style=style)
    return text


class ReviewScreen(Screen[dict[str, Any] | None]):
    """Dismisses with {"config", "confirm_within"} once applied, {"errors": [...]} when
    the daemon refused fields, or None to go back unchanged."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("a", "apply", "Apply"),
        Binding("escape", "back", "Back to the form"),
    ]

    def __init__(self, data: dict[str, Any], config: Config, title: str):
        super().__init__()
        self.data = data
        self.config = config
        self.title_text = title
        self.ready = False  # the running rules are known
        self.busy = False  # an apply is on its way

    def compose(self) -> ComposeResult:
        yield TitleBar(classes="title")
        yield Static(self.intro(), classes="intro")
        with VerticalScroll(id="diff-view"):
            yield Static("Asking mxknockd for the running rules...", id="diff")
        yield Static("", id="review-error", classes="general-errors")
        yield Footer()

    def intro(self) -> str:
        within = self.app.confirm_within
        if within:
            return (
                f"Nothing is applied until you press a. After that the change rolls back by itself "
                f"after {within:g} s unless you keep it. Arrows and PgUp/PgDn scroll."
            )
        return "Nothing is applied until you press a. Arrows and PgUp/PgDn scroll."

    def on_mount(self) -> None:
        self.query_one(TitleBar).show(f"{self.title_text}: review", self.app.snapshot)
        self.query_one("#diff-view").focus()
        self.fetch_before()
        # If the daemon was unreachable, ask again as soon as a status poll gets through.
        self.watch(self.app, "snapshot", self.snapshot_changed, init=False)

    def fetch_before(self) -> None:
        backend = self.app.backend
        call_in_thread(self, "before", lambda: (backend.config(), backend.rules()))

    def snapshot_changed(self, snapshot: Any) -> None:
        if not self.ready and snapshot.reachable and not running(self, "before"):
            self.fetch_before()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply":
            return True if self.ready and not self.busy else None
        return True

    def on_answer(self, message: Answer) -> None:
        if message.tag == "before":
            self.show_before(message)
        elif message.tag == "apply":
            self.applied(message)

    def show_before(self, message: Answer) -> None:
        if message.error is not None:
            self.query_one("#diff", Static).update(
                Text(f"Cannot read the running rules: {message.error}\nThis screen asks again every few seconds.")
            )
            return
        self.query_one("#review-error", Static).update("")
        before_config, before_rules = message.result
        before_yaml = form.to_yaml(before_config) if before_config else ""
        after_yaml = form.to_yaml(self.config.to_dict())
        after_rules = compile_config(self.config).render()
        text = render_diff("Configuration", diff.unified(before_yaml, after_yaml, "running config", "new config"))
        text.append("\n")
        text.append_text(render_diff("Rules", diff.unified(before_rules, after_rules, "running rules", "new rules")))
        self.query_one("#diff", Static).update(text)
        self.ready = True
        self.refresh_bindings()

    def action_apply(self) -> None:
        if not self.ready or self.busy:
            return
        self.busy = True
        self.refresh_bindings()
        self.query_one("#review-error", Static).update("Applying...")
        yaml_text = form.to_yaml(self.config.to_dict())
        within = self.app.confirm_within or None
        call_in_thread(self, "apply", lambda: self.app.backend.apply(yaml_text, within))

    def applied(self, message: Answer) -> None:
        self.busy = False
        self.refresh_bindings()
        error = message.error
        if error is None:
            self.dismiss({"config": self.config.to_dict(), "confirm_within": message.result.get("confirm_within")})
        elif error.errors:
            self.dismiss({"errors": error.errors, "message": str(error)})
        else:
            self.show_error(error)

    def show_error(self, error: Exception) -> None:
        what_next = (
            "Start mxknockd, then press a again."
            if getattr(error, "unreachable", False)
            else "Press Esc to change the form, or a to try again."
        )
        self.query_one("#review-error", Static).update(
            Text(f"mxknockd did not apply the change: {error}\n{what_next}", style="bold red")
        )

    def action_back(self) -> None:
        if not self.busy:
            self.dismiss(None)
