"""What the console knows about the daemon at one moment (built on the UI thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    status: dict[str, Any] | None = None  # the `status` answer; None when unreachable
    error: str | None = None  # why the daemon could not be asked
    rates: dict[str, float] = field(default_factory=dict)  # counter -> per minute
    # Not compared: an unchanged status must not redraw the dashboard.
    taken: float = field(default=0.0, compare=False)
    asked: float = field(default=0.0, compare=False)  # when the request for it left

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def config(self) -> dict[str, Any] | None:
        return self.status.get("config") if self.status else None

    @property
    def configured(self) -> bool:
        return self.config is not None

    @property
    def pending(self) -> dict[str, Any] | None:
        return self.status.get("pending") if self.status else None
