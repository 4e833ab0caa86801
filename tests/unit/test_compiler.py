"""The compiler: golden iptables-save text per mode, and properties every ruleset must have.

The golden files are read, never written, by the tests. To rewrite them after an intended
change, run `MXKNOCK_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_compiler.py -k update`
(or `.venv/bin/python -m tests.unit.test_compiler`), then read the diff by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import pytest

from appliance import compiler, config
from appliance.ruleset import CHAIN, EARN_CHAIN, INPUT_CHAIN, PASS_CHAIN, RAW_CHAIN, FamilyRuleset, Match, Rule

GOLDEN_DIR = Path(__file__).parent / "golden"

DUAL: dict[str, Any] = {
    "bridge": {"name": "br0", "outside": "eth0", "inside": "eth1"},
    "mx1": ["192.0.2.10", "2001:db8::10"],
    "mx2": ["192.0.2.20", "2001:db8::20"],
}

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx admin@example.test"

GOLDEN_CONFIGS: dict[str, dict[str, Any]] = {
    "unlisting": {**DUAL, "mode": "unlisting"},
    "unlisting-no-trust": {**DUAL, "mode": "unlisting", "trust": {"enabled": False}},
    "backup-mx-no-trust": {**DUAL, "mode": "backup-mx", "trust": {"enabled": False}},
    "nolisting": {**DUAL, "mode": "nolisting"},
    "backup-mx": {**DUAL, "mode": "backup-mx"},
    "selective": {**DUAL, "mode": "selective", "selective": ["198.51.100.0/24", "2001:db8:bad::/48"]},
    "dual-stack-full": {
        **DUAL,
        "bridge": {"name": "mxbr", "outside": "uplink0", "inside": "mail0"},
        "mode": "unlisting",
        "window": 600,
        "knock_ports": [110, 143, 993, 995],
        "whitelist": ["203.0.113.5", "198.51.100.0/24", "2001:db8:1::/64"],
        "knock_prefix": {"ipv4": 24, "ipv6": 64},
    },
    "management": {
        **DUAL,
        "mode": "unlisting",
        "management": {
            "address": ["192.0.2.5/24", "2001:db8::5/64"],
            "gateway": ["192.0.2.1", "fe80::1"],
            "ssh_keys": [SSH_KEY],
            "allow": ["198.51.100.0/24", "2001:db8:ad::/48"],
        },
    },
    "management-ipv6-only": {
        "mode": "nolisting",
        "mx1": "192.0.2.10",
        "mx2": "192.0.2.20",
        "management": {"address": "2001:db8::5/64", "metrics": True},
    },
    "ipv4-only": {
        "mode": "unlisting",
        "mx1": "192.0.2.10",
        "mx2": "192.0.2.20",
        "smtp_port": 2525,
        "knock_ports": [993],
        "whitelist": ["203.0.113.5"],
    },
}


def chain_rules(fam: FamilyRuleset, chain: str) -> tuple[Rule, ...]:
    """The rules of one chain, filter and raw alike."""
    return tuple(r for r in (*fam.rules, *fam.raw_rules) if r.chain == chain)


def build(name: str) -> config.Config:
    return config.from_dict(copy.deepcopy(GOLDEN_CONFIGS[name]))


def write_golden() -> list[Path]:
    """Rewrite every golden file from the current compiler (run by hand, never by default)."""
    GOLDEN_DIR.mkdir(exist_ok=True)
    written = []
    for name in GOLDEN_CONFIGS:
        path = GOLDEN_DIR / f"{name}.rules"
        path.write_text(compiler.compile_config(build(name)).render())
        written.append(path)
    return written


# ---- golden files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_golden(name: str):
    path = GOLDEN_DIR / f"{name}.rules"
    assert path.exists(), f"missing {path}: generate it with MXKNOCK_UPDATE_GOLDEN=1"
    assert compiler.compile_config(build(name)).render() == path.read_text()


@pytest.mark.skipif(os.environ.get("MXKNOCK_UPDATE_GOLDEN") != "1", reason="set MXKNOCK_UPDATE_GOLDEN=1 to rewrite")
def test_update_golden():
    for path in write_golden():
        assert path.read_text().startswith("# ipset")


# ---- the technique, rule by rule --------------------------------------------------------------

RESET = (("reject-with", "tcp-reset"),)


def chain(name: str, family: int, which: str = CHAIN) -> list[Rule]:
    return list(chain_rules(compiler.compile_config(build(name)).family(family), which))


def roles(rules: list[Rule]) -> list[str | None]:
    return [r.role for r in rules]


def test_unlisting_order():
    assert roles(chain("unlisting", 4)) == [
        None,  # the jump to MXKNOCK-EARN: its SET rule counts what earned trust, not the jump
        "established",
        "whitelist",
        "whitelist",
        "knock",
        "after-knock",
        "trusted",
        "refused",
    ]


def test_unlisting_without_trust_is_the_classic_technique():
    rules = chain("unlisting-no-trust", 4)
    assert roles(rules) == ["established", "whitelist", "whitelist", "knock", "after-knock", "refused"]
    assert rules[4].target == "ACCEPT"  # no pass chain, no mark
    ruleset = compiler.compile_config(build("unlisting-no-trust"))
    assert ruleset.family(4).chains == (CHAIN,)
    assert "CONNMARK" not in ruleset.render() and "mxknock-trust4 src" not in ruleset.render()


def test_unlisting_mx1_records_and_resets_mx2_checks_then_resets():
    rules = {r.role: r for r in chain("unlisting", 6)}
    knock, after, refused = rules["knock"], rules["after-knock"], rules["refused"]
    assert knock.dst == "2001:db8::10/128"
    assert (knock.target, knock.target_options) == ("REJECT", RESET)
    assert "--set --name mxknock6-128" in knock.render()
    assert after.dst == "2001:db8::20/128"
    assert after.target == PASS_CHAIN
    assert "--rcheck --seconds 4000 --name mxknock6-128" in after.render()
    assert refused.dst == "2001:db8::20/128"
    assert (refused.target, refused.target_options) == ("REJECT", RESET)
    assert "--rcheck" not in refused.render() and "mxknock6-128" not in refused.render()


def test_pass_chain_marks_then_accepts():
    rules = chain("unlisting", 4, PASS_CHAIN)
    assert [r.target for r in rules] == ["CONNMARK", "ACCEPT"]
    assert rules[0].target_options == (("set-xmark", compiler.EARNED_MARK),)


def earning(name: str, family: int, **changes: Any) -> tuple[Rule, str]:
    """The rule that recognises an earned handshake, and the text of what it does (the rule
    itself if it is a SET, else the chain it jumps to)."""
    cfg = config.with_changes(build(name), **changes) if changes else build(name)
    fam = compiler.compile_config(cfg).family(family)
    earned = next(r for r in chain_rules(fam, CHAIN) if r.target in ("SET", EARN_CHAIN))
    action = [earned] if earned.target == "SET" else list(chain_rules(fam, earned.target))
    return earned, "\n".join(r.render() for r in action)


def test_trust_is_earned_by_a_marked_handshake_and_checked_before_the_reset():
    rules = chain("unlisting", 4)
    earned, action = earning("unlisting", 4)
    assert earned == rules[0]
    text = earned.render()
    assert f"--mark {compiler.EARNED_MARK}" in text
    assert "--ctstate ESTABLISHED --ctdir ORIGINAL" in text
    assert "--connbytes 2:3 --connbytes-mode packets --connbytes-dir original" in text
    assert "--add-set mxknock-trust4 src --exist --timeout 2147483" in action
    trusted = next(r for r in rules if r.role == "trusted")
    assert trusted.dst == "192.0.2.20/32"
    assert "--match-set mxknock-trust4 src" in trusted.render()
    assert roles(rules).index("trusted") < roles(rules).index("refused")


def test_trust_set_timeout_is_capped_by_ipset():
    _earned, action = earning("unlisting", 6, trust={"enabled": True, "lifetime": 3600})
    assert "--add-set mxknock-trust6 src --exist --timeout 3600" in action
    fam = compiler.compile_config(config.from_dict({**DUAL, "trust": {"lifetime": 3600}})).family(4)
    trust = next(s for s in fam.sets if s.name == "mxknock-trust4")
    assert (trust.timeout, trust.keep, trust.kind) == (3600, True, "hash:ip")
    long = compiler.compile_config(build("unlisting")).family(4)
    assert next(s for s in long.sets if s.name == "mxknock-trust4").timeout == compiler.IPSET_MAX_TIMEOUT


def test_backup_mx_accepts_at_mx1_but_still_records():
    knock = next(r for r in chain("backup-mx", 4) if r.role == "knock")
    assert knock.target == PASS_CHAIN  # accepted (and marked), not reset
    assert knock.target_options == ()
    assert "--set --name mxknock4-32" in knock.render()
    assert roles(chain("backup-mx", 4))[-3:] == ["after-knock", "trusted", "refused"]
    no_trust = next(r for r in chain("backup-mx-no-trust", 4) if r.role == "knock")
    assert (no_trust.target, no_trust.target_options) == ("ACCEPT", ())


def test_nolisting_resets_mx1_and_opens_mx2():
    rules = chain("nolisting", 4)
    assert roles(rules) == ["established", "whitelist", "whitelist", "knock", "open"]
    assert (rules[3].target, rules[3].target_options) == ("REJECT", RESET)
    assert rules[4].dst == "192.0.2.20/32"
    assert rules[4].target == "ACCEPT"
    assert "recent" not in rules[4].render()
    assert chain("nolisting", 4, PASS_CHAIN) == []


def test_selective_selected_sources_get_unlisting_others_open():
    rules = chain("selective", 4)
    assert roles(rules) == [
        None,
        "established",
        "whitelist",
        "whitelist",
        "knock",
        "after-knock",
        "trusted",
        "refused",
        "open",
    ]
    by_role = {r.role: r for r in rules}
    for role in ("after-knock", "trusted", "refused"):
        assert "--match-set mxknock-select4 src" in by_role[role].render(), role
    assert "--rcheck" in by_role["after-knock"].render()
    assert by_role["refused"].target == "REJECT"
    open_ = by_role["open"]
    assert "match-set" not in open_.render() and "recent" not in open_.render()
    assert (open_.dst, open_.target) == ("192.0.2.20/32", "ACCEPT")
    sets = {s.name: s.entries for s in compiler.compile_config(build("selective")).family(6).sets}
    assert sets["mxknock-select6"] == ("2001:db8:bad::/48",)


def test_knock_ports_record_and_return_before_mx1():
    rules = chain("dual-stack-full", 4)
    ports = [r for r in rules if r.role == "knock-port"]
    assert [r.dst for r in ports] == ["192.0.2.10/32", "192.0.2.20/32"]
    for rule in ports:
        assert rule.target == "RETURN"
        assert "--dports 110,143,993,995" in rule.render()
        assert "--set --name mxknock4-24 --mask 255.255.255.0" in rule.render()
    assert roles(rules).index("knock-port") > roles(rules).index("whitelist")
    assert roles(rules).index("knock-port") < roles(rules).index("knock")


def test_no_knock_port_rules_without_knock_ports():
    assert "knock-port" not in roles(chain("unlisting", 4))


def test_jump_rule_uses_the_outside_port():
    ruleset = compiler.compile_config(build("dual-stack-full"))
    for family in (4, 6):
        (jump,) = chain_rules(ruleset.family(family), "FORWARD")
        assert jump.target == CHAIN
        assert "--physdev-in uplink0 --physdev-is-bridged" in jump.render()


def test_smtp_port_is_configurable():
    checked = 0
    for rule in chain("ipv4-only", 4):
        if rule.role in ("whitelist", "knock", "after-knock", "trusted", "refused"):
            assert "--dport 2525 " in rule.render()
            checked += 1
    assert checked == 6
    assert "--dport 25 " not in compiler.compile_config(build("ipv4-only")).render()


def test_whitelist_sets_per_family():
    ruleset = compiler.compile_config(build("dual-stack-full"))
    allow4 = next(s for s in ruleset.family(4).sets if s.name == "mxknock-allow4")
    allow6 = next(s for s in ruleset.family(6).sets if s.name == "mxknock-allow6")
    assert allow4.entries == ("203.0.113.5/32", "198.51.100.0/24")
    assert allow6.entries == ("2001:db8:1::/64",)
    assert allow4.family == 4 and allow6.family == 6


def test_ipv4_only_config_has_no_ipv6_rules():
    ruleset = compiler.compile_config(build("ipv4-only"))
    v6 = ruleset.family(6)
    assert v6.rules == () and v6.sets == () and v6.knock_list is None and v6.chains == ()
    # No IPv6 filter rules; IPv6 is bridged untouched and (raw table) untracked.
    assert [r.target for r in v6.raw_rules] == [RAW_CHAIN, "CT"]
    text = ruleset.render()
    assert "ip6tables-save (IPv6: no IPv6 rules in filter, no IPv6 MX addresses; all of it untracked)" in text
    assert "inet6" not in text
    assert "mxknock6" not in text and "allow6" not in text
    assert ":" not in "".join(re.findall(r"-[sd] (\S+)", text))


# ---- properties over every config ---------------------------------------------------------------


def all_families():
    """Every family that filters mail (a management address alone makes rules, no list)."""
    for name in sorted(GOLDEN_CONFIGS):
        ruleset = compiler.compile_config(build(name))
        for fam in ruleset.families:
            if fam.knock_list:
                yield name, fam


def test_each_family_names_only_its_own_list():
    seen = 0
    for _name, fam in all_families():
        other = 6 if fam.family == 4 else 4
        text = fam.render()
        assert f"mxknock{fam.family}-" in text
        assert f"mxknock{other}-" not in text
        for kind in ("allow", "select", "trust"):
            assert f"mxknock-{kind}{other}" not in text
        seen += 1
    assert seen == 2 * len(GOLDEN_CONFIGS) - 2  # every config's mail is dual-stack but two


# Targets that let the packet go on to the next rule.
NON_TERMINATING = {"SET", "CONNMARK", "MARK", "LOG", "NFLOG"}


def non_terminating(rule: Rule, fam, depth: int = 0) -> bool:
    """True if the rule never decides the packet's fate: a non-terminating target, or a jump
    to one of our chains whose every rule is non-terminating (RETURN there goes back to us)."""
    if rule.target in NON_TERMINATING:
        return True
    if rule.target in fam.chains and rule.target != CHAIN and depth < 5:
        return all(r.target == "RETURN" or non_terminating(r, fam, depth + 1) for r in chain_rules(fam, rule.target))
    return False


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_established_is_first_in_our_chain(name: str):
    """No rule that decides a packet's fate comes before the established accept: only what
    records proven senders may (it must see the handshake's ACK, which is ESTABLISHED)."""
    for fam in compiler.compile_config(build(name)).families:
        if not fam.knock_list:
            continue
        rules = chain_rules(fam, CHAIN)
        at = roles(list(rules)).index("established")
        assert rules[at].target == "ACCEPT"
        assert "--ctstate RELATED,ESTABLISHED" in rules[at].render()
        assert all(non_terminating(r, fam) for r in rules[:at]), [r.render() for r in rules[:at]]
        assert [r.target for r in rules[:at]] in ([], [EARN_CHAIN])
        if not build(name).trust.enabled or build(name).mode == "nolisting":
            assert at == 0


def test_non_terminating_helper_can_fail():
    fam = compiler.compile_config(build("unlisting")).family(4)
    assert not non_terminating(Rule(chain=CHAIN, target="ACCEPT"), fam)
    assert not non_terminating(Rule(chain=CHAIN, target=PASS_CHAIN), fam)  # PASS accepts


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_every_chain_we_jump_to_is_declared_and_ours(name: str):
    builtin = {"ACCEPT", "REJECT", "DROP", "RETURN", *NON_TERMINATING}
    for fam in compiler.compile_config(build(name)).families:
        for rule in fam.rules:
            if rule.target not in builtin:
                assert rule.target in fam.chains, rule.render()
                assert chain_rules(fam, rule.target), f"{rule.target} is empty"
        assert all(c.startswith(CHAIN) for c in fam.chains)
        text = fam.render()
        for declared in fam.chains:
            assert f":{declared} - [0:0]" in text


def recent_masks(fam) -> dict[str, set[str]]:
    """Each xt_recent list a family's rules name, with the masks they name it with."""
    masks: dict[str, set[str]] = {}
    for rule in fam.rules:
        for match in rule.matches:
            if match.name == "recent":
                options = dict(match.options)
                assert "rsource" in options, rule.render()
                masks.setdefault(options["name"], set()).add(options["mask"])
    return masks


def test_one_knock_list_and_one_mask_per_list_per_family():
    """The first rule that creates a list fixes its mask: every rule naming a list must use the
    same one, and the knock list's is the family's knock prefix. Lists are per family."""
    for name, fam in all_families():
        masks = recent_masks(fam)
        assert fam.knock_list in masks
        prefix = build(name).knock_prefix[fam.family]
        network = ipaddress.IPv4Network if fam.family == 4 else ipaddress.IPv6Network
        expected = str(network((0, prefix)).netmask)
        assert masks[fam.knock_list] == {expected}
        for list_name, used in masks.items():
            assert len(used) == 1, (list_name, used)
            assert list_name.startswith(f"mxknock{fam.family}-"), list_name
        knock_rules = [r for r in fam.rules if fam.knock_list in r.render()]
        assert {r.role for r in knock_rules} >= {"knock"}
        if build(name).mode != "nolisting":
            assert "after-knock" in {r.role for r in knock_rules}


def test_recent_mask_helper_sees_a_mismatch():
    fam = compiler.compile_config(build("unlisting")).family(4)
    bad = Rule(
        chain=CHAIN,
        target="ACCEPT",
        matches=(
            Match("recent", (("rcheck", None), ("name", fam.knock_list), ("mask", "255.0.0.0"), ("rsource", None))),
        ),
    )
    assert len(recent_masks(dataclasses.replace(fam, rules=(*fam.rules, bad)))[fam.knock_list]) == 2


@pytest.mark.parametrize(
    ("family", "prefix", "mask"),
    [
        (4, 32, "255.255.255.255"),
        (4, 24, "255.255.255.0"),
        (4, 8, "255.0.0.0"),
        (6, 128, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        (6, 64, "ffff:ffff:ffff:ffff::"),
        (6, 48, "ffff:ffff:ffff::"),
    ],
)
def test_mask_follows_knock_prefix(family: int, prefix: int, mask: str):
    key = f"ipv{family}"
    cfg = config.from_dict({**DUAL, "knock_prefix": {key: prefix}})
    fam = compiler.compile_config(cfg).family(family)
    assert fam.knock_list == f"mxknock{family}-{prefix}"
    assert f"--name mxknock{family}-{prefix} --mask {mask} --rsource" in fam.render()


def test_changing_knock_prefix_changes_the_list_name():
    base = config.from_dict(DUAL)
    wider = config.with_changes(base, knock_prefix={"ipv4": 24, "ipv6": 128})
    before, after = compiler.compile_config(base), compiler.compile_config(wider)
    assert before.family(4).knock_list != after.family(4).knock_list
    assert before.family(6).knock_list == after.family(6).knock_list  # unchanged family keeps its list
    assert compiler.knock_list_name(4, 32) != compiler.knock_list_name(4, 24)
    assert compiler.knock_list_name(4, 32) != compiler.knock_list_name(6, 32)


def test_compile_is_deterministic_and_pure():
    cfg = build("dual-stack-full")
    assert compiler.compile_config(cfg) == compiler.compile_config(cfg)
    assert cfg == build("dual-stack-full")


if __name__ == "__main__":
    for written in write_golden():
        print(f"wrote {written}")


# ---- the management address --------------------------------------------------------------------


def management_config(**management: Any) -> config.Config:
    return config.from_dict({**copy.deepcopy(DUAL), "management": {"address": "192.0.2.5/24", **management}})


def input_rules(cfg: config.Config, family: int = 4) -> list[str]:
    fam = compiler.compile_config(cfg).family(family)
    return [r.render() for r in fam.rules if r.chain in ("INPUT", INPUT_CHAIN)]


def test_no_management_no_input_rules():
    for name in ("unlisting", "ipv4-only", "dual-stack-full"):
        for fam in compiler.compile_config(build(name)).families:
            assert not [r for r in fam.rules if r.chain in ("INPUT", INPUT_CHAIN)], name


def test_management_input_chain_order():
    rules = input_rules(management_config(ssh_keys=[SSH_KEY], metrics=True))
    assert rules == [
        f"-A INPUT -i br0 -j {INPUT_CHAIN}",
        f"-A {INPUT_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {INPUT_CHAIN} -p icmp -j ACCEPT",
        f'-A {INPUT_CHAIN} -p tcp -m tcp --dport 22 -m comment --comment "mxknock:management-ssh" -j ACCEPT',
        f'-A {INPUT_CHAIN} -p tcp -m tcp --dport 9425 -m comment --comment "mxknock:management-metrics" -j ACCEPT',
        f'-A {INPUT_CHAIN} -m comment --comment "mxknock:management-dropped" -j DROP',
    ]


def test_ssh_only_with_keys_and_metrics_only_when_on():
    rules = "\n".join(input_rules(management_config(metrics=False)))
    assert "--dport 22" not in rules and "--dport 9425" not in rules
    assert rules.endswith("-j DROP")


def test_allow_list_limits_both_services_per_family():
    cfg = management_config(
        address=["192.0.2.5/24", "2001:db8::5/64"],
        ssh_keys=[SSH_KEY],
        allow=["198.51.100.0/24", "2001:db8:ad::/48"],
        metrics=True,
    )
    ruleset = compiler.compile_config(cfg)
    for family in (4, 6):
        services = [r for r in input_rules(cfg, family) if "--dport" in r]
        assert len(services) == 2
        assert all(f"--match-set mxknock-manage{family} src" in r for r in services)
        (allow,) = [s for s in ruleset.family(family).sets if s.name == f"mxknock-manage{family}"]
        assert allow.entries == (("198.51.100.0/24",) if family == 4 else ("2001:db8:ad::/48",))
    assert "-p icmpv6 -j ACCEPT" in "\n".join(input_rules(cfg, 6))


def test_management_family_without_mail_gets_only_input_rules():
    fam = compiler.compile_config(build("management-ipv6-only")).family(6)
    assert fam.knock_list is None
    assert {r.chain for r in fam.rules} == {"INPUT", INPUT_CHAIN}
    assert fam.chains == (INPUT_CHAIN,)


def test_management_leaves_the_mail_rules_alone():
    plain = compiler.compile_config(build("unlisting"))
    managed = compiler.compile_config(build("management"))
    for family in (4, 6):
        mail = [r for r in managed.family(family).rules if r.chain not in ("INPUT", INPUT_CHAIN)]
        assert tuple(mail) == plain.family(family).rules


def test_input_jump_is_listed_where_the_kernel_lists_it():
    """Built-in chains first (FORWARD, INPUT), then ours by name: netfilter.read_family's order."""
    fam = compiler.compile_config(build("management")).family(4)
    chains = [r.chain for r in fam.rules]
    assert chains[:2] == ["FORWARD", "INPUT"]
    assert chains[2:] == sorted(chains[2:])


# ---- the raw table: only mail traffic (and the box's own) is tracked -------------------------

NOTRACK = (("notrack", None),)


def raw(name: str, family: int, **changes: Any) -> list[Rule]:
    data = copy.deepcopy(GOLDEN_CONFIGS[name])
    data.update(changes)
    return list(compiler.compile_config(config.from_dict(data)).family(family).raw_rules)


def test_raw_jump_from_prerouting_on_the_bridge_then_mail_flows_then_notrack():
    rules = raw("dual-stack-full", 4)
    assert rules[0] == Rule(chain="PREROUTING", in_interface="mxbr", target=RAW_CHAIN)
    ports = (("dports", "25,110,143,993,995"),)
    replies = (("sports", "25,110,143,993,995"),)
    assert [(r.src, r.dst, r.protocol, r.matches, r.target) for r in rules[1:5]] == [
        (None, "192.0.2.10/32", "tcp", (Match("multiport", ports),), "RETURN"),
        (None, "192.0.2.20/32", "tcp", (Match("multiport", ports),), "RETURN"),
        ("192.0.2.10/32", None, "tcp", (Match("multiport", replies),), "RETURN"),
        ("192.0.2.20/32", None, "tcp", (Match("multiport", replies),), "RETURN"),
    ]
    # Last, for everything else: no conntrack entry (its counter says how much).
    assert rules[-1] == Rule(chain=RAW_CHAIN, target="CT", target_options=NOTRACK, role=compiler.ROLE_UNTRACKED)
    assert len(rules) == 6


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_every_family_untracks_the_rest_last_and_returns_only_before(name: str):
    for fam in compiler.compile_config(build(name)).families:
        rules = fam.raw_rules
        assert rules[0].chain == "PREROUTING" and rules[0].target == RAW_CHAIN
        assert rules[-1].target == "CT" and rules[-1].target_options == NOTRACK and rules[-1].src is None
        assert rules[-1].protocol is None and rules[-1].matches == () and rules[-1].dst is None
        assert all(r.chain == RAW_CHAIN and r.target == "RETURN" for r in rules[1:-1])
        # Every port the filter judges stays tracked: its ESTABLISHED accept and trust need it.
        for rule in fam.rules:
            if rule.chain == CHAIN and rule.dst:
                assert any(r.dst == rule.dst and r.protocol == "tcp" for r in rules[1:-1]), rule.render()


def test_mail_ports_include_the_smtp_port_and_every_knock_port_in_groups_of_15():
    rules = raw("ipv4-only", 4, knock_ports=list(range(1000, 1015)))
    to_mx1 = [r for r in rules if r.dst == "192.0.2.10/32"]
    ports = [m.options[0][1] for r in to_mx1 for m in r.matches]
    assert ports == ["2525," + ",".join(str(p) for p in range(1000, 1014)), "1014"]
    assert len([r for r in rules if r.src == "192.0.2.20/32"]) == 2


def test_management_address_stays_tracked_for_the_replies_input_accepts():
    v4 = raw("management", 4)
    v6 = raw("management", 6)
    assert Rule(chain=RAW_CHAIN, dst="192.0.2.5/32", target="RETURN") in v4
    assert Rule(chain=RAW_CHAIN, dst="2001:db8::5/128", target="RETURN") in v6
    assert Rule(chain=RAW_CHAIN, dst="fe80::/10", target="RETURN") in v6
    assert not any(r.dst and r.dst.startswith("fe80") for r in v4)
    assert not any(r.dst in ("192.0.2.5/32", "2001:db8::5/128") for r in raw("unlisting", 4) + raw("unlisting", 6))


# ---- issue 10: a prefix earns at most TRUST_CAP_PER_HOUR proven senders an hour -------------


@pytest.mark.parametrize(("family", "prefix"), [(4, 24), (6, 48)])
def test_trust_cap_per_prefix_comes_before_the_set_and_counts_what_it_refused(family: int, prefix: int):
    rules = chain("unlisting", family, EARN_CHAIN)
    assert [r.role for r in rules] == ["trust-capped", "trust-earned", None]
    capped, earn, clear = rules
    text = capped.render()
    # Only sources not yet proven take from the cap, and the set match comes first.
    assert text.index(f"! --match-set mxknock-trust{family} src") < text.index("-m hashlimit")
    cap = compiler.TRUST_CAP_PER_HOUR
    assert f"--hashlimit-above {cap}/hour --hashlimit-burst {cap} --hashlimit-mode srcip" in text
    assert f"--hashlimit-srcmask {prefix} " in text
    assert f"--hashlimit-name mxknock-earn{family}" in text
    # Over the cap: the mark is cleared (still let through: it knocked), so nothing is added.
    assert (capped.target, capped.target_options) == ("CONNMARK", (("set-xmark", compiler.CLEAR_MARK),))
    assert earn.target == "SET" and f"--mark {compiler.EARNED_MARK}" in earn.render()
    assert clear.target == "CONNMARK"


def test_hashlimit_names_fit_the_kernel():
    for family in (4, 6):
        capped = chain("unlisting", family, EARN_CHAIN)[0]
        (hashlimit,) = [m for m in capped.matches if m.name == "hashlimit"]
        assert len(dict(hashlimit.options)["hashlimit-name"]) <= 15  # IFNAMSIZ - 1
