"""ipset_bulk's hand-packed netlink messages, checked against pyroute2's own ipset message
class (no root needed): what we encode, pyroute2 decodes the same way; what pyroute2
encodes as the kernel's LIST reply, we decode the same way."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_IPSET
from pyroute2.netlink.nfnetlink.ipset import IPSET_CMD_ADD, IPSET_CMD_LIST, ipset_msg

from appliance import ipset_bulk


def decoded(raw: bytes) -> ipset_msg:
    msg = ipset_msg(raw)
    msg.decode()
    return msg


def entries_of(msg: ipset_msg) -> list[dict[str, object]]:
    out = []
    for data in msg.get_attr("IPSET_ATTR_ADT").get_attrs("IPSET_ATTR_DATA"):
        ip = data.get_attr("IPSET_ATTR_IP_FROM")
        out.append(
            {
                "address": ip.get_attr("IPSET_ATTR_IPADDR_IPV4") or ip.get_attr("IPSET_ATTR_IPADDR_IPV6"),
                "cidr": data.get_attr("IPSET_ATTR_CIDR"),
                "timeout": data.get_attr("IPSET_ATTR_TIMEOUT"),
            }
        )
    return out


def test_add_message_with_timeouts_decodes_with_pyroute2() -> None:
    raw = ipset_bulk.add_message(
        "mxknock-trust4", socket.AF_INET, [("192.0.2.7", 3600), ("198.51.100.0/24", None), ("203.0.113.9", 0)], 42
    )
    msg = decoded(raw)
    assert msg["header"]["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_ADD
    assert msg["header"]["sequence_number"] == 42
    assert msg["header"]["length"] == len(raw)
    assert msg["header"]["flags"] == ipset_bulk.NLM_F_REQUEST | ipset_bulk.NLM_F_ACK  # no EXCL: -exist
    assert msg["nfgen_family"] == socket.AF_INET
    assert msg.get_attr("IPSET_ATTR_PROTOCOL") == ipset_bulk.IPSET_PROTOCOL
    assert msg.get_attr("IPSET_ATTR_SETNAME") == "mxknock-trust4"
    assert entries_of(msg) == [
        {"address": "192.0.2.7", "cidr": 32, "timeout": 3600},
        {"address": "198.51.100.0", "cidr": 24, "timeout": None},
        {"address": "203.0.113.9", "cidr": 32, "timeout": 0},
    ]


def test_ipv6_add_message_decodes_with_pyroute2() -> None:
    timeout = 2147483  # the largest timeout ipset keeps
    raw = ipset_bulk.add_message("mxknock-trust6", socket.AF_INET6, [("2001:db8::7", timeout), "2001:db8:1::/64"], 7)
    assert entries_of(decoded(raw)) == [
        {"address": "2001:db8::7", "cidr": 128, "timeout": timeout},
        {"address": "2001:db8:1::", "cidr": 64, "timeout": None},
    ]


def test_a_full_chunk_fits_the_16_bit_attribute_length() -> None:
    chunk = [(f"2001:db8::{i:x}", 2147483) for i in range(ipset_bulk.CHUNK)]
    raw = ipset_bulk.add_message("mxknock-trust6", socket.AF_INET6, chunk, 1)
    assert len(entries_of(decoded(raw))) == ipset_bulk.CHUNK
    assert len(raw) < 65536


def test_list_message_decodes_with_pyroute2() -> None:
    msg = decoded(ipset_bulk.list_message("mxknock-trust4", 9))
    assert msg["header"]["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST
    assert msg["header"]["flags"] & ipset_bulk.NLM_F_DUMP == ipset_bulk.NLM_F_DUMP
    assert msg.get_attr("IPSET_ATTR_SETNAME") == "mxknock-trust4"


def list_reply(family: int, members: list[tuple[str, int | None, int | None]]) -> bytes:
    """A LIST reply as the kernel sends it, encoded by pyroute2."""
    address_attr = "IPSET_ATTR_IPADDR_IPV4" if family == socket.AF_INET else "IPSET_ATTR_IPADDR_IPV6"
    data = []
    for address, cidr, timeout in members:
        attrs: list[list[object]] = [["IPSET_ATTR_IP_FROM", {"attrs": [[address_attr, address]]}]]
        if cidr is not None:
            attrs.append(["IPSET_ATTR_CIDR", cidr])
        if timeout is not None:
            attrs.append(["IPSET_ATTR_TIMEOUT", timeout])
        data.append(["IPSET_ATTR_DATA", {"attrs": attrs}])
    msg = ipset_msg()
    msg["header"]["type"] = (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_ADD  # ADD: pyroute2 encodes plain ADT data
    msg["nfgen_family"] = family
    msg["attrs"] = [["IPSET_ATTR_SETNAME", "x"], ["IPSET_ATTR_ADT", {"attrs": data}]]
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


def test_dump_parser_reads_what_pyroute2_encodes() -> None:
    found: dict[str, int | None] = {}
    v4 = list_reply(socket.AF_INET, [("192.0.2.7", None, 3599), ("198.51.100.0", 24, None)])
    ipset_bulk._parse_list(v4, 20, len(v4), found)
    v6 = list_reply(socket.AF_INET6, [("2001:db8::7", None, 12), ("2001:db8:1::", 64, 5)])
    ipset_bulk._parse_list(v6, 20, len(v6), found)
    assert found == {
        "192.0.2.7/32": 3599,  # hash:ip entries carry no CIDR: single addresses
        "198.51.100.0/24": None,
        "2001:db8::7/128": 12,
        "2001:db8:1::/64": 5,
    }


def test_busy_keeps_its_code_for_retries() -> None:
    err = ipset_bulk._error(ipset_bulk.IPSET_ERR_BUSY, "adding to ipset x")
    assert err.errno == ipset_bulk.IPSET_ERR_BUSY and "busy" in str(err)
    assert ipset_bulk._error(errno.ENOENT, "x").errno == errno.ENOENT
    assert ipset_bulk._error(4352, "x").errno == errno.EINVAL


@pytest.mark.parametrize("bad", [b"", struct.pack("=HH", 2, 1)])
def test_attribute_walk_stops_on_short_or_bad_lengths(bad: bytes) -> None:
    assert ipset_bulk._attrs(bad, 0, len(bad)) == []


# ---- ipsets.retry_busy: someone's `ipset list` makes swap/destroy fail with "set busy" ----


def test_busy_steps_are_retried_until_they_pass() -> None:
    from pyroute2.ipset import _IPSetError

    from appliance import ipsets

    failures = [_IPSetError(errno.EBUSY, cmd=6), ipset_bulk.IPSetBulkError(ipset_bulk.IPSET_ERR_BUSY, "busy")]

    def step() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert ipsets.retry_busy(step, "swap x") == "done"
    assert not failures


def test_other_errors_are_not_retried_and_busy_gives_up_after_the_budget() -> None:
    from pyroute2.ipset import _IPSetError

    from appliance import ipsets

    calls = []

    def missing() -> None:
        calls.append(1)
        raise _IPSetError(errno.ENOENT, cmd=6)

    with pytest.raises(_IPSetError):
        ipsets.retry_busy(missing, "swap x")
    assert len(calls) == 1

    def always_busy() -> None:
        raise _IPSetError(ipset_bulk.IPSET_ERR_BUSY, cmd=3)

    with pytest.raises(ipsets.SetBusyError, match="destroy x: set busy"):
        ipsets.retry_busy(always_busy, "destroy x", budget=0.05)


def adt_bounds(raw: bytes) -> tuple[int, int]:
    """Where the ADT nest's payload is in a reply built by list_reply()."""
    (_kind, start, end) = next(a for a in ipset_bulk._attrs(raw, 20, len(raw)) if a[0] == ipset_bulk.ATTR_ADT)
    return start, end


