"""The appliance's configuration: YAML in, a validated immutable Config out.

Validation collects every problem at once and names the field of each, so an admin
fixing a file (or the console showing errors next to its fields) sees them all.
Nothing here touches the kernel: a Config that exists is a Config that is valid.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import reprlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path("/etc/mxknock/mxknock.yaml")

MODES = ("unlisting", "nolisting", "backup-mx", "selective")
FAMILIES = (4, 6)
WINDOW_MIN, WINDOW_MAX = 1, 86400
# The seed's IMAP/POP ports, offered as the usual choice for extra knock ports.
MAIL_ACCESS_PORTS = (110, 143, 993, 995)
MAX_SET_ENTRIES = 65536  # size of the ipsets that hold whitelist and selective networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

SSH_PORT = 22
METRICS_PORT = 9425  # Prometheus text at http://<management address>:9425/metrics
# Key types OpenSSH accepts in authorized_keys (DSA is gone from OpenSSH 9.x defaults).
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MAX_SSH_KEYS = 64
MAX_MANAGEMENT_ALLOW = 1024


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(ValueError):
    """A config was refused; `errors` names each offending field."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def to_json(self) -> list[dict[str, str]]:
        return [{"field": e.field, "message": e.message} for e in self.errors]


@dataclass(frozen=True)
class Bridge:
    name: str = "br0"
    outside: str = "eth0"
    inside: str = "eth1"


@dataclass(frozen=True)
class KnockPrefix:
    """Knock granularity per family: a knock opens mx2 for the sender's /ipv4 or /ipv6."""

    ipv4: int = 32
    ipv6: int = 128

    def __getitem__(self, family: int) -> int:
        return self.ipv4 if family == 4 else self.ipv6


@dataclass(frozen=True)
class Trust:
    """Proven senders: a source whose handshake to mx2 completed after a knock passes
    without a knock for `lifetime` seconds, refreshed on each accepted connection."""

    enabled: bool = True
    lifetime: int = 36 * 86400  # OpenBSD spamd's whitelist lifetime


@dataclass(frozen=True)
class Management:
    """An address of the box's own on the bridge, for SSH and metrics. Without one the
    bridge has no address at all and the box cannot be reached (the transparent default)."""

    addresses: tuple[IPInterface, ...]  # one per family, with its prefix length
    gateways: tuple[IPAddress, ...] = ()  # default route per family, for admins beyond the subnet
    ssh_keys: tuple[str, ...] = ()  # root's authorized keys; none: no SSH
    allow: tuple[IPNetwork, ...] = ()  # who may reach SSH and metrics; empty: anyone
    # Off unless asked: the box's address sits on the uplink's segment, and the counters
    # (mode, window) are nobody else's business.
    metrics: bool = False

    def families(self) -> tuple[int, ...]:
        return tuple(f for f in FAMILIES if any(a.version == f for a in self.addresses))

    def address(self, family: int) -> IPInterface | None:
        return next((a for a in self.addresses if a.version == family), None)

    def gateway(self, family: int) -> IPAddress | None:
        return next((g for g in self.gateways if g.version == family), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": [str(a) for a in self.addresses],
            "gateway": [str(g) for g in self.gateways],
            "ssh_keys": list(self.ssh_keys),
            "allow": [_net_str(n) for n in self.allow],
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Config:
    bridge: Bridge
    mode: str
    mx1: tuple[IPAddress, ...]
    mx2: tuple[IPAddress, ...]
    smtp_port: int = 25
    window: int = 4000
    knock_ports: tuple[int, ...] = ()
    whitelist: tuple[IPNetwork, ...] = ()
    selective: tuple[IPNetwork, ...] = ()
    knock_prefix: KnockPrefix = field(default_factory=lambda: KnockPrefix())
    trust: Trust = field(default_factory=Trust)
    # Entries per knock list (xt_recent's ip_list_tot, fixed when the module loads: the
    # image applies it at boot). None: whatever the kernel has (the image uses 10000).
    knock_list_size: int | None = None
    management: Management | None = None

    def families(self) -> tuple[int, ...]:
        """Address families the mail server is reachable in (validated equal for mx1, mx2)."""
        return tuple(f for f in FAMILIES if any(a.version == f for a in self.mx1))

    def mx(self, which: str, family: int) -> IPAddress:
        addresses = self.mx1 if which == "mx1" else self.mx2
        return next(a for a in addresses if a.version == family)

    def networks(self, kind: str, family: int) -> tuple[IPNetwork, ...]:
        return tuple(n for n in getattr(self, kind) if n.version == family)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML file's own shape (so it can be written back)."""
        return {
            "bridge": {
                "name": self.bridge.name,
                "outside": self.bridge.outside,
                "inside": self.bridge.inside,
            },
            "mode": self.mode,
            "mx1": [str(a) for a in self.mx1],
            "mx2": [str(a) for a in self.mx2],
            "smtp_port": self.smtp_port,
            "window": self.window,
            "knock_ports": list(self.knock_ports),
            "whitelist": [_net_str(n) for n in self.whitelist],
            "selective": [_net_str(n) for n in self.selective],
            "knock_prefix": {"ipv4": self.knock_prefix[4], "ipv6": self.knock_prefix[6]},
            "trust": {"enabled": self.trust.enabled, "lifetime": self.trust.lifetime},
            **({"knock_list_size": self.knock_list_size} if self.knock_list_size is not None else {}),
            **({"management": self.management.to_dict()} if self.management is not None else {}),
        }

    def to_yaml(self) -> str:
        # No line wrapping: an SSH key split over two lines looks cut to an admin reading the file.
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=float("inf"))


