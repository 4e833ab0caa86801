"""The netfilter backend: Ruleset values into the legacy iptables tables via python-iptables.

Each family's filter table, then its raw table, is changed in one libiptc commit each
(atomic in the kernel). Sets are swapped in before the tables; if anything fails
part-way, the sets are swapped back and every table already committed is put back as
it was read before the apply began. Only our chains (MXKNOCK*) and our jump rules in
the built-in chains (FORWARD, INPUT; raw PREROUTING) are touched.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import iptc

from . import ipsets
from .compiler import config_set_names
from .ruleset import CHAIN, COMMENT_PREFIX, TABLE_BASE_CHAINS, FamilyRuleset, Match, Rule, Ruleset

log = logging.getLogger(__name__)

# python-iptables (libiptc) is not thread-safe; the daemon's API threads share this.
_lock = threading.RLock()

# To tell a chain name from a target, python-iptables opens every table (nat, mangle,
# raw, security), and opening a legacy table creates it in the kernel: NAT hooks would
# then run on every bridged connection. We use only filter and raw: say the others are absent.
TABLES = ("filter", "raw")
for _table_class in (iptc.Table, iptc.Table6):
    _table_class.existing_table_names.update({t: False for t in _table_class.ALL if t not in TABLES})


def _reset_keeping_udata(match: iptc.Match) -> None:
    """python-iptables 1.2.0 gives an extension its scratch buffer (udata) from a local
    that is freed when reset() returns: hashlimit parses its rate into that freed memory,
    and its final check sets the table's expiry from it (we saw 771394432 ms, and an IPv6
    commit refused with EINVAL). Keep the buffer alive with the match."""
    _original_reset(match)
    size = getattr(match._module, "udata_size", 0)
    if size > 0:
        buffer = (ctypes.c_ubyte * size)()
        match._udata_buffer = buffer
        match._module.udata = ctypes.cast(ctypes.byref(buffer), ctypes.c_void_p)


_original_reset = iptc.Match.reset
iptc.Match.reset = _reset_keeping_udata

FailureHook = Callable[[str], None]


class ApplyError(RuntimeError):
    """The kernel refused the rules; the previous rules are back in place."""


def _table(family: int, name: str = "filter") -> iptc.Table | iptc.Table6:
    table = iptc.Table(name) if family == 4 else iptc.Table6(name)
    table.autocommit = False
    table.refresh()
    return table


def _argv(key: str, value: str | None) -> str | list[str]:
    """An option's arguments: '--match-set NAME src' takes two, a flag takes none."""
    if value is None:
        return ""
    return value if key == "comment" or " " not in value else value.split(" ")


def to_iptc(rule: Rule, family: int) -> iptc.Rule | iptc.Rule6:
    out = iptc.Rule() if family == 4 else iptc.Rule6()
    if rule.src:
        out.src = rule.src
    if rule.dst:
        out.dst = rule.dst
    if rule.protocol:
        out.protocol = rule.protocol
    if rule.in_interface:
        out.in_interface = rule.in_interface
    for match in rule.all_matches():
        m = out.create_match(match.name)
        for key, value in match.options:
            # set_parameter, not attributes: option names like "name" clash with attributes.
            m.set_parameter(key, _argv(key, value))
        if match.name == "hashlimit":
            _hashlimit_expire(m, dict(match.options))
    target = iptc.Target(out, rule.target)
    for key, value in rule.target_options:
        target.set_parameter(key, _argv(key, value))
    out.target = target
    return out


HASHLIMIT_UNIT_MS = {"sec": 1000, "second": 1000, "min": 60000, "minute": 60000, "hour": 3600000, "day": 86400000}


def _hashlimit_expire(match: iptc.Match, options: dict[str, str | None]) -> None:
    """python-iptables re-parses a match from its printed options just before the commit,
    and hashlimit prints an unset expiry as 0, which the kernel refuses (EINVAL). Set
    hashlimit's own default, one interval of the rate, unless the rule gives one: the
    kernel then holds, and iptables-save prints, exactly what the iptables command makes."""
    if "hashlimit-htable-expire" in options:
        return
    rate = options.get("hashlimit-above") or options.get("hashlimit-upto") or ""
    unit = rate.partition("/")[2]
    if unit in HASHLIMIT_UNIT_MS:
        match.set_parameter("hashlimit-htable-expire", str(HASHLIMIT_UNIT_MS[unit]))


def _address(text: str | None) -> str | None:
    """python-iptables gives '192.0.2.1/255.255.255.255'; 'any' comes back as a /0."""
    if not text:
        return None
    net = ipaddress.ip_network(text, strict=False)
    return None if net.prefixlen == 0 else str(net)


