"""Property-based fuzzing of the config file: as bytes, as YAML text (aliases, tags, huge
and odd values), as Python structures, and every address form `ipaddress` accepts.

The property (issue 10): a ConfigError whose every error names a field, or a Config whose
`to_yaml()` reads back to an equal Config and compiles. Nothing in between, and within the
profile's deadline (a second per example in CI). Profiles: tests/unit/conftest.py.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import socket
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from appliance import config
from appliance.compiler import compile_config
from appliance.config import Config, ConfigError

from .test_config import BASE

VALID: dict[str, Any] = BASE  # a complete valid config, shared with the example-based tests
MANAGEMENT: dict[str, Any] = {
    "address": ["192.0.2.5/24", "2001:db8::5/64"],
    "gateway": ["192.0.2.1"],
    "allow": ["198.51.100.0/24", "2001:db8:1::/48"],
    "metrics": True,
}
NAME = re.compile(r"[A-Za-z0-9_-]{1,31}")  # ipset's and xt_recent's names: ours stay plain


# ---- the property --------------------------------------------------------------------------


def canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Our text is the kernel's text (what pyroute2 and python-iptables read back)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    text = str(address)
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text)) == text
    except OSError:
        return False


def kernel_accepts_ifname(name: str) -> bool:
    """dev_valid_name() (net/core/dev.c) on the bytes the kernel gets, "all" and "default"
    (refused by this kernel: /proc/sys/net/*/conf/ has them), plus what would make
    the kernel or iptables read the name as something else: '%' (dev_alloc_name's template),
    a leading '!' (iptables: not) or a trailing '+' (iptables: any name starting so)."""
    raw = name.encode("utf-8", "surrogatepass")
    kernel_space = b" \t\n\v\f\r\xa0"  # lib/ctype.c: 0xa0 is a space to the kernel
    return (
        0 < len(raw) < 16
        and name not in (".", "..", "all", "default", "lo")  # measured: EINVAL for all/default; lo exists
        and not any(b in kernel_space or b in b"/:\0%" for b in raw)
        and not name.startswith("!")
        and not name.endswith("+")
    )


def check_config(cfg: Config) -> None:
    again = config.parse_yaml(cfg.to_yaml())
    assert again == cfg
    cfg.to_yaml().encode("utf-8")  # the daemon saves it as UTF-8
    ruleset = compile_config(cfg)
    for family in ruleset.families:
        for ipset in family.sets:
            assert NAME.fullmatch(ipset.name), ipset.name
        if family.knock_list is not None:
            assert NAME.fullmatch(family.knock_list), family.knock_list
    for address in (*cfg.mx1, *cfg.mx2):
        assert canonical(address), address
    for net in (*cfg.whitelist, *cfg.selective):
        assert canonical(net.network_address), net
    for name in (cfg.bridge.name, cfg.bridge.outside, cfg.bridge.inside):
        assert kernel_accepts_ifname(name), name
    if cfg.management is not None:
        for key in cfg.management.ssh_keys:  # written to authorized_keys, one line each
            assert key.encode("utf-8") and all(c.isprintable() or c == "\t" for c in key), key
        for interface in cfg.management.addresses:
            assert canonical(interface.ip), interface
            assert interface.network.prefixlen >= (8 if interface.version == 4 else 16), interface
        for gateway in cfg.management.gateways:
            assert canonical(gateway), gateway
        for net in cfg.management.allow:
            assert canonical(net.network_address), net


def check_refusal(exc: ConfigError) -> None:
    assert exc.errors, "a refusal names at least one field"
    for error in exc.errors:
        assert isinstance(error.field, str) and error.field.strip(), error
        assert isinstance(error.message, str) and error.message.strip(), error
        assert len(error.message) < 2000, "a message quotes a bounded part of the input"
    assert exc.to_json()


def judge_text(text: str | bytes) -> Config | None:
    try:
        cfg = config.parse_yaml(text)
    except ConfigError as exc:
        check_refusal(exc)
        return None
    check_config(cfg)
    return cfg


def judge_data(data: Any) -> Config | None:
    try:
        cfg = config.from_dict(data)
    except ConfigError as exc:
        check_refusal(exc)
        return None
    check_config(cfg)
    return cfg


# ---- strategies ----------------------------------------------------------------------------

V4 = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4, network="192.0.2.0/24"),
    st.ip_addresses(v=4, network="198.51.100.0/24"),
)
V6 = st.one_of(
    st.ip_addresses(v=6),
    st.ip_addresses(v=6, network="2001:db8::/32"),
    st.ip_addresses(v=6, network="::ffff:0:0/96"),  # IPv4-mapped
    st.ip_addresses(v=6, network="::/96"),  # IPv4-compatible
    st.ip_addresses(v=6, network="64:ff9b::/96"),  # NAT64
)
SCOPES = st.sampled_from(["eth0", "br0", "1", "0", "%", "lo", "x" * 20, "é", ""])


@st.composite
def address_texts(draw: st.DrawFn) -> str:
    """An address written every way ipaddress (or an admin) might write it."""
    address = draw(st.one_of(V4, V6))
    if address.version == 4:
        text = draw(
            st.sampled_from(
                [
                    str(address),
                    f"::ffff:{address}",
                    f"::{address}",
                    f"64:ff9b::{address}",
                    f"0:0:0:0:0:ffff:{address}",
                    ".".join(f"0{o}" for o in address.packed),  # leading zeros
                ]
            )
        )
    else:
        forms = [str(address), address.exploded, address.compressed.upper(), address.exploded.upper()]
        if address.ipv4_mapped is not None:
            forms.append(f"::ffff:{address.ipv4_mapped}")
        forms.append(":".join(g.lstrip("0") or "0" for g in address.exploded.split(":")))
        text = draw(st.sampled_from(forms))
    if draw(st.booleans()):
        text = f"{text}%{draw(SCOPES)}"
    if draw(st.integers(0, 4)) == 0:
        text = f" {text}\t"
    return text


@st.composite
def network_texts(draw: st.DrawFn) -> str:
    text = draw(address_texts())
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return text
    if choice == 1:
        return f"{text}/{draw(st.integers(-1, 129))}"
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return text + "/24"
    if choice == 2:  # as the network itself, so that it is often valid
        return str(net.supernet(new_prefix=draw(st.integers(0, net.max_prefixlen))))
    mask = ipaddress.ip_network(f"0.0.0.0/{draw(st.integers(0, 32))}").netmask
    return f"{text.strip()}/{mask}"  # netmask form


IFNAMES = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=17),
    st.sampled_from(
        [
            ".",
            "..",
            "eth0",
            "br0",
            "a%d",
            "eth+",
            "!eth0",
            "a b",
            "a\x00",
            "é",
            "x" * 15,
            "x" * 16,
            "ab\xa0",
            "a:1",
            "lo",
        ]
    ),
)

HUGE_INT = st.integers(4300, 6000).map(lambda n: "9" * n)
TAGS = [
    "!!int",
    "!!float",
    "!!str",
    "!!bool",
    "!!null",
    "!!timestamp",
    "!!binary",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!seq",
    "!!map",
    "!!python/object:os.system",
    "!!python/name:os.system",
    "!!python/tuple",
    "!custom",
    "!<tag:yaml.org,2002:int>",
]
SCALAR_WORDS = [
    "~",
    "null",
    "true",
    "no",
    "on",
    "y",
    "1.5",
    "1e400",
    "-.inf",
    ".nan",
    "0x1F",
    "0o17",
    "010",
    "0b101",
    "12:30:00",
    "1_000",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-13-45",
    "'quoted'",
    '"\\ud800"',
    '"\\x00"',
    '"\\u00e9"',
    "''",
    "<<",
    "=",
    "-",
    "?",
    "|-\n  block\n",
    "!!binary |\n  wAACAQ==\n",
]


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


SCALARS = st.one_of(
    st.sampled_from(SCALAR_WORDS),
    st.integers(-(2**70), 2**70).map(str),
    HUGE_INT,
    st.tuples(st.sampled_from(TAGS), st.one_of(st.sampled_from(SCALAR_WORDS), st.text(max_size=12).map(quoted))).map(
        " ".join
    ),
    address_texts(),
    network_texts(),
    IFNAMES.map(quoted),
    st.sampled_from(config.MODES),
    st.integers(0, 70000).map(str),
)
FLOW = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(sorted(config.TOP_KEYS | config.MANAGEMENT_KEYS)), inner), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
        st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    ),
    max_leaves=8,
)
KEYS = st.one_of(
    st.sampled_from(sorted(config.TOP_KEYS)),
    st.sampled_from(["? [a]", "? {a: 1}", "1", "~", "true", "2001-12-14", "'x'", "9" * 4400]),
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    """A document with top-level keys, anchors and aliases (also recursive ones)."""
    lines = []
    anchors: list[str] = []
    for i in range(draw(st.integers(0, 8))):
        key = draw(KEYS)
        value = draw(FLOW)
        kind = draw(st.integers(0, 5))
        if kind == 0:
            value = f"&a{i} {value}"
            anchors.append(f"a{i}")
        elif kind == 1 and anchors:
            value = "*" + draw(st.sampled_from(anchors))
        elif kind == 2:
            value = f"&r{i} [*r{i}, {{x: *r{i}}}]"  # a structure that holds itself
        elif kind == 3 and anchors:
            alias = "*" + draw(st.sampled_from(anchors))
            value = "[" + ", ".join([alias] * draw(st.integers(1, 50))) + "]"
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


# Plain documentation addresses and networks of the families the valid config has: these are
# mostly accepted, so that acceptance (round trip, compile) is fuzzed as much as refusal.
CLEAN_V4 = st.ip_addresses(v=4, network="192.0.2.0/24") | st.ip_addresses(v=4, network="198.51.100.0/24")
CLEAN_V6 = st.ip_addresses(v=6, network="2001:db8::/32")
CLEAN_MX = st.tuples(CLEAN_V4, CLEAN_V6).map(lambda pair: [str(a) for a in pair])
CLEAN_NETS = st.one_of(CLEAN_V4, CLEAN_V6).flatmap(
    lambda a: st.integers(8 if a.version == 4 else 16, a.max_prefixlen).map(
        lambda p: config._net_str(ipaddress.ip_network(f"{a}/{p}", strict=False))
    )
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The valid config with some keys replaced by values made of fuzzed addresses and names:
    often still valid, so that acceptance is fuzzed as much as refusal."""
    data = copy.deepcopy(VALID)
    if draw(st.booleans()):
        data["management"] = copy.deepcopy(MANAGEMENT)
    fields = draw(
        st.lists(
            st.sampled_from(
                ["mx1", "mx2", "whitelist", "selective", "bridge", "address", "gateway", "allow", "knock_prefix"]
            ),
            min_size=1,
            max_size=3,
        )
    )
    for name in fields:
        clean = draw(st.booleans())
        if name in ("mx1", "mx2"):
            data[name] = draw(CLEAN_MX if clean else st.lists(address_texts(), min_size=1, max_size=2))
        elif name in ("whitelist", "selective"):
            data[name] = draw(st.lists(CLEAN_NETS if clean else network_texts(), max_size=4))
            if name == "selective":
                data["mode"] = "selective"
        elif name == "bridge":
            data["bridge"][draw(st.sampled_from(["name", "outside", "inside"]))] = draw(IFNAMES)
        elif name == "knock_prefix":
            data["knock_prefix"] = {"ipv4": draw(st.integers(0, 40)), "ipv6": draw(st.integers(0, 140))}
        else:
            management = data.setdefault("management", copy.deepcopy(MANAGEMENT))
            if name == "address":
                management["address"] = draw(st.lists(network_texts(), min_size=1, max_size=2))
            elif name == "gateway":
                management["gateway"] = draw(st.lists(address_texts(), max_size=2))
            else:
                management["allow"] = draw(st.lists(CLEAN_NETS if clean else network_texts(), max_size=3))
    return data


PY_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**4400, max_value=10**4500),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.dates(),
    st.datetimes(),
    st.frozensets(st.integers(), max_size=3),
    address_texts(),
    IFNAMES,
)
PY_VALUES = st.recursive(
    PY_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(sorted(config.TOP_KEYS | config.MANAGEMENT_KEYS)), PY_LEAVES), inner),
        st.sets(st.integers(), max_size=3),
    ),
    max_leaves=10,
)


# ---- the tests -----------------------------------------------------------------------------


@given(st.binary(max_size=3000))
@example(b"# caf\xe9\nmode: unlisting\n")
@example(b"\xff\xfe" + "mode: unlisting\n".encode("utf-16-le"))
@example(b"mode: unlisting\x00\n")
def test_any_bytes(data: bytes) -> None:
    judge_text(data)


@given(st.data())
def test_valid_file_with_bytes_inserted(data: st.DataObject) -> None:
    text = config.default_text().encode()
    at = data.draw(st.integers(0, len(text)))
    judge_text(text[:at] + data.draw(st.binary(min_size=1, max_size=8)) + text[at:])


@given(yaml_documents())
@example("smtp_port: " + "9" * 4400 + "\n")
@example("window: !!int abc\n")
@example("window: !!timestamp 2001-13-45\n")
@example("mx1: !!binary '!!!'\n")
@example("mode: !!python/object:os.system ls\n")
@example("? [a]\n: 1\n")
@example("mx1: " + "[" * 2000 + "]" * 2000 + "\n")
@example("mx1: &a [*a]\n")
@example("9" * 4400 + ": 1\n")
@example("mx1: !!float 1e400\n")
@example("window: !!int 0x" + "f" * 4000 + "\n")
@example("whitelist: [" + ", ".join(["&b [&a [x, x, x, x, x, x, x, x]" + ", *a" * 8 + "]"] + ["*b"] * 8) + "]\n")
def test_yaml_documents(text: str) -> None:
    judge_text(text)


@given(yaml_documents())
def test_yaml_documents_in_a_valid_file(text: str) -> None:
    """The fuzzed keys override the valid ones (the last key wins in YAML as PyYAML reads it)."""
    judge_text(config.default_text() + text)


@given(near_valid())
def test_near_valid_structures(data: dict[str, Any]) -> None:
    judge_data(data)
    judge_text(yaml.safe_dump(data))


@given(st.one_of(PY_VALUES, st.dictionaries(st.sampled_from(sorted(config.TOP_KEYS)), PY_VALUES)))
def test_python_structures(data: Any) -> None:
    judge_data(data)


@given(st.sampled_from(sorted(config.TOP_KEYS)), PY_VALUES)
def test_one_key_of_a_valid_config(key: str, value: Any) -> None:
    data = copy.deepcopy(VALID)
    data[key] = value
    judge_data(data)
    data["management"] = {**MANAGEMENT, key: value} if key in config.MANAGEMENT_KEYS else MANAGEMENT
    judge_data(data)


@given(st.sampled_from(sorted(config.MANAGEMENT_KEYS)), PY_VALUES)
def test_one_management_key(key: str, value: Any) -> None:
    data = copy.deepcopy(VALID)
    data["management"] = {**MANAGEMENT, key: value}
    judge_data(data)


@given(st.sampled_from(["name", "outside", "inside"]), IFNAMES)
@example("name", "br%d")
@example("outside", "eth+")
@example("inside", "!eth1")
@example("name", "bré")
@example("name", "enp3s0f1.100")
def test_interface_names_are_the_kernels(key: str, name: str) -> None:
    """What validation accepts the kernel accepts (check_config); plain ASCII names the
    kernel accepts are not refused either."""
    data = copy.deepcopy(VALID)
    data["bridge"][key] = name
    cfg = judge_data(data)
    plain = re.fullmatch(r"[\x21-\x7e]+", name) and kernel_accepts_ifname(name)
    if plain and name not in ("eth0", "eth1", "br0"):
        assert cfg is not None, name


@given(st.one_of(PY_VALUES, address_texts(), network_texts()), st.sampled_from([(4,), (6,), (4, 6)]))
def test_proven_sender(item: Any, families: tuple[int, ...]) -> None:
    try:
        address = config.proven_sender(item, families)
    except ValueError as exc:
        assert str(exc)
        return
    assert canonical(address) and address.version in families


@given(st.one_of(PY_VALUES, address_texts(), network_texts()))
def test_parse_network(item: Any) -> None:
    try:
        net = config.parse_network(item)
    except ValueError as exc:
        assert str(exc)
        return
    assert canonical(net.network_address)


@given(
    st.sampled_from(["whitelist", "selective"]),
    st.one_of(PY_VALUES, st.lists(st.one_of(network_texts(), PY_LEAVES), max_size=4)),
    st.one_of(PY_VALUES, st.lists(st.one_of(network_texts(), PY_LEAVES), max_size=4)),
)
def test_edit_networks(key: str, add: Any, remove: Any) -> None:
    base = config.from_dict({**VALID, "whitelist": ["198.51.100.0/24"], "selective": ["203.0.113.0/24"]})
    try:
        cfg = config.edit_networks(base, key, add, remove)
    except ConfigError as exc:
        check_refusal(exc)
        return
    check_config(cfg)


@given(st.sampled_from(sorted(config.TOP_KEYS)), PY_VALUES)
def test_with_changes(key: str, value: Any) -> None:
    try:
        cfg = config.with_changes(config.from_dict(VALID), **{key: value})
    except ConfigError as exc:
        check_refusal(exc)
        return
    check_config(cfg)


SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx"


@given(st.text(max_size=30))
@example("adm\ud800in")
@example("a\x00b")
def test_ssh_key_comments_in_a_config(comment: str) -> None:
    data = copy.deepcopy(VALID)
    data["management"] = {**MANAGEMENT, "ssh_keys": [f"{SSH_KEY} {comment}"]}
    judge_data(data)
    judge_text(yaml.safe_dump(data))


@given(st.one_of(PY_VALUES, st.binary(max_size=100), st.text(max_size=100)))
def test_parse_yaml_of_anything(value: Any) -> None:
    """What the control API hands over as `yaml` may be any JSON value."""
    judge_text(value)


@given(st.one_of(PY_VALUES, st.text(max_size=200)))
def test_parse_ssh_key(item: Any) -> None:
    try:
        key = config.parse_ssh_key(item)
    except ValueError as exc:
        assert str(exc)
        return
    assert "\n" not in key
