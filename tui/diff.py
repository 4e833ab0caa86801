"""What a change does, as text an admin reads before applying it."""

from __future__ import annotations

import difflib


def unified(before: str, after: str, before_name: str, after_name: str) -> list[str]:
    """Unified diff lines; empty when nothing changes."""
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), fromfile=before_name, tofile=after_name, lineterm="", n=2
        )
    )