def _net_str(net: IPNetwork) -> str:
    """A host network prints as the bare address, as the admin most likely wrote it."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


TOP_KEYS = {
    "bridge",
    "mode",
    "mx1",
    "mx2",
    "smtp_port",
    "window",
    "knock_ports",
    "whitelist",
    "selective",
    "knock_prefix",
    "trust",
    "knock_list_size",
    "management",
}
BRIDGE_KEYS = {"name", "outside", "inside"}
PREFIX_KEYS = {"ipv4": (4, 32), "ipv6": (6, 128)}
TRUST_KEYS = {"enabled", "lifetime"}
TRUST_LIFETIME_MIN, TRUST_LIFETIME_MAX = 60, 366 * 86400
LIST_SIZE_MIN, LIST_SIZE_MAX = 100, 1_000_000
MANAGEMENT_KEYS = {"address", "gateway", "ssh_keys", "allow", "metrics"}
MANAGEMENT_PREFIX_MIN = {4: 8, 6: 16}  # shortest management.address prefix per family (see there)


MAX_ERRORS = 200  # listed per refusal; a file of a million bad entries needs no million lines
MAX_FILE_BYTES = 16 * 1024 * 1024  # two full 65536-entry IPv6 lists take about 6 MiB
LIST_ABSURD = 1000  # a list this long where a few items belong is refused without reading each


class _Collector:
    """Gathers field errors while the parser keeps going (the first MAX_ERRORS of them)."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.count = 0  # all of them, listed or not

    def add(self, field_name: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FieldError(field_name, message))

    def final(self) -> list[FieldError]:
        unlisted = self.count - len(self.errors)
        if unlisted:
            return [*self.errors, FieldError("(file)", f"and {unlisted} more problems (only the first are listed)")]
        return self.errors


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: ~10x faster
    """YAML 1.1 reads an unquoted 2001:10:20:30:40:50:0:1 as a base-60 integer; an admin
    writing IPv6 addresses means text. Only plain decimal integers stay numbers."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))


class _Shown(reprlib.Repr):
    """Input quoted in a message: bounded in length and depth, whatever the input holds
    (a 10 MB string, a structure that holds itself, aliases that multiply, a huge number)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int of more than 4300 digits raises; a long one is unreadable anyway.
        if x.bit_length() > 200:
            return f"a number of about {int(x.bit_length() * 0.30103) + 1} digits"
        return repr(x)


_shown = _Shown()


def shown(value: Any) -> str:
    """repr() of an input value, safe and short enough for an error message."""
    try:
        return _shown.repr(value)
    except Exception:  # a value no repr copes with is still named, not a crash
        return f"a value of type {type(value).__name__}"