def from_iptc(rule: iptc.Rule, chain: str) -> Rule:
    """Our value type for a kernel rule (counters aside), for verify and snapshots."""
    matches = []
    role = None
    for m in rule.matches:
        params = m.get_all_parameters()
        if m.name == "comment" and params.get("comment", [""])[0].startswith(COMMENT_PREFIX):
            role = params["comment"][0][len(COMMENT_PREFIX) :]
            continue
        matches.append(Match(m.name, tuple((k, " ".join(v) if v else None) for k, v in params.items())))
    target_params = rule.target.get_all_parameters() if rule.target else {}
    protocol = rule.protocol if rule.protocol not in ("ip", "all", "0", "", None) else None
    return Rule(
        chain=chain,
        target=rule.target.name if rule.target else "",
        src=_address(rule.src),
        dst=_address(rule.dst),
        protocol=protocol,
        in_interface=rule.in_interface or None,
        matches=tuple(matches),
        target_options=tuple((k, " ".join(v) if v else None) for k, v in target_params.items()),
        role=role,
    )


@lru_cache(maxsize=4096)
def canonical(rule: Rule, family: int) -> Rule:
    """How the kernel will show a rule we build: ours and theirs compare equal."""
    return from_iptc(to_iptc(rule, family), rule.chain)


def _is_our_jump(rule: iptc.Rule) -> bool:
    """A rule of ours in a built-in chain: it jumps to one of our chains (MXKNOCK*)."""
    return bool(rule.target) and rule.target.name.startswith(CHAIN)


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


@dataclass
class KernelFamily:
    """What the kernel holds of ours in one family, read in one go (filter, and raw apart)."""

    family: int
    rules: tuple[Rule, ...] = ()
    counters: tuple[Counter, ...] = ()
    jumps: int = 0
    raw_rules: tuple[Rule, ...] = ()
    raw_counters: tuple[Counter, ...] = ()
    raw_jumps: int = 0

    def as_ruleset(self) -> FamilyRuleset:
        return FamilyRuleset(family=self.family, rules=self.rules, sets=(), knock_list=None, raw_rules=self.raw_rules)


def _our_chains(table: iptc.Table) -> list[str]:
    # Sorted: the compiler emits MXKNOCK before MXKNOCK-PASS, so reads compare in order.
    return sorted(c.name for c in table.chains if c.name.startswith(CHAIN))


def _read_table(family: int, name: str) -> tuple[tuple[Rule, ...], tuple[Counter, ...], int]:
    """Our rules in one table, their counters, and how many jumps to our chains it has."""
    table = _table(family, name)
    rules: list[Rule] = []
    counters: list[Counter] = []
    jumps = 0
    for base in TABLE_BASE_CHAINS[name]:
        for kernel_rule in iptc.Chain(table, base).rules:
            if _is_our_jump(kernel_rule):
                jumps += 1
                rules.append(from_iptc(kernel_rule, base))
                counters.append(Counter(*kernel_rule.get_counters()))
    for chain in _our_chains(table):
        for kernel_rule in iptc.Chain(table, chain).rules:
            rules.append(from_iptc(kernel_rule, chain))
            counters.append(Counter(*kernel_rule.get_counters()))
    return tuple(rules), tuple(counters), jumps


def read_family(family: int) -> KernelFamily:
    with _lock:
        rules, counters, jumps = _read_table(family, "filter")
        raw_rules, raw_counters, raw_jumps = _read_table(family, "raw")
        return KernelFamily(family, rules, counters, jumps, raw_rules, raw_counters, raw_jumps)


def _write_family(ruleset: FamilyRuleset, before_commit: FailureHook | None, name: str = "filter") -> None:
    """One table of one family in one commit: our chains and our jumps, nothing else."""
    family = ruleset.family
    table = _table(family, name)
    wanted = ruleset.table_rules(name)
    wanted_chains = ruleset.raw_chains if name == "raw" else ruleset.chains
    try:
        existing = _our_chains(table)
        for chain in wanted_chains:
            if chain not in existing:
                table.create_chain(chain)
        base_chains = {base: iptc.Chain(table, base) for base in TABLE_BASE_CHAINS[name]}
        for base in base_chains.values():
            for kernel_rule in base.rules:
                if _is_our_jump(kernel_rule):
                    base.delete_rule(kernel_rule)
        for chain in existing:
            iptc.Chain(table, chain).flush()
        positions = dict.fromkeys(base_chains, 0)
        for rule in wanted:
            if rule.chain in base_chains:
                # Our jumps go first: traffic to the mail server (or the box) is judged by
                # us before any accept-all rule of someone else could wave it through.
                base_chains[rule.chain].insert_rule(to_iptc(rule, family), positions[rule.chain])
                positions[rule.chain] += 1
            else:
                iptc.Chain(table, rule.chain).append_rule(to_iptc(rule, family))
        for chain in existing:
            if chain not in wanted_chains:
                table.delete_chain(chain)
        if before_commit:
            before_commit(f"ipv{family}" + ("" if name == "filter" else f"-{name}"))
        table.commit()
    finally:
        table.refresh()  # drop uncommitted changes; a committed handle needs it too


