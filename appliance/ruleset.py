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
RAW_CHAIN = "MXKNOCK-RAW"  # the raw table: what stays out of connection tracking
# Built-in chains we put one jump rule each into; in this order before our own chains.
BASE_CHAINS = ("FORWARD", "INPUT")
RAW_BASE_CHAINS = ("PREROUTING",)
# Per table: the built-in chains our jumps go into (our chains are named MXKNOCK*).
TABLE_BASE_CHAINS = {"filter": BASE_CHAINS, "raw": RAW_BASE_CHAINS}
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
    """Everything mxknock puts into one address family's filter and raw tables."""

    family: int
    rules: tuple[Rule, ...]
    sets: tuple[IPSet, ...]
    knock_list: str | None
    # The raw table (MXKNOCK-RAW): traffic we do not filter is kept out of conntrack.
    raw_rules: tuple[Rule, ...] = ()

    @property
    def chains(self) -> tuple[str, ...]:
        """Our chains, in the order their rules appear (the built-in chains are not ours)."""
        return _chains(self.rules, BASE_CHAINS)

    @property
    def raw_chains(self) -> tuple[str, ...]:
        return _chains(self.raw_rules, RAW_BASE_CHAINS)

    def table_rules(self, table: str) -> tuple[Rule, ...]:
        return self.raw_rules if table == "raw" else self.rules

    def render(self) -> str:
        """iptables-save text of our part of the filter table (and of the raw table)."""
        lines = []
        for table, rules, chains in (("filter", self.rules, self.chains), ("raw", self.raw_rules, self.raw_chains)):
            if not rules:
                continue
            lines.append(f"*{table}")
            lines.extend(f":{chain} - [0:0]" for chain in chains)
            lines.extend(rule.render() for rule in rules)
            lines.append("COMMIT")
        return "\n".join(lines) + "\n"


def _chains(rules: tuple[Rule, ...], base: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.chain for r in rules if r.chain not in base))


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
            if not fam.rules and not fam.raw_rules:
                out.append(f"# {tool}: no IPv{fam.family} rules (no IPv{fam.family} MX addresses)")
                continue
            if fam.knock_list:
                what = f", knock list {fam.knock_list}"
            elif fam.rules:
                what = ", management address only"
            else:
                what = f": no IPv{fam.family} rules in filter, no IPv{fam.family} MX addresses; all of it untracked"
            out.append(f"# {tool} (IPv{fam.family}{what})")
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
