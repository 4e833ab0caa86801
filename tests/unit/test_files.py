"""Atomic file writes: staged beside the target, synced, then renamed."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.files import atomic_write, remove_staged, stage_file


def test_a_staged_file_leaves_the_target_alone_until_it_is_put_in_place(tmp_path: Path) -> None:
    target = tmp_path / "mxknock.yaml"
    target.write_text("old\n")
    staged = stage_file(target, "new\n", mode=0o640)
    assert target.read_text() == "old\n"
    assert staged.parent == tmp_path and staged.read_text() == "new\n"
    assert staged.stat().st_mode & 0o777 == 0o640
    staged.replace(target)
    assert target.read_text() == "new\n"


def test_atomic_write_replaces_whole_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_no_staged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "mxknock.yaml", "x")
    assert list(tmp_path.iterdir()) == []


def test_staged_files_left_by_a_stop_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "mxknock.yaml"
    staged = stage_file(target, "pending change")
    other = tmp_path / ".other-file"
    other.write_text("not ours")
    assert remove_staged(target) == [staged]
    assert not staged.exists() and other.exists()
    assert remove_staged(tmp_path / "missing" / "mxknock.yaml") == []
