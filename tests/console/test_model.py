"""The console's pure parts: the form model (judged by appliance.config), rates,
formatting, diffs and the management form (the interface lister: tests/unit/test_interfaces.py). No Textual needed."""

from __future__ import annotations

import pytest

from appliance import config as cfg
from tui import diff, form
from tui import format as fmt
from tui import management_form as mf
from tui.rates import RateTracker

BASE = cfg.default().to_dict()
GOOD = form.texts_from(BASE)


def errors_for(**texts: str) -> dict[str, list[str]]:
    return form.judge(BASE, {**GOOD, **texts}, form.SETUP_FIELDS + form.EDIT_FIELDS).errors


def test_texts_round_trip_to_the_same_config():
    verdict = form.judge(BASE, GOOD, form.EDIT_FIELDS)
    assert verdict.valid
    assert verdict.config.to_dict() == cfg.default().to_dict()


def test_items_split_on_commas_and_spaces():
    assert form.split(" 192.0.2.10,2001:db8::10  ,, ") == ["192.0.2.10", "2001:db8::10"]
    assert form.split("") == []


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("mx1", "192.0.2.300", "not an IP address: '192.0.2.300'"),
        ("mx1", "", "missing: give the mail server's address"),
        ("mx1", "127.0.0.1, 2001:db8::10", "cannot be a mail server's address"),
        ("mx2", "192.0.2.10, 2001:db8::20", "is also mx1"),
        ("mx2", "192.0.2.20", "mx1 has an IPv6 address but mx2 has none"),
        ("window", "0", "must be from 1 to 86400, not 0"),
        ("window", "four", "must be a whole number from 1 to 86400, not 'four'"),
        ("knock_ports", "110, 25", "25 is the SMTP port itself"),
        ("knock_ports", "110 110", "110 is listed twice"),
        ("knock_ports", "pop3", "must be a whole number from 1 to 65535, not 'pop3'"),
        ("selective", "198.51.100.1/24", "has host bits set; did you mean 198.51.100.0/24?"),
        ("outside", "", "not a valid interface name: ''"),
    ],
)
def test_each_field_gets_the_engines_own_message(field, text, expected):
    errors = errors_for(**{field: text})
    assert any(expected in message for message in errors.get(field, [])), errors


def test_mode_selective_needs_networks_at_the_selective_field():
    assert "needs at least one network" in errors_for(mode="selective")["selective"][0]
    assert "selective" not in errors_for(mode="selective", selective="203.0.113.0/24")


def test_the_same_port_twice_is_shown_under_the_second_pick():
    assert "three different interfaces" in errors_for(outside="eth1", inside="eth1")["inside"][0]


def test_api_error_fields_map_to_form_fields():
    fields = form.EDIT_FIELDS
    assert form.field_of("mx1[0]", fields) == "mx1"
    assert form.field_of("knock_ports[3]", fields) == "knock_ports"
    assert form.field_of("bridge.outside", form.SETUP_FIELDS) == "outside"
    assert form.field_of("bridge.outside", fields) == form.GENERAL  # edit has no port fields
    assert form.field_of("(file)", fields) == form.GENERAL
    grouped = form.group_errors([{"field": "trust.lifetime", "message": "too long"}], fields)
    assert grouped == {form.GENERAL: ["trust.lifetime: too long"]}


def test_candidate_keeps_what_the_form_does_not_edit():
    base = {**BASE, "knock_prefix": {"ipv4": 24, "ipv6": 64}, "whitelist": ["198.51.100.7"]}
    data = form.candidate(base, {**GOOD, "window": "600"})
    assert data["window"] == 600
    assert data["knock_prefix"] == {"ipv4": 24, "ipv6": 64}
    assert data["whitelist"] == ["198.51.100.7"]
    assert cfg.parse_yaml(form.to_yaml(data)).window == 600


def test_setup_starts_from_the_default_without_its_lab_addresses():
    base = form.setup_base()
    assert base["mx1"] is None and base["mx2"] is None
    assert base["mode"] == "unlisting" and base["window"] == cfg.default().window


