"""An in-memory mxknockd behind the control API's `call` contract.

It validates with the real `appliance.config` and compiles with the real compiler,
and answers in the shapes `appliance.engine` produces, so the console is tested
against the engine's own messages without a kernel.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

from appliance import management
from appliance import status as engine_status
from appliance.compiler import compile_config
from appliance.config import Config, ConfigError, FieldError, edit_networks, parse_yaml, proven_sender
from appliance.control import ControlError

SOCKET = "/run/mxknock/control.sock"
BRIDGE_MAC = "52:54:00:aa:aa:aa"
UNREACHABLE = f"mxknockd is not running (no socket at {SOCKET}): start it with `systemctl start mxknockd`"
TIMEOUT_PROBLEM = "a change was not confirmed in time and was rolled back"

CONFIG_YAML = """\
bridge: {name: br0, outside: eth0, inside: eth1}
mode: unlisting
mx1: [192.0.2.10, 2001:db8::10]
mx2: [192.0.2.20, 2001:db8::20]
window: 4000
whitelist: [198.51.100.7, 203.0.113.0/24]
"""

KNOCKS = {
    "mxknock4-32": [
        {"address": "198.51.100.23", "age": 12.0, "time_left": 3988.0, "hits": 1},
        {"address": "203.0.113.77", "age": 3725.5, "time_left": 274.5, "hits": 3},
        {"address": "192.0.2.200", "age": 4100.0, "time_left": 0.0, "hits": 1},
    ],
    "mxknock6-128": [
        {"address": "2001:db8:beef::25", "age": 95.0, "time_left": 3905.0, "hits": 2},
    ],
}


LIFETIME = 36 * 86400


def proven_senders() -> dict[str, float]:
    """25 IPv4 and 3 IPv6 proven senders (the dashboard's 28), address -> seconds left,
    in the order Engine.trusted lists them (by family, then as the kernel set sorts)."""
    v4 = {f"198.51.100.{10 + i}": LIFETIME - 3600 - i * 97_000.5 for i in range(25)}
    v6 = {f"2001:db8:beef::{i + 1:x}": 7200.0 * (i + 1) for i in range(3)}
    return dict(sorted({**v4, **v6}.items(), key=lambda item: kernel_order(item[0])))


def family_of(address: str) -> int:
    return ip_address(address).version


def kernel_order(address: str) -> tuple[int, str]:
    """Engine.trusted's order: IPv4 first, then by the set's "address/prefix" text."""
    family = family_of(address)
    return family, f"{address}/{32 if family == 4 else 128}"


class EngineRefusal(RuntimeError):
    """What the real engine raises as EngineError (no field names)."""


class FakeDaemon:
    path = SOCKET

    def __init__(self, config_text: str | None = CONFIG_YAML, clock: Callable[[], float] = lambda: 0.0):
        self.clock = clock  # the pending countdown runs on the test's clock
        self.config: Config | None = parse_yaml(config_text) if config_text else None
        self.saved_text = config_text
        self.pending: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.unreachable = False
        self.refusals: list[dict[str, str]] = []  # field errors the "engine" adds beyond the schema
        self.apply_failure: str | None = None  # an EngineError message, e.g. not verified
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # Every counter the engine reports (it grows), some with made-up traffic.
        self.counters = {name: {"ipv4": 0, "ipv6": 0} for name in engine_status.COUNTERS}
        self.counters.update(
            knocks={"ipv4": 1200, "ipv6": 34},
            after_knock={"ipv4": 410, "ipv6": 12},
            whitelisted={"ipv4": 57, "ipv6": 0},
            refused={"ipv4": 8800, "ipv6": 150},
        )
        self.trusted = proven_senders()  # address -> seconds left
        self.trust_enabled = True
        self.knocks = copy.deepcopy(KNOCKS)
        self.capacity = 100
        self.carrier = {"eth0": True, "eth1": True}
        self.filtering = True
        self.dad_failed: set[str] = set()  # management addresses another host on the link has
        self.conntrack_entries = 1234  # mail connections in the bridge's conntrack table

    # ---- the control API ---------------------------------------------------------

    def call(self, command: str, **args: Any) -> Any:
        self.calls.append((command, args))
        if self.unreachable:
            raise ControlError(UNREACHABLE, unreachable=True)
        handler = getattr(self, f"cmd_{command}", None)
        if handler is None:
            raise ControlError(f"unknown command {command!r}")
        try:
            return handler(**args)
        except ConfigError as exc:
            raise ControlError(f"config refused: {exc}", exc.to_json()) from None
        except EngineRefusal as exc:
            raise ControlError(str(exc)) from None

    def commands(self) -> list[str]:
        return [command for command, _ in self.calls]

    def cmd_ping(self) -> dict[str, Any]:
        return {"pong": True}

    def cmd_status(self) -> dict[str, Any]:
        config = self.config
        problems = [] if config else ["no configuration yet: run the console's setup or `mxknock apply FILE`"]
        if config and not self.filtering:
            problems.append("br_netfilter is off: bridged packets would bypass every rule")
        if self.last_error:
            problems.append(self.last_error)
        lists = self.cmd_knocks()["knock_lists"] if config else []
        for kl in lists:
            del kl["knocks"]
        warnings = [
            f"knock list {kl['name']} is full ({kl['entries']}/{kl['capacity']}) and evicting knocks younger "
            f"than the window (oldest {kl['oldest_age']:.0f} s < {kl['window']} s): raise xt_recent "
            "ip_list_tot, shorten the window, or fall back to nolisting"
            for kl in lists
            if kl["evicting"]
        ]
        if config:
            warnings[:0] = management.problems(config.management, self.management_state(config))
        conntrack = self.conntrack() if config else None
        conntrack_problems, conntrack_warnings = engine_status.conntrack_health(conntrack)
        warnings += conntrack_warnings
        problems += conntrack_problems
        return {
            "health": "critical" if problems else "warning" if warnings else "ok",
            "problems": problems,
            "warnings": warnings,
            "config_path": "/etc/mxknock/mxknock.yaml",
            "config": config.to_dict() if config else None,
            "filtering_verified": bool(config) and self.filtering,
            "bridge": self.bridge(config) if config else None,
            "conntrack": conntrack,
            "counters": {
                name: {**per_family, "total": sum(per_family.values())} for name, per_family in self.counters.items()
            },
            "knock_lists": lists,
            "trusted": self.trusted_counts() if config else {"total": 0},
            "management": self.management_status(config),
            "pending": None
            if self.pending is None
            else {"seconds_left": max(0.0, round(self.pending["deadline"] - self.clock(), 1))},
        }

    def bridge(self, config: Config) -> dict[str, Any]:
        ports = [
            {"name": name, "present": True, "enslaved": True, "up": True, "carrier": self.carrier.get(name, True)}
            for name in (config.bridge.outside, config.bridge.inside)
        ]
        return {
            "name": config.bridge.name,
            "present": True,
            "up": True,
            "nf_call_iptables": self.filtering,
            "nf_call_ip6tables": self.filtering,
            "sysctl_iptables": True,
            "sysctl_ip6tables": True,
            "ports": ports,
            "filtering": self.filtering,
            "forwarding": True,
        }

    def conntrack(self) -> dict[str, Any]:
        """As bridge.ConntrackState.to_json()."""
        limit = 262144
        return {
            "entries": self.conntrack_entries,
            "max": limit,
            "timeout_established": 1800,
            "fill": round(self.conntrack_entries / limit, 4),
            "expected_timeout_established": 1800,
        }

    def management_state(self, config: Config) -> management.ManagementState:
        """br0 as the engine would read it back: the configured addresses (with the
        link-local one IPv6 brings), flagged where duplicate address detection failed."""
        wanted = management.wanted_addresses(config.management, BRIDGE_MAC)
        addresses = tuple(
            management.AddressState(str(a), tentative=False, dad_failed=str(a.ip) in self.dad_failed)
            for a in sorted(wanted, key=lambda a: (a.version, str(a)))
        )
        gateways = tuple(str(g) for g in config.management.gateways) if config.management else ()
        return management.ManagementState(addresses, gateways)

    def management_status(self, config: Config | None) -> dict[str, Any] | None:
        """As Engine._management_status: None without a management section."""
        if config is None or config.management is None:
            return None
        return management.report(config.management, self.management_state(config))

    def cmd_knocks(self) -> dict[str, Any]:
        if self.config is None:
            return {"knock_lists": []}
        lists = []
        for family in self.config.families():
            prefix = self.config.knock_prefix[family]
            name = f"mxknock{family}-{prefix}"
            knocks = self.knocks.get(name, [])
            oldest = max((k["age"] for k in knocks), default=None)
            entries = len(knocks)
            lists.append(
                {
                    "name": name,
                    "exists": True,
                    "entries": entries,
                    "live": sum(1 for k in knocks if k["time_left"] > 0),
                    "capacity": self.capacity,
                    "window": self.config.window,
                    "oldest_age": oldest,
                    "evicting": entries >= self.capacity and oldest is not None and oldest < self.config.window,
                    "knocks": [dict(k) for k in knocks],
                }
            )
        return {"knock_lists": lists}

    def cmd_config(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict() if self.config else None,
            "yaml": self.config.to_yaml() if self.config else None,
        }

    def cmd_rules(self) -> dict[str, Any]:
        return {"rules": compile_config(self.config).render() if self.config else ""}

    def cmd_check(self, yaml: str) -> dict[str, Any]:
        return {"valid": True, "config": self.judge(yaml).to_dict()}

    def cmd_apply(self, yaml: str, confirm_within: float | None = None) -> dict[str, Any]:
        config = self.judge(yaml)
        if self.pending is not None:
            raise EngineRefusal("a change is waiting for confirmation: confirm or roll it back first")
        if self.apply_failure:
            raise EngineRefusal(self.apply_failure)
        previous, self.config, self.last_error = self.config, config, None
        if confirm_within:
            self.pending = {"previous": previous, "text": yaml, "deadline": self.clock() + confirm_within}
        else:
            self.saved_text = yaml
        return {"applied": True, "confirm_within": confirm_within}

    def cmd_confirm(self) -> dict[str, Any]:
        if self.pending is None:
            raise EngineRefusal("nothing is waiting for confirmation")
        self.saved_text = self.pending["text"]
        self.pending = None
        return {"confirmed": True}

    def cmd_rollback(self) -> dict[str, Any]:
        if self.pending is None:
            raise EngineRefusal("nothing is waiting for confirmation")
        previous = self.pending["previous"]
        self.pending = None
        if previous is not None:
            self.config, self.last_error = previous, None
        return {"rolled_back": True}

    def cmd_reload(self) -> dict[str, Any]:
        return {"applied": True}

    def cmd_whitelist_add(self, entries: list[str]) -> dict[str, Any]:
        return self.change_whitelist(add=entries)

    def cmd_whitelist_remove(self, entries: list[str]) -> dict[str, Any]:
        return self.change_whitelist(remove=entries)

    def cmd_whitelist_list(self) -> dict[str, Any]:
        return {"whitelist": self.config.to_dict()["whitelist"] if self.config else []}

    def cmd_trusted_list(self) -> dict[str, Any]:
        if self.config is None:
            return {"trusted": [], "enabled": False}
        families = self.config.families()
        entries = [
            {"address": address, "family": f"ipv{family_of(address)}", "time_left": round(left)}
            for address, left in self.trusted.items()
            if family_of(address) in families
        ]
        return {"trusted": entries, "enabled": self.trust_enabled, "lifetime": LIFETIME}

    def cmd_trusted_add(self, entries: list[str]) -> dict[str, Any]:
        return self.change_trusted(add=entries)

    def cmd_trusted_remove(self, entries: list[str]) -> dict[str, Any]:
        return self.change_trusted(remove=entries)

    # ---- what the engine does --------------------------------------------------------

    def trusted_counts(self) -> dict[str, int]:
        v4 = sum(1 for address in self.trusted if family_of(address) == 4)
        return {"ipv4": v4, "ipv6": len(self.trusted) - v4, "total": len(self.trusted)}

    def change_trusted(self, add: list[str] = (), remove: list[str] = ()) -> dict[str, Any]:
        """As Engine.change_trusted: all or nothing, errors named trusted[+i]/[-i], added ones
        get the full lifetime."""
        if self.config is None:
            raise EngineRefusal("no configuration yet: apply one first")
        families = self.config.families()
        parsed, errors = [], []
        for verb, sign, items in (("add", "+", add), ("remove", "-", remove)):
            for i, item in enumerate(items):
                try:
                    address = str(proven_sender(item, families))
                except ValueError as exc:
                    errors.append(FieldError(f"trusted[{sign}{i}]", str(exc)))
                    continue
                if verb == "remove" and address not in self.trusted:
                    errors.append(FieldError(f"trusted[{sign}{i}]", f"{address} is not a proven sender"))
                else:
                    parsed.append((verb, address))
        if errors:
            raise ConfigError(errors)
        for verb, address in parsed:
            if verb == "add":
                self.trusted[address] = float(LIFETIME)
            else:
                del self.trusted[address]
        self.trusted = dict(sorted(self.trusted.items(), key=lambda item: kernel_order(item[0])))
        return self.cmd_trusted_list()

    def judge(self, text: str) -> Config:
        config = parse_yaml(text)  # the real schema: refused input stops here
        if self.refusals:
            raise ConfigError(FieldError(e["field"], e["message"]) for e in self.refusals)
        return config

    def change_whitelist(self, add: list[str] = (), remove: list[str] = ()) -> dict[str, Any]:
        """As Engine.change_list: every entry judged, errors named whitelist[+i] / [-i]."""
        if self.config is None:
            raise EngineRefusal("no configuration yet: apply one first")
        self.config = edit_networks(self.config, "whitelist", add, remove)
        self.saved_text = self.config.to_yaml()
        return {"whitelist": self.config.to_dict()["whitelist"]}

    def time_out(self) -> None:
        """The daemon's confirm timer fires: roll back by itself, as Engine does."""
        assert self.pending is not None, "nothing pending"
        previous = self.pending["previous"]
        self.pending = None
        if previous is not None:
            self.config = previous
        self.last_error = TIMEOUT_PROBLEM