def decode(data: bytes) -> str:
    """The file's bytes as text: UTF-8 (a BOM allowed), or a refusal saying where it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise ConfigError(
            [
                FieldError(
                    "(file)",
                    f"not UTF-8: byte 0x{data[start]:02x} at line {line}, byte {column} of that line;"
                    " save the file as UTF-8",
                )
            ]
        ) from None


def parse_yaml(text: str | bytes) -> Config:
    """A config from the file's text (or its bytes): a Config, or a ConfigError and nothing else."""
    if isinstance(text, str | bytes | bytearray) and len(text) > MAX_FILE_BYTES:
        raise ConfigError(
            [FieldError("(file)", f"{len(text)} bytes is more than any config needs (at most {MAX_FILE_BYTES})")]
        )
    if isinstance(text, bytes | bytearray):
        text = decode(bytes(text))
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ConfigError([FieldError("(file)", f"not valid YAML at {where}: {_bounded(str(exc))}")]) from None
    except RecursionError:
        raise ConfigError([FieldError("(file)", "nested too deeply to read: flatten the lists and mappings")]) from None
    except Exception as exc:
        # PyYAML's constructors raise what their Python conversions raise: ValueError (an
        # int of more than 4300 digits, `!!int abc`, a bad `!!timestamp`), TypeError,
        # OverflowError... All of them mean the same to the admin: this file cannot be read.
        raise ConfigError([FieldError("(file)", f"cannot be read as a config: {_bounded(str(exc))}")]) from None
    try:
        return from_dict(data)
    except RecursionError:  # a structure that holds itself, met where a plain value belongs
        raise ConfigError([FieldError("(file)", "nested too deeply to read: flatten the lists and mappings")]) from None


