"""Config validation: every refusal names its field, all problems are reported together."""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
from typing import Any

import pytest
import yaml

from appliance import config
from appliance.config import Config, ConfigError

BASE: dict[str, Any] = {
    "bridge": {"name": "br0", "outside": "eth0", "inside": "eth1"},
    "mode": "unlisting",
    "mx1": ["192.0.2.10", "2001:db8::10"],
    "mx2": ["192.0.2.20", "2001:db8::20"],
    "smtp_port": 25,
    "window": 4000,
    "knock_ports": [],
    "whitelist": [],
    "selective": [],
    "knock_prefix": {"ipv4": 32, "ipv6": 128},
    "trust": {"enabled": True, "lifetime": 3110400},
}


def make(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def refuse(data: Any) -> dict[str, str]:
    """The field -> message map of a refused config (fails the test if it is accepted)."""
    with pytest.raises(ConfigError) as info:
        config.from_dict(data)
    errors = info.value.errors
    assert errors, "a ConfigError must name at least one field"
    return {e.field: e.message for e in errors}


def only_error(data: Any) -> tuple[str, str]:
    errors = refuse(data)
    assert len(errors) == 1, errors
    return next(iter(errors.items()))


# ---- what is accepted ------------------------------------------------------------------


def test_embedded_default_parses():
    cfg = config.default()
    assert cfg.mode == "unlisting"
    assert cfg.mx1 == (ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10"))
    assert cfg.mx2 == (ipaddress.ip_address("192.0.2.20"), ipaddress.ip_address("2001:db8::20"))
    assert cfg.families() == (4, 6)
    assert cfg.window == 4000
    assert cfg.smtp_port == 25
    assert cfg.knock_prefix == config.KnockPrefix(ipv4=32, ipv6=128)
    assert cfg.bridge == config.Bridge("br0", "eth0", "eth1")
    assert cfg.trust == config.Trust(enabled=True, lifetime=36 * 86400)


def test_base_is_valid():
    cfg = config.from_dict(make())
    assert cfg.families() == (4, 6)
    assert cfg.mx("mx2", 6) == ipaddress.ip_address("2001:db8::20")


def test_single_string_for_mx():
    cfg = config.from_dict(make(mx1="192.0.2.10", mx2="192.0.2.20"))
    assert cfg.mx1 == (ipaddress.ip_address("192.0.2.10"),)
    assert cfg.families() == (4,)


def test_single_string_error_names_the_field_without_index():
    field, message = only_error(make(mx1="mail.example.test", mx2="192.0.2.20"))
    assert field == "mx1"
    assert "not an IP address" in message


def test_defaults_for_omitted_keys():
    cfg = config.from_dict({"mx1": "192.0.2.10", "mx2": "192.0.2.20"})
    assert cfg.mode == "unlisting"
    assert cfg.smtp_port == 25
    assert cfg.window == 4000
    assert cfg.knock_ports == ()
    assert cfg.bridge == config.Bridge()


def test_to_dict_round_trips():
    data = make(
        mode="selective",
        mx1="192.0.2.10",
        mx2="192.0.2.20",
        smtp_port=2525,
        window=600,
        knock_ports=[110, 993],
        whitelist=["203.0.113.5", "198.51.100.0/24"],
        selective=["198.51.100.128/25"],
        knock_prefix={"ipv4": 24, "ipv6": 64},
        trust={"enabled": False, "lifetime": 86400},
    )
    cfg = config.from_dict(data)
    out = cfg.to_dict()
    assert out["whitelist"] == ["203.0.113.5", "198.51.100.0/24"]  # hosts stay bare
    assert out["knock_prefix"] == {"ipv4": 24, "ipv6": 64}
    assert out["trust"] == {"enabled": False, "lifetime": 86400}
    assert config.from_dict(out) == cfg
    assert config.parse_yaml(cfg.to_yaml()) == cfg


def test_with_changes_applies_and_validates():
    cfg = config.default()
    changed = config.with_changes(cfg, mode="nolisting", whitelist=["203.0.113.0/24"])
    assert changed.mode == "nolisting"
    assert changed.whitelist == (ipaddress.ip_network("203.0.113.0/24"),)
    assert cfg.mode == "unlisting"  # the original is untouched
    with pytest.raises(ConfigError) as info:
        config.with_changes(cfg, whitelist=["203.0.113.1/24"])
    assert [e.field for e in info.value.errors] == ["whitelist[0]"]


def test_config_is_frozen():
    cfg = config.default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "nolisting"  # type: ignore[misc]


# ---- top level and bridge ---------------------------------------------------------------


def test_unknown_top_level_key():
    field, message = only_error(make(windw=10))
    assert field == "windw"
    assert "unknown key" in message
    assert "window" in message  # the known keys are listed


def test_unknown_bridge_key():
    field, message = only_error(make(bridge={"name": "br0", "outside": "eth0", "inside": "eth1", "stp": True}))
    assert field == "bridge.stp"
    assert "unknown key" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "a" * 16),
        ("name", ""),
        ("outside", "eth/0"),
        ("outside", "eth0:1"),
        ("inside", "eth 1"),
        ("inside", ".."),
        ("inside", 5),
    ],
)
def test_bad_interface_names(key: str, value: Any):
    bridge = {"name": "br0", "outside": "eth0", "inside": "eth1", key: value}
    errors = refuse(make(bridge=bridge))
    assert f"bridge.{key}" in errors
    assert "interface name" in errors[f"bridge.{key}"]