def test_whitelist_entries_are_normalized_or_explained():
    assert form.parse_entries("198.51.100.7, 2001:DB8::/32") == (["198.51.100.7/32", "2001:db8::/32"], [])
    entries, errors = form.parse_entries("198.51.100.7 203.0.113.9/24 nonsense")
    assert entries == ["198.51.100.7/32"]
    assert errors == [
        "203.0.113.9/24 has host bits set; did you mean 203.0.113.0/24?",
        "not an address or network: 'nonsense'",
    ]


def test_a_proven_sender_is_one_address_of_a_family_the_mail_server_has():
    assert form.families(BASE) == (4, 6)
    assert form.families({"mx1": ["192.0.2.10"]}) == (4,)
    assert form.parse_trusted("  ") == (None, [])
    assert form.parse_trusted("192.0.2.25/32") == ("192.0.2.25", [])
    assert form.parse_trusted("2001:0DB8::0025") == ("2001:db8::25", [])
    assert form.parse_trusted("192.0.2.0/24") == (None, ["192.0.2.0/24: proven senders are single addresses"])
    assert form.parse_trusted("192.0.2.1, 192.0.2.2") == (None, ["one address at a time"])
    assert form.parse_trusted("mx.example") == (None, ["not an address or network: 'mx.example'"])
    assert form.parse_trusted("2001:db8::25", (4,)) == (None, ["the mail server has no IPv6 address"])


def test_rates_per_minute_over_the_last_minute():
    rates = RateTracker()
    assert rates.per_minute() == {}
    rates.add(0, {"knocks": 100})
    assert rates.per_minute() == {}
    rates.add(30, {"knocks": 110})
    assert rates.per_minute() == {"knocks": 20.0}
    for t in range(32, 200, 2):
        rates.add(t, {"knocks": 110 + t})
    assert rates.per_minute()["knocks"] == pytest.approx(60.0)
    assert rates.samples[-1][0] - rates.samples[0][0] <= 62  # history stays about a minute


def test_counters_that_go_down_start_the_rate_again():
    rates = RateTracker()
    rates.add(0, {"knocks": 500})
    rates.add(10, {"knocks": 3})  # rules re-applied: counters start from zero
    assert rates.per_minute() == {}
    rates.add(20, {"knocks": 13})
    assert rates.per_minute() == {"knocks": 60.0}


def test_formatting():
    assert [fmt.age(s) for s in (None, 5, 119.9, 3725, 7300)] == ["-", "5s", "119s", "62m05s", "2h01m"]
    assert fmt.bar(50, 100, 10) == "█████░░░░░"
    assert fmt.bar(200, 100, 4) == "████"
    assert fmt.bar(1, 0, 3) == "░░░"
    assert [fmt.rate(r) for r in (None, 0.25, 42.4)] == ["-", "0.2", "42"]
    assert fmt.port_state({"present": True, "up": True, "carrier": False, "enslaved": False}) == (
        "up, no link, NOT in bridge"
    )


def test_host_networks_show_as_bare_addresses():
    assert [fmt.network(e) for e in ("192.0.2.1/32", "2001:db8::1/128", "2001:db8::/32", "198.51.100.0/24")] == [
        "192.0.2.1",
        "2001:db8::1",
        "2001:db8::/32",
        "198.51.100.0/24",
    ]


def test_unified_diff_of_rules():
    lines = diff.unified("a\nb\n", "a\nc\n", "running", "new")
    assert lines[:2] == ["--- running", "+++ new"]
    assert "-b" in lines and "+c" in lines
    assert diff.unified("same\n", "same\n", "x", "y") == []


# ---- the management form ----------------------------------------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILRbC91NRp/0UZbI3uknIplLexQS9enUyC9nJjDcDR+i admin@laptop"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIy2jTvRSnNDATPA4eWnT7omzHeHbEg1OR7ZhlY70qUF backup@host"
MANAGED = {
    **BASE,
    "management": {
        "address": ["192.0.2.5/24", "2001:db8::5/64"],
        "gateway": ["192.0.2.1"],
        "ssh_keys": [KEY, KEY2],
        "allow": ["198.51.100.0/24", "2001:db8:aa::/48"],
        "metrics": True,
    },
}
ON = {"management": "on", "address": "192.0.2.5/24", "gateway": "", "allow": "", "metrics": "yes", "ssh_keys": ""}