def _bounded(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def load(path: Path | str = DEFAULT_PATH) -> Config:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([FieldError("(file)", f"cannot read {path}: {exc.strerror}")]) from None
    return parse_yaml(data)


def default_text() -> str:
    """The embedded default config, shipped inside the package."""
    return resources.files("appliance").joinpath("default.yaml").read_text()


def default() -> Config:
    return parse_yaml(default_text())


def from_dict(data: Any) -> Config:
    errs = _Collector()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([FieldError("(file)", "must be a mapping of keys to values")])
    for key in sorted(set(data) - TOP_KEYS, key=_key_name):
        errs.add(_key_name(key), f"unknown key (known keys: {', '.join(sorted(TOP_KEYS))})")

    bridge = _bridge(data.get("bridge", {}), errs)
    mode = data.get("mode", "unlisting")
    if mode not in MODES:
        errs.add("mode", f"must be one of {', '.join(MODES)}, not {shown(mode)}")
    mx1 = _mx_addresses("mx1", data.get("mx1"), errs)
    mx2 = _mx_addresses("mx2", data.get("mx2"), errs)
    _check_mx_pair(mx1, mx2, errs)
    smtp_port = _port("smtp_port", data.get("smtp_port", 25), errs)
    window = _int_in_range("window", data.get("window", 4000), WINDOW_MIN, WINDOW_MAX, errs)
    knock_ports = _knock_ports(data.get("knock_ports", []), smtp_port, errs)
    whitelist = _networks("whitelist", data.get("whitelist", []), errs)
    selective = _networks("selective", data.get("selective", []), errs)
    families = {a.version for a in mx1} & {a.version for a in mx2}
    for kind, networks in (("whitelist", whitelist), ("selective", selective)):
        for i, net in enumerate(networks):
            if families and net.version not in families:
                errs.add(
                    f"{kind}[{i}]", f"{net} is IPv{net.version} but the mail server has no IPv{net.version} address"
                )
    usable = [n for n in selective if n.version in families]
    if mode == "selective" and not usable and not any(e.field.startswith("selective") for e in errs.errors):
        errs.add("selective", "mode selective needs at least one network to apply Unlisting to")
    knock_prefix = _knock_prefix(data.get("knock_prefix", {}), errs)
    trust = _trust(data.get("trust", {}), errs)
    knock_list_size = data.get("knock_list_size")
    if knock_list_size is not None:
        knock_list_size = _int_in_range("knock_list_size", knock_list_size, LIST_SIZE_MIN, LIST_SIZE_MAX, errs)
    management = None
    if data.get("management") is not None:
        management = _management(data["management"], set(mx1) | set(mx2), errs)

    if errs.count:
        raise ConfigError(errs.final())
    return Config(
        bridge=bridge,
        mode=mode,
        mx1=mx1,
        mx2=mx2,
        smtp_port=smtp_port,
        window=window,
        knock_ports=knock_ports,
        whitelist=whitelist,
        selective=selective,
        knock_prefix=knock_prefix,
        trust=trust,
        knock_list_size=knock_list_size,
        management=management,
    )


def _section(name: str, raw: Any, known: set[str], example: str, errs: _Collector) -> bool:
    """A nested mapping: False (and an error) if it is not one; unknown keys are errors."""
    if not isinstance(raw, dict):
        errs.add(name, f"must be a mapping like {example}")
        return False
    for key in sorted(set(raw) - known, key=_key_name):
        errs.add(f"{name}.{_key_name(key)}", f"unknown key (known keys: {', '.join(sorted(known))})")
    return True


def _key_name(key: Any) -> str:
    """A mapping key as a field name: itself if it is plain text, else its bounded repr
    (so that an empty, blank, multi-line or non-text key still names something visible)."""
    plain = isinstance(key, str) and key.strip() == key and key.isprintable() and 0 < len(key) <= 80
    return key if plain else shown(key)


def _bridge(raw: Any, errs: _Collector) -> Bridge:
    if not _section("bridge", raw, BRIDGE_KEYS, "{name: br0, outside: eth0, inside: eth1}", errs):
        return Bridge()
    values = {}
    for key in ("name", "outside", "inside"):
        value = raw.get(key, getattr(Bridge, key))
        problem = _ifname_problem(value)
        if problem is not None:
            errs.add(f"bridge.{key}", problem)
        values[key] = value if problem is None else f"(invalid {key})"
    if len({values["name"], values["outside"], values["inside"]}) < 3:
        errs.add("bridge", "name, outside and inside must be three different interfaces")
    return Bridge(**values)


def _valid_ifname(value: Any) -> bool:
    return _ifname_problem(value) is None


def _ifname_problem(value: Any) -> str | None:
    """Why the kernel (dev_valid_name) or iptables would not take `value` as an interface
    name as it reads; None if they would."""
    if not (
        isinstance(value, str)
        and 0 < len(value) <= 15
        and not any(c in value for c in "/: \t\n")
        and value not in (".", "..")
    ):
        return f"not a valid interface name: {shown(value)} (1-15 characters, no '/', ':' or spaces)"
    if not all("!" <= c <= "~" for c in value):
        # The kernel counts bytes, not characters, and takes byte 0xa0 for a space.
        return f"not a valid interface name: {shown(value)} (ASCII letters, digits and punctuation only)"
    if value == "lo":
        return f"not a valid interface name: {value!r} (the loopback interface cannot be a bridge or a bridge port)"
    if value in ("all", "default"):
        return f"not a valid interface name: {value!r} (the kernel keeps it for the settings of all interfaces)"
    if "%" in value:
        return (
            f"not a valid interface name: {value!r}"
            " (the kernel replaces a '%d' in a name with a number and refuses any other '%')"
        )
    if value.startswith("!") or value.endswith("+"):
        return (
            f"not a valid interface name: {value!r} (iptables reads a leading '!' as 'not' and a trailing"
            " '+' as 'any name starting so')"
        )
    return None


def _mx_addresses(name: str, raw: Any, errs: _Collector) -> tuple[IPAddress, ...]:
    if raw is None:
        errs.add(name, "missing: give the mail server's address for this MX (IPv4, IPv6 or both)")
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or len(items) > LIST_ABSURD:
        errs.add(name, "must be an address or a list of one IPv4 and/or one IPv6 address")
        return ()
    addresses: list[IPAddress] = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]" if not isinstance(raw, str) else name
        try:
            address = parse_address(item)
        except ValueError as exc:
            errs.add(where, str(exc))
            continue
        if _unusable(address):
            errs.add(where, f"{address} cannot be a mail server's address")
            continue
        if any(a.version == address.version for a in addresses):
            errs.add(where, f"a second IPv{address.version} address; give one per family")
            continue
        addresses.append(address)
    return tuple(addresses)