def test_fifteen_character_interface_name_is_fine():
    cfg = config.from_dict(make(bridge={"name": "b" * 15, "outside": "eth0", "inside": "eth1"}))
    assert cfg.bridge.name == "b" * 15


def test_identical_bridge_names():
    field, message = only_error(make(bridge={"name": "br0", "outside": "eth0", "inside": "eth0"}))
    assert field == "bridge"
    assert "different" in message


def test_bridge_not_a_mapping():
    field, message = only_error(make(bridge="br0"))
    assert field == "bridge"
    assert "mapping" in message


def test_bad_mode():
    field, message = only_error(make(mode="greylisting"))
    assert field == "mode"
    assert "unlisting" in message and "greylisting" in message


@pytest.mark.parametrize("mode", config.MODES)
def test_every_mode_is_accepted(mode: str):
    extra = {"selective": ["198.51.100.0/24"]} if mode == "selective" else {}
    assert config.from_dict(make(mode=mode, **extra)).mode == mode


# ---- mx1 / mx2 ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["mx1", "mx2"])
def test_mx_missing(which: str):
    data = make()
    del data[which]
    field, message = only_error(data)
    assert field == which
    assert "missing" in message


def test_both_mx_missing_are_both_reported():
    errors = refuse({})
    assert set(errors) == {"mx1", "mx2"}


@pytest.mark.parametrize("value", [[], {"a": 1}, 42])
def test_mx_wrong_shape(value: Any):
    errors = refuse(make(mx1=value))
    assert "mx1" in errors
    assert "address" in errors["mx1"]


def test_mx_not_an_ip():
    field, message = only_error(make(mx1="192.0.2.10", mx2=["192.0.2.256"]))
    assert field == "mx2[0]"
    assert "not an IP address" in message


def test_mx_not_an_ip_also_reports_the_family_it_leaves_uncovered():
    errors = refuse(make(mx2=["192.0.2.20", "2001:db8::zz"]))
    assert "not an IP address" in errors["mx2[1]"]
    assert "IPv6" in errors["mx2"]


@pytest.mark.parametrize("address", ["224.0.0.5", "127.0.0.1", "0.0.0.0"])
def test_mx_multicast_loopback_unspecified_ipv4(address: str):
    errors = refuse(make(mx1=[address, "2001:db8::10"]))
    assert "mx1[0]" in errors
    assert "cannot be a mail server" in errors["mx1[0]"]


@pytest.mark.parametrize("address", ["ff02::1", "::1", "::"])
def test_mx_multicast_loopback_unspecified_ipv6(address: str):
    errors = refuse(make(mx2=["192.0.2.20", address]))
    assert "mx2[1]" in errors
    assert "cannot be a mail server" in errors["mx2[1]"]


def test_two_addresses_of_one_family():
    errors = refuse(make(mx1=["192.0.2.10", "192.0.2.11", "2001:db8::10"]))
    assert "mx1[1]" in errors
    assert "second IPv4" in errors["mx1[1]"]


def test_two_ipv6_addresses():
    errors = refuse(make(mx2=["2001:db8::20", "2001:db8::21", "192.0.2.20"]))
    assert "second IPv6" in errors["mx2[1]"]


def test_mx1_equal_to_mx2():
    field, message = only_error(make(mx1="192.0.2.10", mx2="192.0.2.10"))
    assert field == "mx2"
    assert "also mx1" in message


def test_mx1_equal_to_mx2_in_one_family_only():
    field, message = only_error(make(mx2=["192.0.2.20", "2001:db8::10"]))
    assert field == "mx2"
    assert "2001:db8::10" in message


def test_family_in_mx1_but_not_mx2():
    field, message = only_error(make(mx1=["192.0.2.10", "2001:db8::10"], mx2=["192.0.2.20"]))
    assert field == "mx2"
    assert "IPv6" in message and "mx2 has none" in message


def test_family_in_mx2_but_not_mx1():
    field, message = only_error(make(mx1=["192.0.2.10"], mx2=["192.0.2.20", "2001:db8::20"]))
    assert field == "mx1"
    assert "IPv6" in message and "mx1 has none" in message


def test_ipv6_only_pair_is_fine():
    cfg = config.from_dict(make(mx1="2001:db8::10", mx2="2001:db8::20"))
    assert cfg.families() == (6,)


# ---- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "word"), [(0, "from 1 to 86400"), (86401, "from 1 to 86400")])
def test_window_out_of_range(value: int, word: str):
    field, message = only_error(make(window=value))
    assert field == "window"
    assert word in message


