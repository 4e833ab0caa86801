"""Status: kernel counters, knock lists and bridge state folded into one report.

Pure functions over what the daemon read; the same dict goes to the CLI, the
console and scripts (`mxknock status --json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import compiler

if TYPE_CHECKING:  # the CLI imports this module: keep python-iptables and pyroute2 out of it
    from .bridge import BridgeState
    from .netfilter import KernelFamily
    from .recent import ListReport

# What each counter means for a mail admin, keyed by the rule roles that feed it.
COUNTERS = {
    "knocks": (compiler.ROLE_KNOCK, compiler.ROLE_KNOCK_PORT),
    "after_knock": (compiler.ROLE_AFTER_KNOCK,),
    "whitelisted": (compiler.ROLE_WHITELIST,),
    "refused": (compiler.ROLE_REFUSED,),
    "open": (compiler.ROLE_OPEN,),
    "trusted": (compiler.ROLE_TRUSTED,),
    "trust_earned": (compiler.ROLE_TRUST_EARNED,),
    "trust_capped": (compiler.ROLE_TRUST_CAPPED,),
}
COUNTER_LABELS = {
    "knocks": "knocks recorded",
    "after_knock": "let through after a knock",
    "whitelisted": "whitelisted connections",
    "refused": "refused at mx2 (spam stopped)",
    "open": "let through without a knock",
    "trusted": "let through as proven senders",
    "trust_earned": "handshakes that earned trust",
    "trust_capped": "trust refused by the per-prefix cap",
}

OK, WARNING, CRITICAL = "ok", "warning", "critical"


def human_age(seconds: float | None) -> str:
    """42s, 3m05s, 2h10m, 35d23h: ages and times left as the CLI and the console show them."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"  # proven senders live for weeks


def counters(kernel: list[KernelFamily]) -> dict[str, dict[str, int]]:
    """Packet counts per meaning, per family and in total. Only new connections reach
    these rules (established traffic is accepted first), so packets ~ connection attempts."""
    result: dict[str, dict[str, int]] = {}
    for name, roles in COUNTERS.items():
        per_family = {
            f"ipv{k.family}": sum(c.packets for r, c in zip(k.rules, k.counters, strict=True) if r.role in roles)
            for k in kernel
        }
        result[name] = {**per_family, "total": sum(per_family.values())}
    return result


@dataclass(frozen=True)
class Health:
    level: str
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def list_size_warning(configured: int | None, lists: list[ListReport]) -> str | None:
    """The kernel sizes knock lists when xt_recent loads: a new size waits for a reboot."""
    actual = {r.capacity for r in lists}
    if configured is None or not actual or actual == {configured}:
        return None
    return (
        f"knock lists hold {', '.join(str(a) for a in sorted(actual))} entries; knock_list_size {configured} "
        "takes effect at the next boot (xt_recent sizes its lists when it loads)"
    )


# Conntrack fill (entries / max): warn early, and call it critical before the kernel
# starts dropping new connections at 100 % (mail included).
CONNTRACK_WARNING = 0.80
CONNTRACK_CRITICAL = 0.95


def conntrack_health(conntrack: dict | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Problems and warnings from the conntrack report (bridge.ConntrackState.to_json())."""
    if not conntrack:
        return (), ()
    problems: list[str] = []
    warnings: list[str] = []
    fill, entries, limit = conntrack.get("fill"), conntrack.get("entries"), conntrack.get("max")
    if fill is not None and fill >= CONNTRACK_WARNING:
        text = (
            f"the conntrack table is {fill:.0%} full ({entries}/{limit} entries): when it is full the kernel "
            "drops new connections, mail included; look for a flood of connections to the mail ports"
        )
        (problems if fill >= CONNTRACK_CRITICAL else warnings).append(text)
    timeout, expected = conntrack.get("timeout_established"), conntrack.get("expected_timeout_established")
    if timeout is not None and expected is not None and timeout != expected:
        warnings.append(
            f"conntrack keeps idle established connections {timeout} s, not {expected} s "
            "(net.netfilter.nf_conntrack_tcp_timeout_established): `mxknock reload` sets it again"
        )
    return tuple(problems), tuple(warnings)


def health(
    has_config: bool,
    rule_problems: list[str],
    bridge: BridgeState | None,
    lists: list[ListReport],
    extra_problems: tuple[str, ...] = (),
    extra_warnings: tuple[str, ...] = (),
) -> Health:
    problems: list[str] = []
    warnings: list[str] = list(extra_warnings)
    if not has_config:
        problems.append("no configuration yet: run the console's setup or `mxknock apply FILE`")
    problems.extend(rule_problems)
    if bridge is not None:
        if not bridge.present:
            problems.append(f"bridge {bridge.name} does not exist")
        elif not bridge.filtering:
            problems.append(
                "br_netfilter is off (a bridge flag or a namespace sysctl): bridged packets may bypass the "
                "rules; `mxknock reload` switches it on again"
            )
        elif not bridge.forwarding:
            problems.append(f"bridge {bridge.name} is not forwarding: mail cannot reach the server")
    for report in lists:
        if report.evicting:
            warnings.append(
                f"knock list {report.name} is full ({report.entries}/{report.capacity}) and evicting knocks "
                f"younger than the window (oldest {report.oldest_age:.0f} s < {report.window} s): raise "
                "knock_list_size (at the next boot), shorten the window, or fall back to nolisting"
            )
    problems.extend(p for p in extra_problems if p not in problems)
    level = CRITICAL if problems else WARNING if warnings else OK
    return Health(level, tuple(problems), tuple(warnings))
