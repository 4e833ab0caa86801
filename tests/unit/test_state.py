"""state.py's pure parts: the TrustBook's expiry arithmetic and the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import state
from appliance.compiler import IPSET_MAX_TIMEOUT

DAY = 86400
LIFETIME = 36 * DAY  # longer than an ipset timeout can hold
NOW = 1_800_000_000.0


def test_entry_refreshed_by_the_kernel_expires_a_lifetime_after_the_refresh() -> None:
    book = state.TrustBook()
    # SET --exist just re-added it with the full kernel timeout, 10 s ago.
    book.observe({"192.0.2.7/32": IPSET_MAX_TIMEOUT - 10}, LIFETIME, NOW)
    assert book.expires["192.0.2.7/32"] == pytest.approx(NOW - 10 + LIFETIME)


def test_entry_we_wrote_keeps_its_book_expiry_until_the_kernel_refreshes_it() -> None:
    book = state.TrustBook()
    book.record_write("192.0.2.7/32", NOW + 30 * DAY, NOW + 24 * DAY)
    book.observe({"192.0.2.7/32": 24 * DAY}, LIFETIME, NOW)
    assert book.expires["192.0.2.7/32"] == NOW + 30 * DAY  # not misread as a fresh refresh
    # A connection refreshes it: the kernel now shows the full timeout again.
    later = NOW + DAY
    book.observe({"192.0.2.7/32": IPSET_MAX_TIMEOUT}, LIFETIME, later)
    assert book.expires["192.0.2.7/32"] == pytest.approx(later + LIFETIME)


def test_entries_the_kernel_dropped_leave_the_book() -> None:
    book = state.TrustBook()
    book.record_write("192.0.2.7/32", NOW + DAY, NOW + DAY)
    book.observe({}, LIFETIME, NOW)
    assert book.expires == {} and book.written == {}


def test_due_re_adds_only_entries_about_to_lapse_with_lifetime_left() -> None:
    book = state.TrustBook()
    book.expires = {"192.0.2.1/32": NOW + 10 * DAY, "192.0.2.2/32": NOW + 60, "192.0.2.3/32": NOW + 10 * DAY}
    kernel = {"192.0.2.1/32": 60, "192.0.2.2/32": 60, "192.0.2.3/32": 5 * DAY}
    due = book.due(kernel, LIFETIME, NOW, margin=180)
    # .1 lapses in 60 s but has 10 days left; .2 really ends; .3 is not close to lapsing.
    assert due == [("192.0.2.1/32", 10 * DAY)]


def test_due_caps_the_timeout_at_what_ipset_can_hold() -> None:
    book = state.TrustBook()
    book.expires = {"192.0.2.1/32": NOW + 100 * DAY}
    assert book.due({"192.0.2.1/32": 10}, 366 * DAY, NOW, margin=180) == [("192.0.2.1/32", IPSET_MAX_TIMEOUT)]


def test_short_lifetimes_need_no_extension() -> None:
    book = state.TrustBook()
    book.observe({"192.0.2.1/32": 3000}, 3600, NOW)
    assert book.due({"192.0.2.1/32": 100}, 3600, NOW + 2900, margin=180) == []


def test_snapshot_round_trips_through_the_file(tmp_path: Path) -> None:
    snap = state.Snapshot(
        saved_at=NOW,
        knocks={4: [("192.0.2.100", 12.5)], 6: [("2001:db8::100", 1.0)]},
        trusted={4: [("192.0.2.7", NOW + DAY)], 6: []},
    )
    path = tmp_path / "state.json"
    state.write(path, snap)
    assert state.read(path) == snap
    assert not list(tmp_path.glob(".state-*"))  # no temporary file left behind


def test_missing_file_is_no_state(tmp_path: Path) -> None:
    assert state.read(tmp_path / "state.json") is None


@pytest.mark.parametrize(
    "text",
    [
        "garbage{",
        '{"version": 1, "saved_at": 1, "knocks": {"4": [{"address": "192.0.2.1"',  # truncated
        json.dumps({"version": 99, "saved_at": 1, "knocks": {}, "trusted": {}}),
        json.dumps({"version": 1, "saved_at": "x", "knocks": {}, "trusted": {}}),
        json.dumps({"version": 1, "saved_at": 1, "knocks": {"4": [{"age": 1}]}, "trusted": {}}),
        json.dumps([1, 2, 3]),
    ],
)
def test_corrupt_files_raise_state_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(state.StateError):
        state.read(path)


# ---- issue 10, item 10: which saved knocks go back --------------------------------------

WINDOW = 600


def test_knocks_restore_into_an_empty_list_oldest_first_only_inside_the_window() -> None:
    saved = [("192.0.2.1", 10.0), ("192.0.2.2", 500.0), ("192.0.2.3", 200.0), ("192.0.2.4", 590.0)]
    # 20 s since the save: .4 (590 + 20) has left its window, the others have not.
    write, expired = state.knocks_to_restore(saved, set(), capacity=100, window=WINDOW, elapsed=20.0)
    assert write == ["192.0.2.2", "192.0.2.3", "192.0.2.1"]  # the newest is written last: newest
    assert expired == 1


def test_knocks_restore_never_more_than_the_list_holds_and_the_newest_win() -> None:
    saved = [(f"192.0.2.{i}", float(i)) for i in range(1, 11)]  # .1 is the newest
    write, expired = state.knocks_to_restore(saved, set(), capacity=3, window=WINDOW, elapsed=0.0)
    assert write == ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
    assert expired == 0


def test_a_list_the_kernel_kept_is_the_truth_after_a_daemon_restart() -> None:
    # The kernel kept its list (it holds entries): a saved knock it no longer holds was evicted
    # since the save; written back it would be stamped "now" and push out a live knock.
    saved = [("192.0.2.1", 10.0), ("192.0.2.2", 20.0)]
    write, expired = state.knocks_to_restore(saved, {"192.0.2.1", "198.51.100.9"}, 100, WINDOW, 5.0)
    assert write == [] and expired == 0


def test_knocks_restore_with_no_room_writes_nothing() -> None:
    assert state.knocks_to_restore([("192.0.2.1", 1.0)], set(), 0, WINDOW, 0.0) == ([], 0)


# ---- issue 10, item 14: the state warning clears; failed saves warn ------------------------


def _snapshot() -> state.Snapshot:
    return state.Snapshot(saved_at=NOW, knocks={4: []}, trusted={4: [("192.0.2.7", NOW + DAY)]})


def test_a_skipped_state_warning_clears_on_the_next_successful_save(tmp_path: Path) -> None:
    (tmp_path / state.FILE_NAME).write_text("garbage{")
    keeper = state.StateKeeper(tmp_path)
    keeper.restore_problem = "saved state skipped: garbage"
    assert keeper.last_problem == "saved state skipped: garbage"
    keeper._write(_snapshot())
    assert keeper.last_problem is None
    assert state.read(tmp_path / state.FILE_NAME) == _snapshot()


def test_a_failed_save_warns_until_a_save_succeeds(tmp_path: Path) -> None:
    keeper = state.StateKeeper(tmp_path / "state")
    (tmp_path / "state").write_text("a file where the directory should be")  # writes fail (ENOTDIR / EEXIST)
    with pytest.raises(OSError):
        keeper._write(_snapshot())
    assert keeper.last_problem is not None and "state not saved" in keeper.last_problem
    (tmp_path / "state").unlink()
    keeper._write(_snapshot())
    assert keeper.last_problem is None


def test_scoped_and_odd_addresses_in_the_file_are_refused() -> None:
    def file_with(address: object, family: int) -> dict:
        entry = {"address": address, "expires_at": NOW + DAY}
        return {"version": state.VERSION, "saved_at": NOW, "knocks": {}, "trusted": {str(family): [entry]}}

    for bad in ("2001:db8::1%eth0", "192.0.2.1/32", "192.0.2.300", 17):
        with pytest.raises(ValueError):  # StateError is one
            state.Snapshot.from_json(file_with(bad, 6 if ":" in str(bad) else 4))
    assert state.Snapshot.from_json(file_with("2001:DB8:0:0::7", 6)).trusted[6][0][0] == "2001:db8::7"


def test_the_file_is_the_json_of_the_snapshot_written_in_pieces(tmp_path: Path) -> None:
    trusted = {4: [(f"192.0.2.{i % 250}", NOW + i) for i in range(state.ENCODE_CHUNK + 7)], 6: []}
    snap = state.Snapshot(saved_at=NOW, knocks={4: [("192.0.2.1", 1.5)]}, trusted=trusted)
    state.write(tmp_path / "state.json", snap)
    assert json.loads((tmp_path / "state.json").read_text()) == json.loads(json.dumps(snap.to_json()))
    empty = state.Snapshot(saved_at=NOW)
    state.write(tmp_path / "empty.json", empty)
    assert state.read(tmp_path / "empty.json") == empty