@pytest.mark.parametrize("value", ["4000", True, 4000.0, None])
def test_window_not_a_whole_number(value: Any):
    field, message = only_error(make(window=value))
    assert field == "window"
    assert "whole number" in message


@pytest.mark.parametrize("value", [1, 86400])
def test_window_bounds_are_inclusive(value: int):
    assert config.from_dict(make(window=value)).window == value


@pytest.mark.parametrize("value", [0, 65536, -25])
def test_smtp_port_out_of_range(value: int):
    field, message = only_error(make(smtp_port=value))
    assert field == "smtp_port"
    assert "65535" in message


def test_smtp_port_string():
    field, message = only_error(make(smtp_port="smtp"))
    assert field == "smtp_port"
    assert "whole number" in message


# ---- knock ports --------------------------------------------------------------------------


def test_knock_ports_not_a_list():
    field, message = only_error(make(knock_ports=993))
    assert field == "knock_ports"
    assert "list" in message


@pytest.mark.parametrize("bad", [0, 70000, "imap", True])
def test_knock_port_bad_value(bad: Any):
    field, message = only_error(make(knock_ports=[110, bad]))
    assert field == "knock_ports[1]"
    assert "from 1 to 65535" in message


def test_knock_port_equal_to_smtp_port():
    field, message = only_error(make(smtp_port=2525, knock_ports=[993, 2525]))
    assert field == "knock_ports[1]"
    assert "SMTP port" in message


def test_knock_port_25_is_fine_when_smtp_moved():
    assert config.from_dict(make(smtp_port=2525, knock_ports=[25])).knock_ports == (25,)


def test_knock_port_duplicates():
    field, message = only_error(make(knock_ports=[110, 143, 110]))
    assert field == "knock_ports[2]"
    assert "twice" in message


def test_knock_ports_more_than_fifteen():
    field, message = only_error(make(knock_ports=list(range(1000, 1016))))
    assert field == "knock_ports"
    assert "15" in message


def test_knock_ports_fifteen_is_fine():
    assert len(config.from_dict(make(knock_ports=list(range(1000, 1015)))).knock_ports) == 15


def test_knock_ports_null_means_none():
    assert config.from_dict(make(knock_ports=None)).knock_ports == ()


# ---- whitelist and selective networks -----------------------------------------------------


@pytest.mark.parametrize("kind", ["whitelist", "selective"])
def test_network_not_an_address(kind: str):
    field, message = only_error(make(**{kind: ["203.0.113.0/24", "mail.example.test"]}))
    assert field == f"{kind}[1]"
    assert "not an address or network" in message


@pytest.mark.parametrize(
    ("entry", "suggestion"),
    [("203.0.113.7/24", "203.0.113.0/24"), ("2001:db8:1::1/64", "2001:db8:1::/64")],
)
@pytest.mark.parametrize("kind", ["whitelist", "selective"])
def test_network_host_bits_set_suggests_the_network(kind: str, entry: str, suggestion: str):
    field, message = only_error(make(**{kind: [entry]}))
    assert field == f"{kind}[0]"
    assert "host bits" in message
    assert f"did you mean {suggestion}?" in message


@pytest.mark.parametrize("entry", ["0.0.0.0/0", "::/0"])
@pytest.mark.parametrize("kind", ["whitelist", "selective"])
def test_network_slash_zero(kind: str, entry: str):
    field, message = only_error(make(**{kind: ["203.0.113.0/24", entry]}))
    assert field == f"{kind}[1]"
    assert "every address" in message


@pytest.mark.parametrize("kind", ["whitelist", "selective"])
def test_network_duplicates(kind: str):
    # A bare address and its /32 are the same entry.
    field, message = only_error(make(**{kind: ["203.0.113.5", "198.51.100.0/24", "203.0.113.5/32"]}))
    assert field == f"{kind}[2]"
    assert "twice" in message


@pytest.mark.parametrize("kind", ["whitelist", "selective"])
def test_network_list_not_a_list(kind: str):
    field, message = only_error(make(**{kind: "203.0.113.0/24"}))
    assert field == kind
    assert "list" in message


def test_selective_mode_without_networks():
    field, message = only_error(make(mode="selective"))
    assert field == "selective"
    assert "at least one network" in message


def test_selective_mode_with_only_bad_networks_reports_the_entry_not_the_emptiness():
    errors = refuse(make(mode="selective", selective=["nonsense"]))
    assert set(errors) == {"selective[0]"}


def test_selective_networks_outside_selective_mode_are_kept():
    cfg = config.from_dict(make(selective=["198.51.100.0/24"]))
    assert cfg.networks("selective", 4) == (ipaddress.ip_network("198.51.100.0/24"),)
    assert cfg.networks("selective", 6) == ()


# ---- knock prefix ---------------------------------------------------------------------------


def test_knock_prefix_unknown_key():
    field, message = only_error(make(knock_prefix={"ipv4": 24, "ip6": 64}))
    assert field == "knock_prefix.ip6"
    assert "unknown key" in message


