"""Status -> Prometheus text exposition format 0.0.4. Pure: no sockets, no files.

The same text comes from the metrics server (`mxknock-metrics`, port 9425 on the
management address) and from `mxknock metrics` (for node_exporter's textfile
collector). Only the standard library here: the CLI imports this module.

Counters are per address family only; Prometheus sums (`sum without (family)`).
The kernel's rule counters restart at zero when the rules are replaced (an apply, a
reload, a reboot), which Prometheus' rate() treats as a counter reset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "mxknock_"
HEALTH_STATES = ("ok", "warning", "critical")

# What each connection counter means (keys of status.COUNTERS; kept here, not imported,
# so that this module needs nothing but the standard library).
COUNTER_KINDS = {
    "knocks": "knocks recorded (at mx1 or a knock port)",
    "after_knock": "let through to mx2 after a knock",
    "whitelisted": "whitelisted",
    "refused": "refused at mx2 (spam stopped)",
    "open": "let through without a knock",
    "trusted": "let through as proven senders",
    "trust_earned": "handshakes that earned trust",
    "trust_capped": "handshakes that earned no trust: their prefix was over the per-prefix cap",
}

Labels = Mapping[str, Any]


def escape_label(value: Any) -> str:
    r"""A label value inside double quotes: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    r"""HELP text: backslash and newline escaped (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


class Exposition:
    """Metric families in the order they were declared, each with its HELP and TYPE once."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(PREFIX + name, (kind, help_text, []))

    def sample(self, name: str, value: Any, labels: Labels | None = None) -> None:
        full = PREFIX + name
        if full not in self._families:
            raise KeyError(f"metric {full} was not declared")
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{key}="{escape_label(val)}"' for key, val in labels.items()) + "}"
        self._families[full][2].append(f"{full}{label_text} {format_value(value)}")

    def gauge(self, name: str, help_text: str, value: Any = None, labels: Labels | None = None) -> None:
        self.family(name, "gauge", help_text)
        if value is not None:
            self.sample(name, value, labels)

    def render(self) -> str:
        """Families without samples are left out (e.g. the bridge's before there is a config)."""
        lines: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            if not samples:
                continue
            lines.append(f"# HELP {name} {escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def render(status: Mapping[str, Any]) -> str:
    """The status dict of mxknockd (Engine.status()) as Prometheus text."""
    out = Exposition()
    out.gauge("up", "1 if mxknockd answered the status request", 1)
    health = status.get("health")
    out.family("health", "gauge", "health of the appliance: 1 for the current state (ok, warning, critical)")
    for state in HEALTH_STATES:
        out.sample("health", state == health, {"state": state})
    out.gauge(
        "problems", "problems reported (health is critical while there are any)", len(status.get("problems") or ())
    )
    out.gauge("warnings", "warnings reported", len(status.get("warnings") or ()))
    config = status.get("config")
    out.gauge("configured", "1 if mxknockd has a configuration", config is not None)
    out.gauge(
        "filtering_verified",
        "1 if the rules in the kernel match the config and br_netfilter hands bridged packets to them",
        bool(status.get("filtering_verified")),
    )
    _config(out, config)
    _pending(out, status.get("pending"))
    _counters(out, status.get("counters") or {})
    _knock_lists(out, status.get("knock_lists") or ())
    _trusted(out, status.get("trusted") or {})
    _bridge(out, status.get("bridge"))
    _conntrack(out, status.get("conntrack"))
    _management(out, status.get("management"))
    return out.render()


def render_unreachable(message: str) -> str:
    """What to expose when mxknockd cannot be asked: mxknock_up 0 (alert on that)."""
    out = Exposition()
    out.gauge("up", "1 if mxknockd answered the status request", 0)
    # A comment, ignored by parsers, for whoever reads the page by hand.
    reason = " ".join(str(message).split())
    return f"# mxknockd did not answer: {reason}\n" + out.render() if reason else out.render()


def _config(out: Exposition, config: Mapping[str, Any] | None) -> None:
    out.family("mode_info", "gauge", "the configured technique (unlisting, nolisting, ...) and window; always 1")
    out.family("window_seconds", "gauge", "how long a knock keeps mx2 open for its source")
    if not config:
        return
    out.sample("mode_info", 1, {"mode": config.get("mode", ""), "window": config.get("window", "")})
    if isinstance(config.get("window"), (int, float)):
        out.sample("window_seconds", config["window"])


def _pending(out: Exposition, pending: Mapping[str, Any] | None) -> None:
    out.gauge("pending_change", "1 while an applied change waits for `mxknock confirm`", pending is not None)
    seconds = (pending or {}).get("seconds_left", 0) or 0
    out.gauge("pending_change_seconds_left", "seconds until an unconfirmed change rolls back (0: none)", seconds)


def _counters(out: Exposition, counters: Mapping[str, Mapping[str, Any]]) -> None:
    out.family(
        "connections_total",
        "counter",
        "new connections (packets of the rules that see only new connections) by what happened: "
        + "; ".join(f"{kind}: {meaning}" for kind, meaning in COUNTER_KINDS.items()),
    )
    kinds = [k for k in COUNTER_KINDS if k in counters] + sorted(k for k in counters if k not in COUNTER_KINDS)
    for kind in kinds:
        for family, value in sorted(counters[kind].items()):
            if family != "total":  # Prometheus sums the families itself
                out.sample("connections_total", value, {"kind": kind, "family": family})


def _knock_lists(out: Exposition, lists: Iterable[Mapping[str, Any]]) -> None:
    gauges = (
        ("exists", "knock_list_exists", "1 if the kernel has this knock list"),
        ("entries", "knock_list_entries", "sources in the knock list, inside the window or not"),
        ("live", "knock_list_live_entries", "sources whose knock is still inside the window"),
        ("capacity", "knock_list_capacity", "entries the knock list holds before it evicts the oldest"),
        ("oldest_age", "knock_list_oldest_age_seconds", "age of the oldest knock in the list (absent when empty)"),
        ("evicting", "knock_list_evicting", "1 if the list is full and pushes out knocks still inside the window"),
    )
    for _, name, help_text in gauges:
        out.family(name, "gauge", help_text)
    for kl in lists:
        labels = {"list": kl.get("name", "")}
        for key, name, _ in gauges:
            value = kl.get(key)
            if value is not None:
                out.sample(name, value, labels)


def _trusted(out: Exposition, trusted: Mapping[str, Any]) -> None:
    out.family("trusted_senders", "gauge", "proven senders: let through to mx2 without a knock")
    for family in ("ipv4", "ipv6"):
        out.sample("trusted_senders", trusted.get(family, 0) or 0, {"family": family})


def _bridge(out: Exposition, bridge: Mapping[str, Any] | None) -> None:
    flags = (
        ("present", "bridge_present", "1 if the bridge exists"),
        ("up", "bridge_up", "1 if the bridge is up"),
        ("forwarding", "bridge_forwarding", "1 if the bridge and both ports are up and enslaved: mail can pass"),
        ("filtering", "bridge_filtering", "1 if br_netfilter hands the bridged packets to iptables"),
    )
    netfilter = ("nf_call_iptables", "nf_call_ip6tables", "sysctl_iptables", "sysctl_ip6tables")
    ports = (
        ("present", "bridge_port_present", "1 if the port's interface exists"),
        ("enslaved", "bridge_port_enslaved", "1 if the port is in the bridge"),
        ("up", "bridge_port_up", "1 if the port is administratively up"),
        ("carrier", "bridge_port_carrier", "1 if the port has a link (cable plugged, peer up)"),
    )
    for _, name, help_text in flags:
        out.family(name, "gauge", help_text)
    out.family("bridge_netfilter", "gauge", "br_netfilter switches: the bridge's flags and the namespace's sysctls")
    for _, name, help_text in ports:
        out.family(name, "gauge", help_text)
    if not bridge:
        return
    bridge_label = {"bridge": bridge.get("name", "")}
    for key, name, _ in flags:
        if key in bridge:
            out.sample(name, bool(bridge[key]), bridge_label)
    for key in netfilter:
        if key in bridge:
            out.sample("bridge_netfilter", bool(bridge[key]), {**bridge_label, "setting": key})
    for port in bridge.get("ports") or ():
        labels = {**bridge_label, "port": port.get("name", "")}
        for key, name, _ in ports:
            if key in port:
                out.sample(name, bool(port[key]), labels)


def _conntrack(out: Exposition, conntrack: Mapping[str, Any] | None) -> None:
    gauges = (
        ("entries", "conntrack_entries", "connections in the bridge's conntrack table (only mail ports are tracked)"),
        ("max", "conntrack_max", "entries the conntrack table holds; when full, new connections are dropped"),
        (
            "timeout_established",
            "conntrack_tcp_timeout_established_seconds",
            "how long conntrack keeps an idle established connection",
        ),
    )
    for _, name, help_text in gauges:
        out.family(name, "gauge", help_text)
    for key, name, _ in gauges:
        value = (conntrack or {}).get(key)
        if value is not None:
            out.sample(name, value)


def _management(out: Exposition, management: Mapping[str, Any] | None) -> None:
    out.gauge("management_configured", "1 if the box has a management address", management is not None)
    out.family(
        "management_address_usable", "gauge", "addresses on the bridge: 1 if usable (not tentative, not a duplicate)"
    )
    out.family("management_address_tentative", "gauge", "1 while duplicate address detection runs for the address")
    out.family("management_address_dad_failed", "gauge", "1 if another host on the link has the address")
    out.family("management_metrics_enabled", "gauge", "1 if the metrics port is open on the management address")
    out.family("management_ssh_enabled", "gauge", "1 if SSH is open on the management address")
    if not management:
        return
    for entry in management.get("addresses") or ():
        labels = {"address": entry.get("address", "")}
        tentative, failed = bool(entry.get("tentative")), bool(entry.get("dad_failed"))
        out.sample("management_address_usable", not (tentative or failed), labels)
        out.sample("management_address_tentative", tentative, labels)
        out.sample("management_address_dad_failed", failed, labels)
    out.sample("management_metrics_enabled", bool(management.get("metrics")))
    out.sample("management_ssh_enabled", bool(management.get("ssh")))