@dataclass
class Transaction:
    """What has been changed so far, so a failure can put it all back."""

    ips: Any
    previous: dict[int, FamilyRuleset] = field(default_factory=dict)
    committed: list[tuple[int, str]] = field(default_factory=list)  # (family, table)
    swapped: list[ipsets.SwappedSet] = field(default_factory=list)

    def rollback(self) -> None:
        for family, table in reversed(self.committed):
            try:
                _write_family(self.previous[family], None, table)
            except Exception:  # keep going: the sets and the other tables still need it
                log.exception("rollback of IPv%d %s rules failed", family, table)
        for swapped in reversed(self.swapped):
            try:
                swapped.rollback(self.ips)
            except Exception:
                log.exception("rollback of ipset %s failed", swapped.name)

    def commit(self) -> None:
        for swapped in self.swapped:
            swapped.commit(self.ips)


def apply(ruleset: Ruleset, before_commit: FailureHook | None = None, previous: Ruleset | None = None) -> None:
    """Put the ruleset in place, all of it or none of it.

    `previous` is what the caller knows to be in force (rolled back to on failure);
    without it the kernel is read first. `before_commit` is called with a step name
    ("ipv4", "ipv4-raw", "ipv6", "ipv6-raw") just before each table commit; tests raise from it.
    """
    with _lock, ipsets.session() as ips:
        txn = Transaction(ips)
        try:
            for fam in ruleset.families:
                txn.previous[fam.family] = (
                    previous.family(fam.family) if previous else read_family(fam.family).as_ruleset()
                )
            for fam in ruleset.families:
                unchanged = set(previous.family(fam.family).sets) if previous else set()
                for spec in fam.sets:
                    if spec in unchanged:
                        continue  # same name, shape and entries as in force: nothing to swap
                    if spec.keep:
                        ipsets.ensure(ips, spec)
                    else:
                        txn.swapped.append(ipsets.replace(ips, spec))
            for fam in ruleset.families:
                for table in TABLES:
                    if previous is not None and txn.previous[fam.family].table_rules(table) == fam.table_rules(table):
                        continue  # only sets changed (e.g. the whitelist): the table stays as it is
                    _write_family(fam, before_commit, table)
                    txn.committed.append((fam.family, table))
        except Exception as exc:
            txn.rollback()
            detail = exc.args[0] if exc.args else exc
            raise ApplyError(f"the kernel refused the rules ({detail}); the previous rules are back") from exc
        txn.commit()
        _destroy_unused_sets(ips, ruleset)


def _destroy_unused_sets(ips: Any, ruleset: Ruleset) -> None:
    """Config sets the new rules no longer use (no rule names them now that both tables
    are committed). Left behind they would only confuse an admin reading `ipset list`."""
    wanted = {spec.name for fam in ruleset.families for spec in fam.sets}
    for name in config_set_names():
        if name not in wanted:
            try:
                ipsets.destroy(ips, name)
            except Exception:  # harmless if it stays: nothing refers to it
                log.exception("could not remove the unused ipset %s", name)


def verify(ruleset: Ruleset, deep: bool = True) -> list[str]:
    """Read the kernel back and list every difference from the ruleset (empty: all good).

    deep=False checks that the sets exist without reading their members: a dump of a
    large whitelist is slow, and status runs this on every refresh.
    """
    problems: list[str] = []
    with _lock:
        for fam in ruleset.families:
            kernel = read_family(fam.family)
            for table, rules, jumps in (
                ("filter", kernel.rules, kernel.jumps),
                ("raw", kernel.raw_rules, kernel.raw_jumps),
            ):
                wanted = fam.table_rules(table)
                base = TABLE_BASE_CHAINS[table]
                wanted_jumps = sum(1 for rule in wanted if rule.chain in base)
                if jumps != wanted_jumps:
                    where = "/".join(base) + ("" if table == "filter" else f" ({table} table)")
                    problems.append(f"IPv{fam.family}: {jumps} jumps to our chains in {where}, expected {wanted_jumps}")
                if list(rules) != [canonical(rule, fam.family) for rule in wanted]:
                    what = "rules" if table == "filter" else f"{table} table's rules"
                    problems.append(f"IPv{fam.family}: the {what} in the kernel differ from the ruleset")
            for spec in fam.sets:
                if not deep or spec.keep:  # a kept set's members are the kernel's to choose
                    if not ipsets.exists(spec.name):
                        problems.append(f"ipset {spec.name} is missing")
                    continue
                present = ipsets.members(spec.name)
                if present is None:
                    problems.append(f"ipset {spec.name} is missing")
                elif present != set(spec.entries):
                    problems.append(f"ipset {spec.name} holds {len(present)} entries, expected {len(spec.entries)}")
    return problems