@pytest.mark.parametrize(("key", "value"), [("ipv4", 7), ("ipv4", 33), ("ipv6", 15), ("ipv6", 129)])
def test_knock_prefix_out_of_range(key: str, value: int):
    field, message = only_error(make(knock_prefix={key: value}))
    assert field == f"knock_prefix.{key}"
    assert "must be from" in message


@pytest.mark.parametrize(("key", "value"), [("ipv4", 8), ("ipv4", 32), ("ipv6", 16), ("ipv6", 128)])
def test_knock_prefix_bounds_are_inclusive(key: str, value: int):
    family = 4 if key == "ipv4" else 6
    assert config.from_dict(make(knock_prefix={key: value})).knock_prefix[family] == value


def test_knock_prefix_partial_keeps_the_other_default():
    cfg = config.from_dict(make(knock_prefix={"ipv6": 64}))
    assert cfg.knock_prefix == config.KnockPrefix(ipv4=32, ipv6=64)


def test_knock_prefix_not_a_mapping():
    field, message = only_error(make(knock_prefix=24))
    assert field == "knock_prefix"
    assert "mapping" in message


# ---- trust (proven senders) ------------------------------------------------------------------


def test_trust_defaults_when_omitted():
    data = make()
    del data["trust"]
    assert config.from_dict(data).trust == config.Trust()


def test_trust_unknown_key():
    field, message = only_error(make(trust={"enabled": True, "ttl": 60}))
    assert field == "trust.ttl"
    assert "unknown key" in message


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_trust_enabled_must_be_a_boolean(value: Any):
    field, message = only_error(make(trust={"enabled": value}))
    assert field == "trust.enabled"
    assert "true or false" in message


@pytest.mark.parametrize("value", [59, 366 * 86400 + 1, "36d", True])
def test_trust_lifetime_refused(value: Any):
    field, message = only_error(make(trust={"lifetime": value}))
    assert field == "trust.lifetime"
    assert "60" in message


@pytest.mark.parametrize("value", [60, 366 * 86400])
def test_trust_lifetime_bounds_are_inclusive(value: int):
    assert config.from_dict(make(trust={"lifetime": value})).trust.lifetime == value


def test_trust_not_a_mapping():
    field, message = only_error(make(trust=True))
    assert field == "trust"
    assert "mapping" in message


# ---- the file as a whole -------------------------------------------------------------------


def test_invalid_yaml_names_the_line():
    text = "bridge:\n  name: br0\n mode: x\n"
    with pytest.raises(ConfigError) as info:
        config.parse_yaml(text)
    (error,) = info.value.errors
    assert error.field == "(file)"
    assert "not valid YAML" in error.message
    assert "line 3" in error.message


@pytest.mark.parametrize("text", ["- 192.0.2.10\n- 192.0.2.20\n", "just a string\n", "42\n"])
def test_non_mapping_document(text: str):
    with pytest.raises(ConfigError) as info:
        config.parse_yaml(text)
    assert [(e.field, "mapping" in e.message) for e in info.value.errors] == [("(file)", True)]


def test_empty_document_reports_missing_mx():
    with pytest.raises(ConfigError) as info:
        config.parse_yaml("")
    assert {e.field for e in info.value.errors} == {"mx1", "mx2"}


def test_several_errors_are_reported_together():
    data = make(
        mode="nolistng",
        mx1=["192.0.2.10", "nonsense"],
        window=0,
        knock_ports=[25],
        whitelist=["203.0.113.7/24"],
        knock_prefix={"ipv4": 4},
        extra=1,
    )
    errors = refuse(data)
    assert set(errors) == {
        "extra",
        "mode",
        "mx1[1]",
        "mx1",  # mx2 has IPv6, mx1 (after dropping 'nonsense') has none
        "window",
        "knock_ports[0]",
        "whitelist[0]",
        "knock_prefix.ipv4",
    }


def test_config_error_str_and_json():
    with pytest.raises(ConfigError) as info:
        config.from_dict(make(window=0, smtp_port=0))
    exc = info.value
    assert exc.to_json() == [
        {"field": "smtp_port", "message": "must be from 1 to 65535, not 0"},
        {"field": "window", "message": "must be from 1 to 86400, not 0"},
    ]
    assert "smtp_port: must be from 1 to 65535" in str(exc)
    assert "; window: " in str(exc)


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "nope.yaml")
    (error,) = info.value.errors
    assert error.field == "(file)"
    assert "cannot read" in error.message


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "mxknock.yaml"
    path.write_text(yaml.safe_dump(make(mode="backup-mx")))
    assert config.load(path).mode == "backup-mx"


def test_parse_network_accepts_bare_address_and_strips():
    assert config.parse_network(" 203.0.113.5 ") == ipaddress.ip_network("203.0.113.5/32")
    assert config.parse_network("2001:db8::/32") == ipaddress.ip_network("2001:db8::/32")


