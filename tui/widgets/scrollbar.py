"""Scrollbars in glyphs a Linux console font has.

Textual draws the ends of a scrollbar thumb with eighth blocks (▁▂▃ ... ▇), which
the VGA/CP437 console fonts lack: they show up as boxes. Whole cells only here.
"""

from __future__ import annotations

from typing import ClassVar

from textual.scrollbar import ScrollBar, ScrollBarRender


class ConsoleScrollBarRender(ScrollBarRender):
    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


def use_console_scrollbars() -> None:
    ScrollBar.renderer = ConsoleScrollBarRender
