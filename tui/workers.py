"""Running blocking backend calls in thread workers that only post messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from textual.message_pump import MessagePump
from textual.worker import Worker

from .backend import ControlError
from .messages import Answer

log = logging.getLogger("mxknock.console")


def capture(fn: Callable[[], Any]) -> tuple[Any, ControlError | None]:
    """(result, None) or (None, error); any failure becomes a ControlError to show."""
    try:
        return fn(), None
    except ControlError as exc:
        return None, exc
    except Exception as exc:  # a garbled reply or a bug must not take the console down...
        log.exception("unexpected error talking to mxknockd")  # ...nor hide its traceback
        return None, ControlError(f"unexpected error talking to mxknockd: {exc!r}")


def call_in_thread(node: MessagePump, tag: str, fn: Callable[[], Any], exclusive: bool = True) -> Worker[None]:
    """Run `fn` in a thread; `node` receives Answer(tag, ...) on its own thread."""

    def job() -> None:
        result, error = capture(fn)
        node.post_message(Answer(tag, result, error))

    return node.run_worker(job, name=tag, group=tag, thread=True, exclusive=exclusive)


def running(node: MessagePump, group: str) -> bool:
    """A worker of `group` is still on its way (workers are app-wide)."""
    return any(w.group == group and w.is_running for w in node.app.workers)
