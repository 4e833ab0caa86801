"""Colours for a Linux VGA console and a serial line: ANSI colours only, and only the
8 that a Linux console can show as backgrounds."""

from __future__ import annotations

from textual.theme import BUILTIN_THEMES, Theme

_base = BUILTIN_THEMES["ansi-dark"]

CONSOLE_THEME = Theme(
    name="mxknock-console",
    ansi=True,
    dark=True,
    primary="ansi_blue",
    secondary="ansi_cyan",
    warning="ansi_yellow",
    error="ansi_red",
    success="ansi_green",
    accent="ansi_cyan",
    foreground="ansi_default",
    background="ansi_default",
    surface="ansi_default",
    panel="ansi_default",
    boost="ansi_default",
    variables={
        **_base.variables,
        "input-selection-background": "ansi_cyan",
        "screen-selection-background": "ansi_cyan",
        "footer-background": "ansi_blue",
        "footer-foreground": "ansi_bright_white",
        "footer-item-background": "ansi_blue",
        "footer-key-foreground": "ansi_bright_yellow",
        "footer-key-background": "ansi_blue",
        "footer-description-foreground": "ansi_bright_white",
        "footer-description-background": "ansi_blue",
        "block-cursor-background": "ansi_cyan",
        "block-cursor-foreground": "ansi_black",
        "block-cursor-blurred-background": "ansi_blue",
        "block-cursor-blurred-foreground": "ansi_white",
    },
)
