"""Messages that carry the daemon's answers from worker threads to the UI thread."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from .backend import ControlError


class StatusArrived(Message):
    """A status poll finished. A newer one replaces an unhandled older one, so a
    slow screen redraws once for the latest counters, not once per poll."""

    bubble = False

    def __init__(self, status: dict[str, Any] | None, error: ControlError | None, asked: float):
        super().__init__()
        self.status = status
        self.error = error
        self.asked = asked  # app clock when the request left: older news loses

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatusArrived)


class Answer(Message):
    """A one-off backend call finished; `tag` says which."""

    bubble = False

    def __init__(self, tag: str, result: Any = None, error: ControlError | None = None):
        super().__init__()
        self.tag = tag
        self.result = result
        self.error = error
