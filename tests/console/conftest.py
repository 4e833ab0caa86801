"""Fixtures for the console tests: a fake daemon and an app wired to it.

The developer's own socket (MXKNOCK_SOCKET) and terminal never reach these tests:
the client is always the in-memory fake, and apps run headless at 80x25.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .fake_daemon import FakeDaemon
from .helpers import INTERFACES, FakeClock

SIZE = (80, 25)


@pytest.fixture(autouse=True)
def _no_real_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXKNOCK_SOCKET", "/nonexistent/mxknock-test.sock")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def daemon(clock: FakeClock) -> FakeDaemon:
    return FakeDaemon(clock=clock)


@pytest.fixture
def make_app(daemon: FakeDaemon, clock: FakeClock) -> Callable[..., Any]:
    """An app on the fake daemon; the 2 s poll is off unless a test turns it on."""
    from tui.app import ConsoleApp  # textual is only needed by the tests that use this

    def make(**options: Any) -> ConsoleApp:
        options.setdefault("poll_interval", 3600)
        options.setdefault("interfaces", lambda: list(INTERFACES))
        return ConsoleApp(daemon, clock=clock, **options)

    return make