def test_unquoted_all_decimal_ipv6_address_in_yaml():
    text = "mx1: [192.0.2.10, 2001:10:20:30:40:50:0:1]\nmx2: [192.0.2.20, 2001:10:20:30:40:50:0:2]\n"
    cfg: Config = config.parse_yaml(text)
    assert cfg.mx("mx1", 6) == ipaddress.ip_address("2001:10:20:30:40:50:0:1")


def test_selective_networks_must_cover_a_family_the_mail_server_has():
    errors = refuse(make(mode="selective", mx1="192.0.2.10", mx2="192.0.2.20", selective=["2001:db8:bad::/48"]))
    assert any(field.startswith("selective") for field in errors)


@pytest.mark.parametrize(("mx1", "mx2"), [("255.255.255.255", "192.0.2.20"), ("fe80::10", "2001:db8::20")])
def test_unusable_mx_addresses_are_refused(mx1: str, mx2: str):
    errors = refuse(make(mx1=mx1, mx2=mx2))
    assert "cannot be a mail server" in errors["mx1"]


def test_networks_of_a_family_the_mail_server_lacks_are_refused():
    errors = refuse(make(mx1="192.0.2.10", mx2="192.0.2.20", whitelist=["203.0.113.5", "2001:db8:1::/64"]))
    assert "no IPv6 address" in errors["whitelist[1]"]


def test_knock_list_size_is_optional_and_bounded():
    assert config.from_dict(make()).knock_list_size is None
    assert config.from_dict(make(knock_list_size=50000)).knock_list_size == 50000
    assert config.from_dict(make(knock_list_size=50000)).to_dict()["knock_list_size"] == 50000
    for bad in (99, 1_000_001, "10000", True):
        assert "knock_list_size" in refuse(make(knock_list_size=bad))


# ---- the management address ------------------------------------------------------------------

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx admin@example.test"


def managed(**management: Any) -> dict[str, Any]:
    return make(management={"address": "192.0.2.5/24", **management})


def test_no_management_by_default():
    assert config.from_dict(make()).management is None
    assert "management" not in config.from_dict(make()).to_dict()
    assert config.from_dict(make(management=None)).management is None


def test_management_accepted_and_round_trips():
    cfg = config.from_dict(
        managed(
            address=["192.0.2.5/24", "2001:db8::5/64"],
            gateway=["192.0.2.1", "fe80::1"],
            ssh_keys=[SSH_KEY],
            allow=["198.51.100.0/24", "2001:db8:ad::/48"],
            metrics=False,
        )
    )
    m = cfg.management
    assert m.families() == (4, 6)
    assert str(m.address(4)) == "192.0.2.5/24" and str(m.gateway(6)) == "fe80::1"
    assert m.ssh_keys == (SSH_KEY,) and m.metrics is False
    assert config.parse_yaml(cfg.to_yaml()) == cfg


def test_management_defaults():
    m = config.from_dict(managed()).management
    assert m.gateways == () and m.ssh_keys == () and m.allow == ()
    assert m.metrics is False  # the counters are published only when asked for


@pytest.mark.parametrize(
    ("management", "field", "words"),
    [
        ({"address": None}, "management.address", "missing"),
        ({"address": "192.0.2.5"}, "management.address", "192.0.2.5/24"),
        ({"address": "2001:db8::5"}, "management.address", "2001:db8::5/64"),
        ({"address": "mail.example.test/24"}, "management.address", "not an address"),
        ({"address": "192.0.2.10/24"}, "management.address", "mail server"),
        ({"address": "127.0.0.2/8"}, "management.address", "cannot be"),
        ({"address": "192.0.2.0/24"}, "management.address", "first"),
        ({"address": "192.0.2.255/24"}, "management.address", "last"),
        ({"address": ["192.0.2.5/24", "192.0.2.6/24"]}, "management.address[1]", "one per family"),
        ({"address": {"a": 1}}, "management.address", "must be"),
        ({"gateway": "198.51.100.1"}, "management.gateway", "not in 192.0.2.0/24"),
        ({"gateway": "192.0.2.5"}, "management.gateway", "own address"),
        ({"gateway": "2001:db8::1"}, "management.gateway", "IPv6 management address"),
        ({"gateway": ["192.0.2.1", "192.0.2.2"]}, "management.gateway[1]", "one per family"),
        ({"ssh_keys": "ssh-ed25519 AAAA"}, "management.ssh_keys", "list"),
        ({"ssh_keys": [SSH_KEY, SSH_KEY]}, "management.ssh_keys[1]", "twice"),
        ({"allow": ["198.51.100.1/24"]}, "management.allow[0]", "host bits"),
        ({"allow": ["2001:db8::/32"]}, "management.allow[0]", "no management address is"),
        ({"metrics": "yes"}, "management.metrics", "true or false"),
        ({"port": 22}, "management.port", "unknown key"),
    ],
)
def test_management_refused(management: dict[str, Any], field: str, words: str):
    errors = refuse(managed(**management))
    assert field in errors, errors
    assert words in errors[field], errors[field]


def test_management_not_a_mapping():
    assert only_error(make(management="192.0.2.5/24"))[0] == "management"