@pytest.mark.parametrize(
    ("family", "members", "expected"),
    [
        (
            socket.AF_INET,
            [("192.0.2.7", None, 3599), ("198.51.100.9", None, 0)],
            {"192.0.2.7/32": 3599, "198.51.100.9/32": 0},
        ),
        (
            socket.AF_INET6,
            [("2001:db8::7", None, 12), ("2001:db8::8", None, 2147483)],
            {"2001:db8::7/128": 12, "2001:db8::8/128": 2147483},
        ),
        (
            socket.AF_INET,
            [("192.0.2.0", 24, None), ("198.51.100.0", 25, None)],
            {"192.0.2.0/24": None, "198.51.100.0/25": None},
        ),
        (socket.AF_INET6, [("2001:db8:1::", 64, None)], {"2001:db8:1::/64": None}),
    ],
)
def test_uniform_entries_take_the_fast_path_with_the_same_result(
    family: int, members: list[tuple[str, int | None, int | None]], expected: dict[str, int | None]
) -> None:
    raw = list_reply(family, members)
    fast: dict[str, int | None] = {}
    assert ipset_bulk._parse_uniform(raw, *adt_bounds(raw), fast) is True
    assert fast == expected
    slow: dict[str, int | None] = {}
    ipset_bulk._parse_list(raw, 20, len(raw), slow)
    assert slow == expected


def test_mixed_entries_fall_back_to_the_walk() -> None:
    # Same length, different attributes (a timeout here, a CIDR there): the header check sees it.
    raw = list_reply(socket.AF_INET, [("192.0.2.7", None, 3599), ("198.51.100.0", 24, None)])
    found: dict[str, int | None] = {}
    assert ipset_bulk._parse_uniform(raw, *adt_bounds(raw), found) is False
    assert found == {}
