"""The management form's model: field texts in, the config's `management` section out,
judged by `appliance.config` itself (like `form`, whose Verdict it shares).

Pure (no Textual). Off removes the whole section: the bridge has no address again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from appliance import config as cfg

from . import form

# Form fields in the order they appear. "management" is the on/off switch; the others
# are the section's own keys, so management.gateway[1] lands under "gateway".
FIELDS = ("management", "address", "gateway", "allow", "metrics", "ssh_keys")
ON, OFF = "on", "off"
YES, NO = "yes", "no"

LABELS = {
    "management": "Management",
    "address": "Address",
    "gateway": "Gateway",
    "allow": "Allowed from",
    "metrics": "Metrics",
    "ssh_keys": "SSH keys",
}
HINTS = {
    "address": "with prefix, one per family, e.g. 192.0.2.5/24 2001:db8::5/64",
    "gateway": "optional: a default route per family, e.g. 192.0.2.1",
    "allow": "networks that may reach SSH and metrics; empty: anyone",
    "ssh_keys": "one public key per line, as in authorized_keys; none: no SSH",
}
SWITCH_OPTIONS = (
    ("off  transparent: the bridge has no address", OFF),
    ("on   an address on the bridge for SSH and metrics", ON),
)
METRICS_OPTIONS = (
    (f"yes  Prometheus text on TCP port {cfg.METRICS_PORT}", YES),
    ("no   no metrics", NO),
)
_KEY_FIELD = re.compile(r"management\.ssh_keys\[(\d+)\]")


def key_lines(text: str) -> list[tuple[int, str]]:
    """The keys typed one per line: (line number from 1, key), blank lines skipped.
    Lines split as the TextArea splits them, so the numbers match its gutter."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def texts_from(config: Mapping[str, Any]) -> dict[str, str]:
    """Field texts for a config in the YAML shape, with or without a management section."""
    management = config.get("management")
    if not management:
        return {"management": OFF, "address": "", "gateway": "", "allow": "", "metrics": NO, "ssh_keys": ""}
    return {
        "management": ON,
        "address": ", ".join(management.get("address") or ()),
        "gateway": ", ".join(management.get("gateway") or ()),
        "allow": ", ".join(management.get("allow") or ()),
        "metrics": YES if management.get("metrics", cfg.Management.metrics) else NO,
        "ssh_keys": "\n".join(management.get("ssh_keys") or ()),
    }


def candidate(base: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
    """`base` (YAML shape) with the management section the form describes; off drops it."""
    data = dict(base)
    if texts.get("management", ON) == OFF:
        data.pop("management", None)
        return data
    data["management"] = {
        "address": form.split(texts.get("address", "")),
        "gateway": form.split(texts.get("gateway", "")),
        "ssh_keys": [key for _, key in key_lines(texts.get("ssh_keys", ""))],
        "allow": form.split(texts.get("allow", "")),
        "metrics": texts.get("metrics", NO) == YES,
    }
    return data


def group_errors(errors: Iterable[Mapping[str, str]], texts: Mapping[str, str]) -> dict[str, list[str]]:
    """errors[] by form field, as form.group_errors; a key's error says which line it is
    on, since ssh_keys[i] counts only the lines that hold a key."""
    lines = [number for number, _ in key_lines(texts.get("ssh_keys", ""))]
    located = []
    for error in errors:
        match = _KEY_FIELD.fullmatch(error["field"])
        if match and int(match[1]) < len(lines):
            error = {**error, "message": f"line {lines[int(match[1])]}: {error['message']}"}
        located.append(error)
    return form.group_errors(located, FIELDS)


def judge(base: Mapping[str, Any], texts: Mapping[str, str]) -> form.Verdict:
    data = candidate(base, texts)
    try:
        return form.Verdict(data, cfg.from_dict(data), {})
    except cfg.ConfigError as exc:
        return form.Verdict(data, None, group_errors(exc.to_json(), texts))
