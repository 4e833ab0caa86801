"""Counter rates per minute, from successive status samples."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

WINDOW = 60.0  # seconds of history a rate looks back over


class RateTracker:
    """Feeds on {counter: total} samples; a counter that goes down (rules replaced,
    counters zeroed) starts its history again rather than showing a negative rate."""

    def __init__(self, window: float = WINDOW):
        self.window = window
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, now: float, totals: Mapping[str, int]) -> None:
        if self.samples and any(totals.get(k, 0) < v for k, v in self.samples[-1][1].items()):
            self.samples.clear()
        self.samples.append((now, dict(totals)))
        # Keep one sample older than the window so the rate covers all of it.
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def per_minute(self) -> dict[str, float]:
        if len(self.samples) < 2:
            return {}
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        if t1 <= t0:
            return {}
        return {k: (v - first.get(k, 0)) * 60.0 / (t1 - t0) for k, v in last.items()}