def test_allow_must_cover_every_management_family():
    errors = refuse(managed(address=["192.0.2.5/24", "2001:db8::5/64"], allow=["198.51.100.0/24"]))
    assert "nobody could reach the IPv6" in errors["management.allow"]


def test_link_local_ipv6_gateway_is_fine():
    cfg = config.from_dict(managed(address=["192.0.2.5/24", "2001:db8::5/64"], gateway=["fe80::1"]))
    assert str(cfg.management.gateway(6)) == "fe80::1"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty"),
        ("AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx", "start with the key type"),
        ('from="198.51.100.0/24" ' + SSH_KEY, "options are not supported"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "not accepted"),
        ("ssh-ed25519", "without the key"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5", "base64"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx", "not a ssh-rsa key"),
        (SSH_KEY + "\nssh-ed25519 AAAA", "spans lines"),
        (42, "public key line"),
        (SSH_KEY + "\ud800", "not printable"),
        (SSH_KEY + "\x00", "not printable"),
        (SSH_KEY + "\u2028x", "not printable"),
    ],
)
def test_ssh_key_refused(key: Any, words: str):
    with pytest.raises(ValueError, match=words):
        config.parse_ssh_key(key)


def test_ssh_key_normalized():
    assert config.parse_ssh_key("  " + SSH_KEY.replace(" ", "   ", 1) + "  ") == SSH_KEY
    assert config.parse_ssh_key(SSH_KEY.rsplit(" ", 1)[0]) == SSH_KEY.rsplit(" ", 1)[0]  # no comment


def test_all_management_errors_at_once():
    errors = refuse(managed(address="192.0.2.5", ssh_keys=["nope"], metrics=1))
    assert {"management.address", "management.ssh_keys[0]", "management.metrics"} <= set(errors)


def test_ssh_keys_stay_on_one_line_in_the_file():
    """PyYAML wraps at 80 columns by default; a key split over two lines looks cut to an admin."""
    blob = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + bytes(400)).decode()  # RSA-4096-sized
    long_key = f"ssh-rsa {blob} admin@example.test"
    cfg = config.from_dict(managed(ssh_keys=[long_key, SSH_KEY]))
    lines = cfg.to_yaml().splitlines()
    assert f"  - {long_key}" in lines and f"  - {SSH_KEY}" in lines
    assert config.parse_yaml(cfg.to_yaml()) == cfg


# ---- any file, any value: a field-named refusal, never another exception (issue 10) --------


def refuse_text(text: str | bytes) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        config.parse_yaml(text)
    assert info.value.errors
    return {e.field: e.message for e in info.value.errors}


def test_latin1_byte_in_a_comment_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(config.default_text().encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    line = config.default_text().count("\n") + 1
    assert info.value.to_json() == [
        {
            "field": "(file)",
            "message": f"not UTF-8: byte 0xe9 at line {line}, byte 6 of that line; save the file as UTF-8",
        }
    ]


def test_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + config.default_text().encode())
    assert config.load(path) == config.default()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("window: " + "9" * 4400 + "\n", "cannot be read"),  # ValueError: more than 4300 digits
        ("window: !!int abc\n", "cannot be read"),
        ("window: !!timestamp 2001-13-45\n", "cannot be read"),
        ("window: !!binary 'a'\n", "not valid YAML"),
        ("mode: !!python/object:os.system ls\n", "not valid YAML"),
        ("? [a]\n: 1\n", "not valid YAML"),  # unhashable key
        ("mx1: " + "[" * 5000 + "]" * 5000 + "\n", "maximum nesting depth"),
        ("? " + "9" * 4400 + "\n: 1\n", "cannot be read"),
    ],
    ids=["long-int", "int-tag", "timestamp", "binary", "python-tag", "unhashable-key", "nesting", "long-int-key"],
)
def test_loader_errors_are_file_refusals(text: str, words: str):
    errors = refuse_text(text)
    assert list(errors) == ["(file)"] and words in errors["(file)"], errors


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("window: !!int 0x" + "f" * 4000 + "\n", "window", "a number of about 4817 digits"),
        ("window: 2001-12-14\n", "window", "datetime.date(2001, 12, 14)"),
        ("window: !!float 1e400\n", "window", "inf"),
        ("window: !!binary wAACAQ==\n", "window", "b'"),
        ("window: !!set {a, b}\n", "window", "whole number"),
        ("mx1: &a [*a]\nmx2: 192.0.2.20\n", "mx1[0]", "not an IP address: [[[[...]]]]"),
        ("mx1: [!!binary wAACAQ==]\nmx2: 192.0.2.20\n", "mx1[0]", "not an IP address: b'"),
        ("mode: &a [*a, *a]\n", "mode", "not [[[[...], [...]], [[...], [...]]], [[[...], [...]], [[...], [...]]]]"),
        ('mode: "' + "x" * 100000 + '"\n', "mode", "..."),
        ("''" + ": 1\n", "''", "unknown key"),
        ("0x" + "f" * 1000 + ": 1\n", "'0x" + "f" * 35 + "..." + "f" * 38 + "'", "unknown key"),
        ("bridge: {? !!int 0x" + "f" * 4000 + "\n: 1}\n", "bridge.a number of about 4817 digits", "unknown key"),
    ],
    ids=lambda value: value if len(value) < 40 else f"{value[:30]}...",
)
def test_odd_values_get_field_named_errors(text: str, field: str, words: str):
    errors = refuse_text(text)
    assert field in errors and words in errors[field], errors
    assert all(len(m) < 500 for m in errors.values()), "messages quote a bounded part of the input"


