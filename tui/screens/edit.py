"""Edit the running configuration (the whitelist has its own screen)."""

from __future__ import annotations

from typing import ClassVar

from .. import form
from .form import FormScreen


class EditScreen(FormScreen):
    FIELDS: ClassVar[tuple[str, ...]] = form.EDIT_FIELDS
    TITLE_TEXT = "Edit configuration"
    INTRO = "Changes are checked as you type. F2 shows what will change before anything is applied."
