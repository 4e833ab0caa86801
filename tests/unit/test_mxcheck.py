"""mxcheck.assess: which MX record sets lose mail under Unlisting."""

from __future__ import annotations

import ipaddress

import pytest

from appliance import config
from appliance.mxcheck import ERROR, OK, WARNING, MxRecord, assess

CFG = config.default()  # mx1 192.0.2.10 / 2001:db8::10, mx2 192.0.2.20 / 2001:db8::20


def mx(pref: int, host: str, *addresses: str) -> MxRecord:
    return MxRecord(pref, host, tuple(ipaddress.ip_address(a) for a in addresses))


def levels(records: list[MxRecord]) -> list[str]:
    return [f.level for f in assess("example.test", CFG, records)]


def messages(records: list[MxRecord]) -> str:
    return " | ".join(f.message for f in assess("example.test", CFG, records))


def test_correct_dual_stack_pair_is_ok() -> None:
    records = [mx(10, "mx1", "192.0.2.10", "2001:db8::10"), mx(20, "mx2", "192.0.2.20", "2001:db8::20")]
    assert levels(records) == [OK]


def test_no_mx_records_is_an_error() -> None:
    assert levels([]) == [ERROR]


def test_mx2_as_most_preferred_is_an_error() -> None:
    records = [mx(10, "mx2", "192.0.2.20", "2001:db8::20"), mx(20, "mx1", "192.0.2.10", "2001:db8::10")]
    text = messages(records)
    assert "most preferred" in text and "refused" in text
    assert ERROR in levels(records)


def test_equal_preference_for_mx1_and_mx2_is_an_error() -> None:
    records = [mx(10, "mx1", "192.0.2.10", "2001:db8::10"), mx(10, "mx2", "192.0.2.20", "2001:db8::20")]
    assert ERROR in levels(records)


def test_mx2_missing_is_an_error() -> None:
    records = [mx(10, "mx1", "192.0.2.10", "2001:db8::10")]
    assert "never gets in" in messages(records)


@pytest.mark.parametrize(
    ("mx1_addresses", "mx2_addresses", "expected"),
    [
        (("192.0.2.10",), ("192.0.2.20", "2001:db8::20"), "IPv6 senders reach mx2 without a knock"),
        (("192.0.2.10", "2001:db8::10"), ("192.0.2.20",), "IPv6 senders knock and find no open door"),
    ],
)
def test_family_covered_by_one_mx_only_is_an_error(mx1_addresses, mx2_addresses, expected) -> None:
    records = [mx(10, "mx1", *mx1_addresses), mx(20, "mx2", *mx2_addresses)]
    assert expected in messages(records)
    assert ERROR in levels(records)


def test_foreign_backup_mx_is_a_warning_only() -> None:
    records = [
        mx(10, "mx1", "192.0.2.10", "2001:db8::10"),
        mx(20, "mx2", "192.0.2.20", "2001:db8::20"),
        mx(30, "backup.example.net", "203.0.113.9"),
    ]
    assert levels(records) == [WARNING]
    assert "203.0.113.9" in messages(records)