def parse_address(item: Any) -> IPAddress:
    """One address as an admin writes it, in the one form the kernel writes it back."""
    text = item.strip() if isinstance(item, str) else None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {shown(item)}") from None
    problem = _form_problem(text, address)
    if problem:
        raise ValueError(problem)
    return address


def _form_problem(text: str, address: IPAddress) -> str | None:
    """Why `address` would not be what we compare with the kernel: a scope id (the kernel
    keeps none, so sets and rules would never match what we put in), an IPv4 address in
    IPv6 clothing (the kernel and inet_ntop print it dotted, ipaddress in hex), or any
    other form whose kernel text differs from ours."""
    text = _bounded(text, 100)
    # ip_interface() keeps the scope id in its own text but drops it from .ip: look at ours.
    if address.version == 6 and "%" in text:
        bare, _, scope = text.partition("%")
        return (
            f"{text}: an IPv6 scope id ('%{scope.split('/', 1)[0]}') is not allowed here;"
            f" write the address without it ({bare})"
        )
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"{text} is an IPv4-mapped IPv6 address: write the IPv4 address {address.ipv4_mapped} instead"
    if isinstance(address, ipaddress.IPv6Address) and int(address) >> 32 == 0 and int(address) >> 16:
        v4 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return f"{text} is an IPv4-compatible IPv6 address (deprecated): write the IPv4 address {v4} instead"
    if address.version == 4:
        return None  # ipaddress refuses leading zeros and other forms inet_pton would read otherwise
    ours = str(address)
    try:
        kernels = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ours))
    except OSError:
        kernels = "(nothing)"
    if kernels != ours:
        return f"{text}: the kernel would write this address as {kernels}, not {ours}: use another address"
    return None


def _unusable(address: IPAddress) -> bool:
    """Addresses no sender on the Internet can reach a mail server at."""
    broadcast = address == ipaddress.IPv4Address("255.255.255.255")
    return address.is_multicast or address.is_unspecified or address.is_loopback or address.is_link_local or broadcast


def _check_mx_pair(mx1: tuple[IPAddress, ...], mx2: tuple[IPAddress, ...], errs: _Collector) -> None:
    for address in set(mx1) & set(mx2):
        errs.add("mx2", f"{address} is also mx1: the two MX records need two different addresses")
    if not mx1 or not mx2:
        return
    families1 = {a.version for a in mx1}
    families2 = {a.version for a in mx2}
    # A sender of the family that only one MX has would knock on nothing or be refused for good.
    for family in sorted(families1 - families2):
        errs.add("mx2", f"mx1 has an IPv{family} address but mx2 has none: give both or neither")
    for family in sorted(families2 - families1):
        errs.add("mx1", f"mx2 has an IPv{family} address but mx1 has none: give both or neither")


def _int_in_range(name: str, raw: Any, low: int, high: int, errs: _Collector) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        errs.add(name, f"must be a whole number from {low} to {high}, not {shown(raw)}")
        return low
    if not low <= raw <= high:
        errs.add(name, f"must be from {low} to {high}, not {shown(raw)}")
    return raw


def _port(name: str, raw: Any, errs: _Collector) -> int:
    return _int_in_range(name, raw, 1, 65535, errs)


