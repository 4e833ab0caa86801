"""The config form's model: field texts in, the YAML file's shape out, judged by
`appliance.config` itself so the console shows the engine's own words.

Pure (no Textual): the screens hold the widgets, this holds the meaning.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from appliance import config as cfg

# Form fields in the order they appear; the name is the config key they feed.
EDIT_FIELDS = ("mx1", "mx2", "mode", "window", "knock_ports", "selective")
SETUP_FIELDS = ("outside", "inside", "mx1", "mx2", "mode", "window")
GENERAL = "general"  # errors no field of the form owns

LABELS = {
    "outside": "Outside port",
    "inside": "Inside port",
    "mx1": "MX 10 (mx1)",
    "mx2": "MX 20 (mx2)",
    "mode": "Mode",
    "window": "Window (s)",
    "knock_ports": "Knock ports",
    "selective": "Selective nets",
}
HINTS = {
    "mx1": "IPv4, IPv6 or both, e.g. 192.0.2.10, 2001:db8::10",
    "mx2": "the same families as mx1",
    "window": f"{cfg.WINDOW_MIN}-{cfg.WINDOW_MAX}: how long a knock keeps mx2 open",
    "knock_ports": f"optional, e.g. {', '.join(str(p) for p in cfg.MAIL_ACCESS_PORTS)}",
    "selective": "mode selective: networks that get Unlisting",
}
MODE_HELP = {
    "unlisting": "mx1 always refused, mx2 open after a knock",
    "nolisting": "mx1 refused, mx2 open to all",
    "backup-mx": "mx1 open, and a knock there opens mx2",
    "selective": "Unlisting only for the selective networks",
}


def split(text: str) -> list[str]:
    """Items as an admin types them: separated by commas and/or spaces."""
    return [item for item in re.split(r"[,\s]+", text.strip()) if item]


def _number(item: str) -> int | str:
    # Hand a non-number to the config parser as it is, so it words the error.
    try:
        return int(item)
    except ValueError:
        return item


def texts_from(config: Mapping[str, Any]) -> dict[str, str]:
    """Field texts for an existing config (the YAML shape)."""
    return {
        "outside": config["bridge"]["outside"],
        "inside": config["bridge"]["inside"],
        "mx1": ", ".join(config["mx1"]),
        "mx2": ", ".join(config["mx2"]),
        "mode": config["mode"],
        "window": str(config["window"]),
        "knock_ports": ", ".join(str(p) for p in config["knock_ports"]),
        "selective": ", ".join(config["selective"]),
    }


def setup_base() -> dict[str, Any]:
    """First start: the embedded default's settings, without its (lab) addresses."""
    base = cfg.default().to_dict()
    base["mx1"] = base["mx2"] = None
    return base


def candidate(base: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
    """`base` (YAML shape) with the form's fields put in; keys the form lacks stay."""
    data = dict(base)
    data["bridge"] = dict(base.get("bridge", {}))
    for name, text in texts.items():
        if name in ("outside", "inside"):
            data["bridge"][name] = text.strip()
        elif name in ("mx1", "mx2"):
            data[name] = split(text) or None
        elif name == "mode":
            data["mode"] = text
        elif name == "window":
            data["window"] = _number(text.strip())
        elif name == "knock_ports":
            data["knock_ports"] = [_number(p) for p in split(text)]
        elif name == "selective":
            data["selective"] = split(text)
    return data


def field_of(error_field: str, fields: Iterable[str]) -> str:
    """The form field an error belongs to: mx1[0] -> mx1, bridge.outside -> outside,
    management.gateway[1] -> gateway (on the management form; elsewhere: general)."""
    fields = tuple(fields)
    top, _, rest = error_field.partition(".")
    top = top.split("[", 1)[0]
    if top == "management" and rest:
        # Its keys are the management form's fields; "management" alone is its on/off switch.
        sub = rest.split("[", 1)[0].split(".", 1)[0]
        return sub if sub in fields else GENERAL
    if top == "bridge" and rest in fields:
        return rest
    if top == "bridge" and "inside" in fields:
        return "inside"  # "outside and inside must differ" reads best under the second pick
    return top if top in fields else GENERAL


def group_errors(errors: Iterable[Mapping[str, str]], fields: Iterable[str]) -> dict[str, list[str]]:
    """errors[] as the API sends them ({field, message}), grouped by form field."""
    fields = tuple(fields)
    grouped: dict[str, list[str]] = {}
    for error in errors:
        where = field_of(error["field"], fields)
        message = error["message"]
        if where == GENERAL and error["field"] not in ("", GENERAL):
            message = f"{error['field']}: {message}"
        grouped.setdefault(where, []).append(message)
    return grouped


@dataclass(frozen=True)
class Verdict:
    data: dict[str, Any]
    config: cfg.Config | None
    errors: dict[str, list[str]]

    @property
    def valid(self) -> bool:
        return self.config is not None


def judge(base: Mapping[str, Any], texts: Mapping[str, str], fields: Iterable[str]) -> Verdict:
    data = candidate(base, texts)
    try:
        return Verdict(data, cfg.from_dict(data), {})
    except cfg.ConfigError as exc:
        return Verdict(data, None, group_errors(exc.to_json(), fields))


def to_yaml(data: Mapping[str, Any]) -> str:
    # No folding: an SSH key split over two lines would look cut in the review's diff.
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, width=float("inf"))


def parse_entries(text: str) -> tuple[list[str], list[str]]:
    """Whitelist entries typed in one field: (normalized entries, error messages)."""
    entries, errors = [], []
    for item in split(text):
        try:
            entries.append(str(cfg.parse_network(item)))
        except ValueError as exc:
            errors.append(str(exc))
    return entries, errors


def families(config: Mapping[str, Any] | None) -> tuple[int, ...]:
    """Address families the mail server has (from a config in the YAML shape)."""
    if not config:
        return ()
    return tuple(sorted({ipaddress.ip_address(a).version for a in config.get("mx1") or ()}))


def parse_trusted(text: str, allowed: Iterable[int] = (4, 6)) -> tuple[str | None, list[str]]:
    """One proven sender typed in a field: (the address, error messages), judged as
    Engine.change_trusted judges it (and in its words where it has words for it)."""
    items = split(text)
    if not items:
        return None, []
    if len(items) > 1:
        return None, ["one address at a time"]
    try:
        return str(cfg.proven_sender(items[0], allowed)), []
    except ValueError as exc:
        return None, [str(exc)]
