"""Writing files so that a crash, a power cut or a full disk leaves the old file or the new
one, never half of one: write a temporary file beside it, sync it, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def stage_file(path: Path, text: str | Iterable[str], mode: int = 0o644) -> Path:
    """Write `text` (or its pieces, for a big file built as it is written) to a synced
    temporary file beside `path` and return it: what a full or broken disk can refuse, it
    refuses here. `os.replace(staged, path)` then puts it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_staging_prefix(path))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.writelines([text] if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, text: str | Iterable[str], mode: int = 0o644) -> None:
    staged = stage_file(path, text, mode)
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def remove_staged(path: Path) -> list[Path]:
    """Staged files of `path` that were never put in place (the writer stopped before)."""
    found = sorted(path.parent.glob(f"{_staging_prefix(path)}*")) if path.parent.is_dir() else []
    for staged in found:
        staged.unlink(missing_ok=True)
    return found


def _staging_prefix(path: Path) -> str:
    return f".{path.name}-"
