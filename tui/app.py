"""The console app: one Textual App, the control client injected.

The app polls `status` every `poll_interval` seconds in a thread worker and keeps
the latest `Snapshot` in a reactive; screens watch it ("attributes down, messages up").
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from appliance.interfaces import Interface, list_interfaces

from .backend import Backend, Client
from .messages import StatusArrived
from .rates import RateTracker
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.pending import PendingScreen
from .screens.setup import SetupScreen
from .state import Snapshot
from .theme import CONSOLE_THEME
from .widgets.scrollbar import use_console_scrollbars
from .workers import capture, running

DEFAULT_CONFIRM_WITHIN = 60.0
POLL_INTERVAL = 2.0


class ConsoleApp(App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "mxknock console"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("f1", "help", "Help", key_display="F1"),
        Binding("question_mark", "help", "Help", show=False),
    ]

    snapshot: reactive[Snapshot] = reactive(Snapshot)

    def __init__(
        self,
        client: Client,
        *,
        interfaces: Callable[[], list[Interface]] = list_interfaces,
        poll_interval: float = POLL_INTERVAL,
        confirm_within: float = DEFAULT_CONFIRM_WITHIN,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        use_console_scrollbars()
        self.backend = Backend(client)
        self.list_interfaces = interfaces
        self.poll_interval = poll_interval
        self.confirm_within = confirm_within
        self.clock = clock
        self.rates = RateTracker()
        self._setup_offered = False

    def on_mount(self) -> None:
        self.register_theme(CONSOLE_THEME)
        self.theme = CONSOLE_THEME.name
        self.push_screen(DashboardScreen())
        self.poll_status()
        self.set_interval(self.poll_interval, self.poll_status)

    # ---- live status ---------------------------------------------------------------

    def poll_status(self) -> None:
        """Ask for status now, unless a request is still on its way."""
        if running(self, "status"):
            return
        asked = self.clock()

        def fetch() -> None:
            status, error = capture(self.backend.status)
            self.post_message(StatusArrived(status, error, asked))

        self.run_worker(fetch, name="status", group="status", thread=True)

    def on_status_arrived(self, message: StatusArrived) -> None:
        if message.asked < self.snapshot.asked:
            return
        now = self.clock()
        status = message.status
        if status is not None:
            self.rates.add(now, {name: c["total"] for name, c in status["counters"].items()})
        self.snapshot = Snapshot(
            status=status,
            error=None if message.error is None else str(message.error),
            rates=self.rates.per_minute() if status is not None else {},
            taken=now,
            asked=message.asked,
        )
        self._offer_setup()

    def _offer_setup(self) -> None:
        """First start: the daemon runs without a config, so go straight to setup (once)."""
        if self._setup_offered or not self.snapshot.reachable or self.snapshot.configured:
            return
        if isinstance(self.screen, DashboardScreen):
            self._setup_offered = True
            self.open_form(SetupScreen())

    # ---- flows shared by screens ---------------------------------------------------

    def open_form(self, screen: Any) -> None:
        """Push a config form (setup, edit, management); an applied change leads to the countdown."""

        def done(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.push_screen(PendingScreen(result["config"], result.get("confirm_within"), result.get("check")))
            self.poll_status()

        self.push_screen(screen, done)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def run(client: Client, confirm_within: float = DEFAULT_CONFIRM_WITHIN) -> None:
    log_to_syslog()
    ConsoleApp(client, confirm_within=confirm_within).run()


def log_to_syslog(address: str = "/dev/log") -> bool:
    """The console's own errors go to syslog (the journal, on the box): its terminal is the
    screen, where a traceback would be drawn over. Without a syslog socket they are not kept."""
    if not Path(address).exists():
        return False
    handler = logging.handlers.SysLogHandler(address=address)
    handler.setFormatter(logging.Formatter("mxknock-console: %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("mxknock.console")
    logger.addHandler(handler)
    logger.propagate = False  # never to stderr (the screen)
    return True