def management_errors(**texts: str) -> dict[str, list[str]]:
    return mf.judge(BASE, {**ON, **texts}).errors


def test_management_texts_round_trip_to_the_same_config():
    texts = mf.texts_from(MANAGED)
    assert texts == {
        "management": "on",
        "address": "192.0.2.5/24, 2001:db8::5/64",
        "gateway": "192.0.2.1",
        "allow": "198.51.100.0/24, 2001:db8:aa::/48",
        "metrics": "yes",
        "ssh_keys": f"{KEY}\n{KEY2}",
    }
    verdict = mf.judge(MANAGED, texts)
    assert verdict.valid and verdict.config.to_dict() == cfg.from_dict(MANAGED).to_dict()


def test_management_absent_is_off_and_off_removes_the_section():
    assert mf.texts_from(BASE)["management"] == "off"
    data = mf.candidate(MANAGED, {**mf.texts_from(MANAGED), "management": "off"})
    assert "management" not in data
    assert data["mx1"] == MANAGED["mx1"]  # the rest of the config stays
    assert mf.judge(BASE, mf.texts_from(BASE)).valid
    assert "management" not in cfg.parse_yaml(form.to_yaml(data)).to_dict()


def test_management_on_builds_the_section_from_the_texts():
    texts = {
        **ON,
        "address": "192.0.2.5/24,2001:db8::5/64",
        "gateway": "192.0.2.1 ",
        "allow": "198.51.100.0/24  2001:db8:aa::/48",
        "metrics": "no",
        "ssh_keys": f"\n  {KEY}  \n\n{KEY2}\n",
    }
    assert mf.candidate(BASE, texts)["management"] == {
        "address": ["192.0.2.5/24", "2001:db8::5/64"],
        "gateway": ["192.0.2.1"],
        "ssh_keys": [KEY, KEY2],
        "allow": ["198.51.100.0/24", "2001:db8:aa::/48"],
        "metrics": False,
    }
    config = mf.judge(BASE, texts).config
    assert config is not None and config.management.metrics is False
    assert [str(a) for a in config.management.addresses] == ["192.0.2.5/24", "2001:db8::5/64"]


def test_ssh_keys_are_one_per_line_numbered_as_the_text_area_numbers_them():
    assert mf.key_lines("") == []
    assert mf.key_lines(f"\n{KEY}\r\n  \n{KEY2}") == [(2, KEY), (4, KEY2)]


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("address", "", "missing: give the box's own address with its prefix"),
        ("address", "192.0.2.5", "give the prefix length too, e.g. 192.0.2.5/24"),
        ("address", "192.0.2.300/24", "not an address with a prefix length: '192.0.2.300/24'"),
        ("address", "192.0.2.10/24", "is the mail server's (an MX address)"),
        ("address", "192.0.2.5/24 192.0.2.6/24", "a second IPv4 address; give one per family"),
        ("gateway", "198.51.100.1", "198.51.100.1 is not in 192.0.2.0/24"),
        ("gateway", "2001:db8::1", "an IPv6 gateway needs an IPv6 management address"),
        ("allow", "198.51.100.1/24", "has host bits set; did you mean 198.51.100.0/24?"),
        ("allow", "2001:db8::/32", "2001:db8::/32 is IPv6 but no management address is"),
    ],
)
def test_each_management_field_gets_the_engines_own_message(field, text, expected):
    errors = management_errors(**{field: text})
    assert any(expected in message for message in errors.get(field, [])), errors


def test_a_bad_key_is_named_by_its_line():
    errors = management_errors(ssh_keys=f"{KEY}\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL\n{KEY}")
    assert errors == {
        "ssh_keys": [
            "line 3: the key is not valid base64: was it cut while copying?",
            "line 4: this key is listed twice",
        ]
    }
    assert "line 1: not a public key line" in management_errors(ssh_keys="AAAA admin")["ssh_keys"][0]


