"""Rules as plain immutable data, and their iptables-save / ipset text.

The compiler produces these; the netfilter backend turns them into python-iptables
objects. Keeping them as values lets the compiler be tested without root and lets
`mxknock rules` print exactly what would be applied.
"""

from __future__ import annotations

from dataclasses import dataclass

Options = tuple[tuple[str, str | None], ...]

CHAIN = "MXKNOCK"
PASS_CHAIN = "MXKNOCK-PASS"
EARN_CHAIN = "MXKNOCK-EARN"
INPUT_CHAIN = "MXKNOCK-INPUT"  # the box's own management services
# Built-in chains we put one jump rule each into; in this order before our own chains.
BASE_CHAINS = ("FORWARD", "INPUT")
COMMENT_PREFIX = "mxknock:"


@dataclass(frozen=True)
class Match:
    """One `-m name --option value ...` clause; a None value is a bare flag."""

    name: str
    options: Options

    def render(self) -> str:
        return " ".join([f"-m {self.name}", *_render_options(self.options)])


@dataclass(frozen=True)
class Rule:
    chain: str
    target: str
    src: str | None = None
    dst: str | None = None
    protocol: str | None = None
    in_interface: str | None = None
    matches: tuple[Match, ...] = ()
    target_options: Options = ()
    # What the rule's counters mean; carried in the kernel as a comment so status
    # can find the counters again after a restart.
    role: str | None = None

    def all_matches(self) -> tuple[Match, ...]:
        if self.role is None:
            return self.matches
        return (*self.matches, Match("comment", (("comment", COMMENT_PREFIX + self.role),)))

    def render(self) -> str:
        parts = [f"-A {self.chain}"]
        if self.in_interface:
            parts.append(f"-i {self.in_interface}")
        if self.src:
            parts.append(f"-s {self.src}")
        if self.dst:
            parts.append(f"-d {self.dst}")
        if self.protocol:
            parts.append(f"-p {self.protocol}")
        parts.extend(m.render() for m in self.all_matches())
        parts.append(f"-j {self.target}")
        parts.extend(_render_options(self.target_options))
        return " ".join(parts)


@dataclass(frozen=True)
class IPSet:
    """A kernel ipset the rules match against (whitelist, selective networks)."""

    name: str
    family: int
    entries: tuple[str, ...]
    kind: str = "hash:net"
    maxelem: int = 65536
    # A kept set is created if missing and otherwise left alone: the kernel fills it
    # (proven senders) and an apply must not wipe what it learned.
    keep: bool = False
    timeout: int | None = None

    def render(self) -> list[str]:
        family = "inet" if self.family == 4 else "inet6"
        timeout = f" timeout {self.timeout}" if self.timeout else ""
        lines = [f"create {self.name} {self.kind} family {family} maxelem {self.maxelem}{timeout}"]
        if self.keep:
            return [lines[0] + "  # kept across applies, filled by the kernel"]
        lines.extend(f"add {self.name} {entry}" for entry in self.entries)
        return lines


@dataclass(frozen=True)
class FamilyRuleset:
    """Everything mxknock puts into one address family's filter table."""

    family: int
    rules: tuple[Rule, ...]
    sets: tuple[IPSet, ...]
    knock_list: str | None

    @property
    def chains(self) -> tuple[str, ...]:
        """Our chains, in the order their rules appear (the built-in chains are not ours)."""
        return tuple(dict.fromkeys(r.chain for r in self.rules if r.chain not in BASE_CHAINS))

    def chain_rules(self, chain: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.chain == chain)

    def render(self) -> str:
        """iptables-save text of our part of the filter table."""
        lines = ["*filter"]
        lines.extend(f":{chain} - [0:0]" for chain in self.chains)
        lines.extend(rule.render() for rule in self.rules)
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Ruleset:
    families: tuple[FamilyRuleset, ...]

    def family(self, family: int) -> FamilyRuleset:
        return next(f for f in self.families if f.family == family)

    def render(self) -> str:
        out: list[str] = []
        sets = [s for f in self.families for s in f.sets]
        if sets:
            out.append("# ipset (replaced atomically with 'ipset swap')")
            for ipset in sets:
                out.extend(ipset.render())
        for fam in self.families:
            tool = "iptables-save" if fam.family == 4 else "ip6tables-save"
            if not fam.rules:
                out.append(f"# {tool}: no IPv{fam.family} rules (no IPv{fam.family} MX addresses)")
                continue
            what = f"knock list {fam.knock_list}" if fam.knock_list else "management address only"
            out.append(f"# {tool} (IPv{fam.family}, {what})")
            out.append(fam.render().rstrip("\n"))
        return "\n".join(out) + "\n"


def _render_options(options: Options) -> list[str]:
    parts = []
    for key, value in options:
        if value is not None and value.startswith("! "):  # negated: iptables writes "! --key value"
            parts += ["!", f"--{key}", value[2:]]
            continue
        parts.append(f"--{key}")
        if value is not None:
            # iptables-save quotes comments; quoting keeps this text valid input for iptables-restore.
            parts.append(f'"{value}"' if key == "comment" else value)
    return parts