def _knock_ports(raw: Any, smtp_port: int, errs: _Collector) -> tuple[int, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add("knock_ports", f"must be a list of ports, e.g. {list(MAIL_ACCESS_PORTS)}")
        return ()
    if len(raw) > LIST_ABSURD:
        errs.add("knock_ports", "at most 15 ports")
        return ()
    ports: list[int] = []
    for i, item in enumerate(raw):
        before = errs.count
        port = _port(f"knock_ports[{i}]", item, errs)
        if errs.count > before:
            continue
        if port == smtp_port:
            errs.add(f"knock_ports[{i}]", f"{port} is the SMTP port itself")
        elif port in ports:
            errs.add(f"knock_ports[{i}]", f"{port} is listed twice")
        else:
            ports.append(port)
    if len(ports) > 15:  # the multiport match takes at most 15 ports
        errs.add("knock_ports", "at most 15 ports")
    return tuple(ports)


def parse_network(text: Any) -> IPNetwork:
    """An address or network as an admin writes it; host bits set is an error, not a guess."""
    if not isinstance(text, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise ValueError(f"not an address or network: {shown(text)}")
    value = str(text).strip()
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {shown(text)}") from None
        problem = _form_problem(value, loose.network_address)
        raise ValueError(problem or f"{value} has host bits set; did you mean {loose}?") from exc
    problem = _form_problem(value, net.network_address)
    if problem:
        raise ValueError(problem)
    return net


def _networks(name: str, raw: Any, errs: _Collector) -> tuple[IPNetwork, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errs.add(name, "must be a list of addresses or networks")
        return ()
    if len(raw) > MAX_SET_ENTRIES:
        errs.add(name, f"at most {MAX_SET_ENTRIES} entries")
        return ()
    seen: set[IPNetwork] = set()
    networks: list[IPNetwork] = []
    for i, item in enumerate(raw):
        try:
            net = parse_network(item)
        except ValueError as exc:
            errs.add(f"{name}[{i}]", str(exc))
            continue
        if net.prefixlen == 0:
            errs.add(f"{name}[{i}]", f"{net} matches every address")
        elif net in seen:
            errs.add(f"{name}[{i}]", f"{net} is listed twice")
        else:
            seen.add(net)
            networks.append(net)
    return tuple(networks)


def _knock_prefix(raw: Any, errs: _Collector) -> KnockPrefix:
    result = {4: 32, 6: 128}
    if not _section("knock_prefix", raw, set(PREFIX_KEYS), "{ipv4: 32, ipv6: 128}", errs):
        return KnockPrefix()
    for key, (family, longest) in PREFIX_KEYS.items():
        if key in raw:
            # Shorter than /8 or /16 would let one knock open mx2 for a whole provider.
            shortest = 8 if family == 4 else 16
            result[family] = _int_in_range(f"knock_prefix.{key}", raw[key], shortest, longest, errs)
    return KnockPrefix(ipv4=result[4], ipv6=result[6])


def _trust(raw: Any, errs: _Collector) -> Trust:
    if not _section("trust", raw, TRUST_KEYS, "{enabled: true, lifetime: 3110400}", errs):
        return Trust()
    enabled = raw.get("enabled", Trust.enabled)
    if not isinstance(enabled, bool):
        errs.add("trust.enabled", f"must be true or false, not {shown(enabled)}")
        enabled = Trust.enabled
    lifetime = _int_in_range(
        "trust.lifetime", raw.get("lifetime", Trust.lifetime), TRUST_LIFETIME_MIN, TRUST_LIFETIME_MAX, errs
    )
    return Trust(enabled=enabled, lifetime=lifetime)


def _management(raw: Any, mx_addresses: set[IPAddress], errs: _Collector) -> Management | None:
    example = "{address: 192.0.2.5/24, gateway: 192.0.2.1, ssh_keys: ['ssh-ed25519 AAAA... admin']}"
    if not _section("management", raw, MANAGEMENT_KEYS, example, errs):
        return None
    before = errs.count
    addresses = _management_addresses(raw.get("address"), mx_addresses, errs)
    gateways = _management_gateways(raw.get("gateway"), addresses, errs)
    keys_raw = raw.get("ssh_keys") or []
    ssh_keys: list[str] = []
    if not isinstance(keys_raw, list):
        errs.add("management.ssh_keys", "must be a list of public keys, one per line of authorized_keys")
    elif len(keys_raw) > MAX_SSH_KEYS:
        errs.add("management.ssh_keys", f"at most {MAX_SSH_KEYS} keys")
    else:
        for i, item in enumerate(keys_raw):
            try:
                key = parse_ssh_key(item)
            except ValueError as exc:
                errs.add(f"management.ssh_keys[{i}]", str(exc))
                continue
            if key in ssh_keys:
                errs.add(f"management.ssh_keys[{i}]", "this key is listed twice")
            else:
                ssh_keys.append(key)
    allow_raw = raw.get("allow", [])
    if isinstance(allow_raw, list) and len(allow_raw) > MAX_MANAGEMENT_ALLOW:
        allow: tuple[IPNetwork, ...] = ()  # not read one by one: the count alone is the refusal
        errs.add("management.allow", f"at most {MAX_MANAGEMENT_ALLOW} networks")
    else:
        allow = _networks("management.allow", allow_raw, errs)
    for i, net in enumerate(allow):
        if addresses and net.version not in {a.version for a in addresses}:
            errs.add(f"management.allow[{i}]", f"{net} is IPv{net.version} but no management address is")
    for family in sorted({a.version for a in addresses} - {n.version for n in allow} if allow else ()):
        # A list names everyone who may connect: a family left out would be shut for good.
        errs.add(
            "management.allow",
            f"no IPv{family} network, so nobody could reach the IPv{family} management address;"
            f" add one or drop that address",
        )
    metrics = raw.get("metrics", Management.metrics)
    if not isinstance(metrics, bool):
        errs.add("management.metrics", f"must be true or false, not {shown(metrics)}")
    if errs.count > before:
        return None
    return Management(
        addresses=addresses, gateways=gateways, ssh_keys=tuple(ssh_keys), allow=allow, metrics=bool(metrics)
    )


def _one_or_list(name: str, raw: Any, shape: str, errs: _Collector) -> list[tuple[str, Any]]:
    """A single value or a list of them, each with the field name its error should carry."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > LIST_ABSURD:
        errs.add(name, f"must be {shape}")
        return []
    return [(name if isinstance(raw, str) else f"{name}[{i}]", item) for i, item in enumerate(items)]


def _management_addresses(raw: Any, mx_addresses: set[IPAddress], errs: _Collector) -> tuple[IPInterface, ...]:
    name = "management.address"
    if raw is None or raw == []:
        errs.add(name, "missing: give the box's own address with its prefix, e.g. 192.0.2.5/24")
        return ()
    addresses: list[IPInterface] = []
    for where, item in _one_or_list(name, raw, "an address with its prefix, or a list of one per family", errs):
        if not isinstance(item, str):
            errs.add(where, f"not an address with a prefix length: {shown(item)}")
            continue
        text = item.strip()
        if "/" not in text:
            errs.add(where, f"give the prefix length too, e.g. {_bounded(text, 80)}/{64 if ':' in text else 24}")
            continue
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            errs.add(where, f"not an address with a prefix length: {shown(item)}")
            continue
        address, net = interface.ip, interface.network
        problem = _form_problem(text, address)
        # No segment a box sits on is wider than a /8 (16 million IPv4 hosts) or an IPv6
        # /16: a shorter prefix (/0 above all) puts most of the Internet on the box's link,
        # so it would ask the link for every address instead of its gateway.
        shortest = MANAGEMENT_PREFIX_MIN[address.version]
        if problem:
            errs.add(where, problem)
        elif net.prefixlen < shortest:
            errs.add(
                where,
                f"/{net.prefixlen} is too short a prefix: the box would take most of the Internet for its own link;"
                f" give the subnet's own prefix (/{shortest} or longer),"
                f" e.g. {address}/{24 if address.version == 4 else 64}",
            )
        elif _unusable(address):
            errs.add(where, f"{address} cannot be the box's address")
        elif net.num_addresses > 2 and address in (net.network_address, net.broadcast_address) and address.version == 4:
            errs.add(
                where,
                f"{address} is the network's {'first' if address == net.network_address else 'last'} "
                "address, not a host's",
            )
        elif address in mx_addresses:
            errs.add(where, f"{address} is the mail server's (an MX address): the box needs an address of its own")
        elif any(a.version == address.version for a in addresses):
            errs.add(where, f"a second IPv{address.version} address; give one per family")
        else:
            addresses.append(interface)
    return tuple(addresses)


def _management_gateways(raw: Any, addresses: tuple[IPInterface, ...], errs: _Collector) -> tuple[IPAddress, ...]:
    name = "management.gateway"
    if raw is None or raw == []:
        return ()
    gateways: list[IPAddress] = []
    for where, item in _one_or_list(name, raw, "an address, or a list of one IPv4 and/or one IPv6", errs):
        try:
            gateway = parse_address(item)
        except ValueError as exc:
            errs.add(where, str(exc))
            continue
        own = next((a for a in addresses if a.version == gateway.version), None)
        if own is None:
            if addresses:  # without any address the address error says it all
                errs.add(where, f"an IPv{gateway.version} gateway needs an IPv{gateway.version} management address")
        elif gateway == own.ip:
            errs.add(where, f"{gateway} is the box's own address")
        elif gateway not in own.network and not (gateway.version == 6 and gateway.is_link_local):
            errs.add(where, f"{gateway} is not in {own.network}, so the box could not reach it")
        elif any(g.version == gateway.version for g in gateways):
            errs.add(where, f"a second IPv{gateway.version} gateway; give one per family")
        else:
            gateways.append(gateway)
    return tuple(gateways)


def parse_ssh_key(item: Any) -> str:
    """One authorized_keys line ("type base64 [comment]"), checked as sshd would read it."""
    if not isinstance(item, str):
        raise ValueError(f"must be a public key line like 'ssh-ed25519 AAAA... admin', not {shown(item)}")
    if "\n" in item or "\r" in item:
        raise ValueError("one key per entry: this one spans lines")
    odd = next((c for c in item if not (c.isprintable() or c == "\t")), None)
    if odd is not None:
        # sshd reads authorized_keys as bytes up to a newline: a control character or a lone
        # surrogate (a YAML "\ud800" escape) cannot be written there as the admin meant it.
        raise ValueError(f"holds a character that is not printable ({odd!r}): paste the key again as one plain line")
    parts = item.strip().split(None, 2)
    if not parts:
        raise ValueError("empty: paste a public key line like 'ssh-ed25519 AAAA... admin'")
    if parts[0] not in SSH_KEY_TYPES:
        if parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError(f"key type {parts[0]!r} is not accepted (use one of {', '.join(SSH_KEY_TYPES)})")
        raise ValueError(
            "not a public key line: it must start with the key type, e.g. 'ssh-ed25519 AAAA...'"
            " (authorized_keys options are not supported)"
        )
    if len(parts) < 2:
        raise ValueError(f"{parts[0]} without the key itself")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("the key is not valid base64: was it cut while copying?") from None
    # The blob starts with its own type as an SSH string (4-byte length, then the name).
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + length].decode("ascii", "replace") != parts[0] or length < 1:
        raise ValueError(f"the key data is not a {parts[0]} key: was it cut while copying?")
    return " ".join(parts)


def proven_sender(item: Any, families: Iterable[int]) -> IPAddress:
    """An address typed as a proven sender: a single address of a family the mail server has."""
    net = parse_network(item)
    families = tuple(families)
    if net.prefixlen != net.max_prefixlen:
        raise ValueError(f"{net}: proven senders are single addresses")
    if net.version not in families:
        raise ValueError(f"the mail server has no IPv{net.version} address")
    return net.network_address


def edit_networks(config: Config, key: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Config:
    """A new Config with networks added to / removed from `whitelist` or `selective`.
    Every entry is judged; errors name the entry as key[+i] (added) or key[-i] (removed)."""
    if key not in ("whitelist", "selective"):
        raise ConfigError([FieldError(key, "only the whitelist and the selective networks can be edited")])
    wanted = [str(n) for n in getattr(config, key)]
    errors: list[FieldError] = []
    for sign, items in (("+", add), ("-", remove)):
        if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
            errors.append(FieldError(key, f"must be a list of addresses or networks, not {shown(items)}"))
            continue
        for i, item in enumerate(items):
            try:
                net = str(parse_network(item))
            except ValueError as exc:
                errors.append(FieldError(f"{key}[{sign}{i}]", str(exc)))
                continue
            if sign == "+" and net not in wanted:
                wanted.append(net)
            elif sign == "-" and net not in wanted:
                errors.append(FieldError(f"{key}[-{i}]", f"{net} is not in the {key}"))
            elif sign == "-":
                wanted.remove(net)
    if errors:
        raise ConfigError(errors)
    return with_changes(config, **{key: wanted})


def with_changes(config: Config, **changes: Any) -> Config:
    """A new validated Config with some keys replaced (values in the YAML file's shape)."""
    data = config.to_dict()
    data.update(changes)
    return from_dict(data)