def test_billion_laughs_in_a_list_is_refused_quickly():
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        laughs += f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 9) + "]\n"
    errors = refuse_text(laughs + "whitelist: [" + ", ".join(["*l8"] * 9) + "]\n")
    assert errors["whitelist[0]"].startswith("not an address or network: [[[")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (make(smtp_port=10**5000), "smtp_port"),
        (make(trust={"enabled": b"yes"}), "trust.enabled"),
        (make(knock_prefix={"ipv4": 3.5}), "knock_prefix.ipv4"),
        (make(whitelist=[{1, 2}]), "whitelist[0]"),
        (make(whitelist=[ipaddress.ip_network("192.0.2.0/24").network_address]), "whitelist[0]"),
        (make(mx1=[b"\xc0\x00\x02\x0a"]), "mx1[0]"),
        (make(**{"\n": 1}), "'\\n'"),
    ],
)
def test_odd_python_values_get_field_named_errors(data: dict[str, Any], field: str):
    assert field in refuse(data)


@pytest.mark.parametrize(("add", "remove"), [(None, ()), ((), 5), ("192.0.2.1", ()), ([None], ()), ([[1]], ())])
def test_edit_networks_refuses_odd_input(add: Any, remove: Any):
    with pytest.raises(ConfigError):
        config.edit_networks(config.from_dict(BASE), "whitelist", add, remove)


@pytest.mark.parametrize("item", [None, 5, [1], b"192.0.2.1", 10**5000], ids=["none", "int", "list", "bytes", "huge"])
def test_proven_sender_and_parse_network_refuse_odd_input(item: Any):
    with pytest.raises(ValueError, match="not an address or network"):
        config.proven_sender(item, (4, 6))
    with pytest.raises(ValueError, match="not an address or network"):
        config.parse_network(item)


# ---- address forms the kernel would store differently (issue 10, item 2) -------------------

SCOPED = "2001:db8::10%eth0"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (make(mx1=["192.0.2.10", SCOPED]), "mx1[1]"),
        (make(mx2=["192.0.2.20", "2001:db8::20%1"]), "mx2[1]"),
        (make(whitelist=["2001:db8::1%eth0"]), "whitelist[0]"),
        (make(whitelist=["2001:db8::%eth0/64"]), "whitelist[0]"),
        (make(mode="selective", selective=["2001:db8:1::%eth0/48"]), "selective[0]"),
        (make(management={"address": "2001:db8::5%eth0/64"}), "management.address"),
        (make(management={"address": "2001:db8::5/64", "gateway": "fe80::1%br0"}), "management.gateway"),
        (make(management={"address": "2001:db8::5/64", "allow": ["2001:db8:2::%eth0/48"]}), "management.allow[0]"),
    ],
)
def test_scope_ids_are_refused_in_every_field(data: dict[str, Any], field: str):
    errors = refuse(data)
    assert "scope id" in errors[field] and "write the address without it" in errors[field], errors


def test_scope_id_message():
    errors = refuse(make(mx1=["192.0.2.10", SCOPED]))
    assert errors["mx1[1]"] == (
        "2001:db8::10%eth0: an IPv6 scope id ('%eth0') is not allowed here; write the address without it (2001:db8::10)"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (make(mx1=["192.0.2.10", "::ffff:192.0.2.11"]), "mx1[1]"),
        (make(mx2=["192.0.2.20", "::ffff:c000:215"]), "mx2[1]"),
        (make(whitelist=["::ffff:198.51.100.1"]), "whitelist[0]"),
        (make(whitelist=["::ffff:198.51.100.0/120"]), "whitelist[0]"),
        (make(mode="selective", selective=["::ffff:0:0/96"]), "selective[0]"),
        (make(management={"address": "::ffff:192.0.2.5/120"}), "management.address"),
        (make(management={"address": "2001:db8::5/64", "gateway": "::ffff:192.0.2.1"}), "management.gateway"),
        (make(management={"address": "2001:db8::5/64", "allow": ["::ffff:198.51.100.0/120"]}), "management.allow[0]"),
    ],
)
def test_ipv4_mapped_addresses_are_refused_in_every_field(data: dict[str, Any], field: str):
    errors = refuse(data)
    assert "IPv4-mapped" in errors[field] and "write the IPv4 address" in errors[field], errors


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (make(mx1=["192.0.2.10", "::192.0.2.11"]), "mx1[1]"),
        (make(whitelist=["::198.51.100.0/120"]), "whitelist[0]"),
        (make(management={"address": "2001:db8::5/64", "gateway": "::c000:201"}), "management.gateway"),
    ],
)
def test_ipv4_compatible_addresses_are_refused(data: dict[str, Any], field: str):
    errors = refuse(data)
    assert "IPv4-compatible" in errors[field] and "write the IPv4 address" in errors[field], errors


