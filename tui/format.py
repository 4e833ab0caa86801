"""Small text helpers shared by the screens (no Textual here)."""

from __future__ import annotations

from typing import Any

from appliance.status import human_age

age = human_age  # the CLI's format, so both show the same numbers the same way


def rate(per_minute: float | None) -> str:
    if per_minute is None:
        return "-"
    return f"{per_minute:.0f}" if per_minute >= 10 else f"{per_minute:.1f}"


def bar(used: int, capacity: int, width: int) -> str:
    """A fill bar in characters every console font has (CP437 blocks)."""
    filled = 0 if capacity <= 0 else min(width, round(width * used / capacity))
    return "█" * filled + "░" * (width - filled)


def percent(fraction: float) -> str:
    """0.3%, 12%: one decimal only where it says something (below 10 %)."""
    value = 100 * fraction
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def port_state(port: dict[str, Any]) -> str:
    if not port.get("present", True):
        return "missing"
    parts = ["up" if port["up"] else "down", "link" if port["carrier"] else "no link"]
    if not port["enslaved"]:
        parts.append("NOT in bridge")
    return ", ".join(parts)


def flag(value: bool) -> str:
    return "1" if value else "0"


def addresses(values: list[str] | None) -> str:
    return ", ".join(values or []) or "-"


def network(entry: str) -> str:
    """A host network as the bare address, the way the config file writes it."""
    address, _, prefix = entry.partition("/")
    return address if prefix in ("32", "128") and (prefix == "32") == ("." in address) else entry
