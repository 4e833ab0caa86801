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