def test_mapped_address_message():
    errors = refuse(make(whitelist=["::ffff:198.51.100.1"]))
    assert errors["whitelist[0]"] == (
        "::ffff:198.51.100.1 is an IPv4-mapped IPv6 address: write the IPv4 address 198.51.100.1 instead"
    )


@pytest.mark.parametrize("item", ["2001:db8::1%eth0", "::ffff:192.0.2.1", "::192.0.2.1", "2001:db8::%1/64"])
def test_proven_senders_and_edits_refuse_kernel_forms(item: str):
    with pytest.raises(ValueError, match=r"scope id|IPv4-"):
        config.proven_sender(item, (4, 6))
    with pytest.raises(ConfigError) as info:
        config.edit_networks(config.from_dict(BASE), "whitelist", add=[item])
    assert info.value.errors[0].field == "whitelist[+0]"


@pytest.mark.parametrize(
    "text", ["2001:DB8::1", "2001:0db8:0000::0001", "2001:db8:0:0:0:0:0:1", " 2001:db8::1 ", "2001:db8::ffff:1"]
)
def test_other_ipv6_spellings_are_normalized_not_refused(text: str):
    cfg = config.from_dict(make(whitelist=[text]))
    assert cfg.to_dict()["whitelist"] == ["2001:db8::1" if "ffff" not in text else "2001:db8::ffff:1"]


# ---- management address prefix (issue 10, item 11) ----------------------------------------


@pytest.mark.parametrize("address", ["192.0.2.5/0", "192.0.2.5/7", "2001:db8::5/0", "2001:db8::5/15"])
def test_management_prefix_too_short(address: str):
    errors = refuse(managed(address=address))
    assert "too short a prefix" in errors["management.address"], errors


@pytest.mark.parametrize("address", ["10.0.0.5/8", "2001:db8::5/16", "192.0.2.5/32", "2001:db8::5/128"])
def test_management_prefix_bounds_are_inclusive(address: str):
    assert config.from_dict(managed(address=address, allow=[])).management is not None


# ---- interface names the kernel or iptables would read otherwise ---------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("br%d", "'%d'"),
        ("lo", "loopback"),
        ("all", "settings of all interfaces"),
        ("default", "settings of all interfaces"),
        ("eth+", "trailing '+'"),
        ("!eth0", "leading '!'"),
        ("bré", "ASCII"),
        ("br\x00", "ASCII"),
        ("br\r", "ASCII"),
        ("br\xa0", "ASCII"),
        ("br\u2003", "ASCII"),
    ],
)
def test_interface_names_the_kernel_would_take_otherwise(name: str, words: str):
    field, message = only_error(make(bridge={"name": name}))
    assert field == "bridge.name" and words in message, message


# ---- mxknock check: the same refusals, exit 2, no traceback --------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"# caf\xe9\n",
        b"window: " + b"9" * 4400 + b"\n",
        b"window: !!int abc\n",
        b"mx1: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        b"mx1: [192.0.2.10, 2001:db8::10%eth0]\n",
    ],
)
@pytest.mark.parametrize("stdin", [False, True])
def test_mxknock_check_refuses_without_a_traceback(tmp_path, content: bytes, stdin: bool):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_bytes(config.default_text().encode() + content)
    argv = [sys.executable, "-m", "appliance.cli", "check", "-" if stdin else str(path)]
    done = subprocess.run(argv, input=path.read_bytes() if stdin else None, capture_output=True, timeout=30)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err and err.startswith("mxknock: refused:\n  "), err


# ---- bounded work and output for absurd input -----------------------------------------------


def test_errors_are_listed_up_to_a_bound():
    with pytest.raises(ConfigError) as info:
        config.from_dict(make(whitelist=[f"bad{i}" for i in range(5000)]))
    errors = info.value.errors
    assert len(errors) == config.MAX_ERRORS + 1
    assert errors[-1] == config.FieldError(
        "(file)", f"and {5000 - config.MAX_ERRORS} more problems (only the first are listed)"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (make(knock_ports=["x"] * 100_000), "knock_ports"),
        (make(mx1=["x"] * 100_000), "mx1"),
        (make(management={"address": ["x"] * 100_000}), "management.address"),
        (make(management={"address": "192.0.2.5/24", "allow": ["x"] * 100_000}), "management.allow"),
    ],
)
def test_absurdly_long_lists_are_one_refusal(data: dict[str, Any], field: str):
    errors = refuse(data)
    assert field in errors and len(errors) <= 3, list(errors)[:5]


def test_a_file_larger_than_any_config_is_refused_unread():
    errors = refuse_text(b"# " + b"x" * config.MAX_FILE_BYTES + b"\n")
    assert "more than any config needs" in errors["(file)"]