def test_management_error_fields_map_to_the_management_form():
    fields = mf.FIELDS
    assert form.field_of("management.gateway[1]", fields) == "gateway"
    assert form.field_of("management.address", fields) == "address"
    assert form.field_of("management.allow[2]", fields) == "allow"
    assert form.field_of("management.metrics", fields) == "metrics"
    assert form.field_of("management", fields) == "management"  # e.g. not a mapping: the switch
    assert form.field_of("management.nonsense", fields) == form.GENERAL
    assert form.field_of("mx1[0]", fields) == form.GENERAL
    # Elsewhere the management section is nobody's field: shown with its name.
    assert form.field_of("management.address[0]", form.EDIT_FIELDS) == form.GENERAL
    grouped = form.group_errors([{"field": "management.gateway[0]", "message": "no route"}], form.EDIT_FIELDS)
    assert grouped == {form.GENERAL: ["management.gateway[0]: no route"]}
    texts = {**ON, "ssh_keys": f"\n{KEY}\n{KEY2}"}
    engine = [
        {"field": "management.ssh_keys[1]", "message": "sshd refused it"},
        {"field": "management.gateway", "message": "192.0.2.1 does not answer"},
        {"field": "window", "message": "too long"},
    ]
    assert mf.group_errors(engine, texts) == {
        "ssh_keys": ["line 3: sshd refused it"],
        "gateway": ["192.0.2.1 does not answer"],
        form.GENERAL: ["window: too long"],
    }


def test_long_ssh_keys_stay_on_one_line_in_the_yaml():
    text = form.to_yaml(MANAGED)
    assert f"  - {KEY}\n" in text and f"  - {KEY2}\n" in text
    assert cfg.parse_yaml(text).management.ssh_keys == (KEY, KEY2)


def test_the_edit_form_keeps_the_management_section():
    data = form.candidate(MANAGED, {**GOOD, "window": "600"})
    assert data["management"] == MANAGED["management"]
    assert form.judge(MANAGED, {**GOOD, "window": "600"}, form.EDIT_FIELDS).config.management is not None


def test_the_trust_cap_row_shows_only_while_the_cap_refuses_someone():
    from tui.widgets.panels import counter_rows

    quiet = {"trust_capped": {"total": 0, "ipv4": 0, "ipv6": 0}, "knocks": {"total": 5}}
    assert "trust refused by the per-prefix cap" not in [label for label, _, _ in counter_rows(quiet)]
    assert "trust refused by the per-prefix cap" not in [label for label, _, _ in counter_rows({})]
    attacked = {**quiet, "trust_capped": {"total": 8, "ipv4": 8, "ipv6": 0}}
    rows = counter_rows(attacked)
    assert ("trust refused by the per-prefix cap", attacked["trust_capped"], "trust_capped") in rows
    assert [key for _, _, key in rows][-1] == "trust_capped"  # in the status' order, last


def test_a_bug_behind_a_console_call_is_logged_with_its_traceback(caplog):
    """Issue 11's review: the console turned any bug into an on-screen message and kept no traceback."""
    from tui.workers import capture

    def buggy() -> None:
        raise KeyError("result")

    with caplog.at_level("ERROR", logger="mxknock.console"):
        result, error = capture(buggy)
    assert result is None and "unexpected error talking to mxknockd" in str(error)
    (record,) = [r for r in caplog.records if r.name == "mxknock.console"]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_console_logs_go_to_syslog_not_to_the_screen(tmp_path):
    import logging
    import socket

    from tui.app import log_to_syslog

    assert log_to_syslog(str(tmp_path / "no-syslog")) is False
    address = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(address)
        syslog.settimeout(2)
        logger = logging.getLogger("mxknock.console")
        handlers, propagate = list(logger.handlers), logger.propagate
        try:
            assert log_to_syslog(address) is True
            logger.error("drawn nowhere")
            assert b"mxknock-console: ERROR mxknock.console: drawn nowhere" in syslog.recv(4096)
            assert logger.propagate is False
        finally:
            for handler in logger.handlers[len(handlers) :]:
                handler.close()
            logger.handlers[:] = handlers
            logger.propagate = propagate
