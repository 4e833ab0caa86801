"""Status: counters per meaning from kernel rule counters, and the health verdict."""

from __future__ import annotations

import dataclasses

import pytest

from appliance import compiler, config, status
from appliance.bridge import BridgeState, PortState
from appliance.netfilter import Counter, KernelFamily
from appliance.recent import ListReport
from appliance.ruleset import Rule


def kernel_family(
    family: int, packets_by_role: dict[str | None, int], cfg: config.Config | None = None
) -> KernelFamily:
    """Our compiled rules as the kernel would hand them back, each with a counter: a rule
    whose role is in `packets_by_role` counts that many packets, every other rule 1000."""
    rules = compiler.compile_config(cfg or config.default()).family(family).rules
    counters = tuple(Counter(packets_by_role.get(r.role, 1000), 60 * packets_by_role.get(r.role, 1000)) for r in rules)
    return KernelFamily(family=family, rules=rules, counters=counters, jumps=1)


def test_counters_sum_per_meaning_and_family():
    v4 = kernel_family(
        4, {"knock": 7, "after-knock": 5, "whitelist": 2, "refused": 40, "trusted": 3, "trust-earned": 4}
    )
    v6 = kernel_family(6, {"knock": 1, "after-knock": 1, "whitelist": 0, "refused": 9, "trusted": 0, "trust-earned": 1})
    result = status.counters([v4, v6])
    assert result["knocks"] == {"ipv4": 7, "ipv6": 1, "total": 8}
    assert result["after_knock"] == {"ipv4": 5, "ipv6": 1, "total": 6}
    # two whitelist rules per family (mx1 and mx2), each counting 2 in IPv4
    assert result["whitelisted"] == {"ipv4": 4, "ipv6": 0, "total": 4}
    assert result["refused"] == {"ipv4": 40, "ipv6": 9, "total": 49}
    assert result["open"] == {"ipv4": 0, "ipv6": 0, "total": 0}  # unlisting has no open rule
    assert result["trusted"] == {"ipv4": 3, "ipv6": 0, "total": 3}
    assert result["trust_earned"] == {"ipv4": 4, "ipv6": 1, "total": 5}


def test_counters_ignore_jump_established_and_unlabelled_rules():
    # Every rule not named below counts 1000: none of them may leak into a counter.
    named = {
        "knock": 0,
        "after-knock": 0,
        "whitelist": 0,
        "refused": 0,
        "trusted": 0,
        "trust-earned": 0,
        "trust-capped": 0,
    }
    result = status.counters([kernel_family(4, named)])
    assert all(v == {"ipv4": 0, "total": 0} for v in result.values()), result


def test_knock_ports_count_as_knocks():
    cfg = config.with_changes(config.default(), knock_ports=[993, 995])
    result = status.counters([kernel_family(4, {"knock": 3, "knock-port": 10}, cfg)])
    assert result["knocks"]["ipv4"] == 3 + 2 * 10  # one knock-port rule per MX address


def test_nolisting_counts_open():
    cfg = config.with_changes(config.default(), mode="nolisting")
    result = status.counters([kernel_family(4, {"open": 12, "knock": 3}, cfg)])
    assert result["open"] == {"ipv4": 12, "total": 12}
    assert result["refused"] == {"ipv4": 0, "total": 0}


def test_counters_with_hand_built_rules():
    rules = (
        Rule(chain="FORWARD", target="MXKNOCK", role="jump"),
        Rule(chain="MXKNOCK", target="REJECT", role="refused"),
        Rule(chain="MXKNOCK", target="REJECT", role="refused"),
        Rule(chain="MXKNOCK", target="ACCEPT", role=None),
    )
    kernel = KernelFamily(6, rules, (Counter(100, 1), Counter(2, 1), Counter(3, 1), Counter(50, 1)))
    assert status.counters([kernel])["refused"] == {"ipv6": 5, "total": 5}


def test_counters_without_rules():
    result = status.counters([KernelFamily(4), KernelFamily(6)])
    assert set(result) == set(status.COUNTERS)
    assert all(v == {"ipv4": 0, "ipv6": 0, "total": 0} for v in result.values())


def test_counters_refuse_mismatched_lengths():
    kernel = KernelFamily(4, (Rule(chain="MXKNOCK", target="ACCEPT", role="open"),), ())
    with pytest.raises(ValueError):
        status.counters([kernel])


def test_every_counter_has_a_label_and_real_roles():
    assert set(status.COUNTER_LABELS) == set(status.COUNTERS)
    known_roles = {getattr(compiler, n) for n in dir(compiler) if n.startswith("ROLE_")}
    for roles in status.COUNTERS.values():
        assert set(roles) <= known_roles


# ---- health ---------------------------------------------------------------------------------


def port(name: str, **changes: bool) -> PortState:
    return dataclasses.replace(PortState(name, present=True, enslaved=True, up=True, carrier=True), **changes)


def good_bridge(**changes) -> BridgeState:
    bridge = BridgeState(
        name="br0",
        present=True,
        up=True,
        nf_call_iptables=True,
        nf_call_ip6tables=True,
        sysctl_iptables=True,
        sysctl_ip6tables=True,
        ports=(port("eth0"), port("eth1")),
    )
    return dataclasses.replace(bridge, **changes)


def knock_list(entries: int, capacity: int = 100, oldest: float | None = 10.0, window: int = 4000) -> ListReport:
    live = entries if oldest is not None and oldest < window else 0
    return ListReport("mxknock4-32", True, entries, capacity, window, oldest, live, ())


def test_health_ok():
    verdict = status.health(True, [], good_bridge(), [knock_list(5)])
    assert verdict == status.Health(status.OK, (), ())


def test_health_warning_when_evicting():
    verdict = status.health(True, [], good_bridge(), [knock_list(100, capacity=100, oldest=3000)])
    assert verdict.level == status.WARNING
    assert verdict.problems == ()
    (warning,) = verdict.warnings
    assert "mxknock4-32" in warning and "100/100" in warning and "evicting" in warning


def test_health_full_list_with_old_entries_is_ok():
    assert status.health(True, [], good_bridge(), [knock_list(100, oldest=4001)]).level == status.OK


def test_health_critical_without_config():
    verdict = status.health(False, [], None, [])
    assert verdict.level == status.CRITICAL
    assert any("no configuration" in p for p in verdict.problems)


def test_health_critical_with_rule_problems():
    verdict = status.health(True, ["IPv4: 0 jump rules to MXKNOCK in FORWARD"], good_bridge(), [])
    assert verdict.level == status.CRITICAL
    assert verdict.problems == ("IPv4: 0 jump rules to MXKNOCK in FORWARD",)


@pytest.mark.parametrize(
    "changes",
    [
        {"nf_call_iptables": False},
        {"nf_call_ip6tables": False},
        {"sysctl_iptables": False},
        {"sysctl_ip6tables": False},
        {"ports": (port("eth0"), port("eth1", enslaved=False))},
    ],
)
def test_health_critical_when_br_netfilter_is_off(changes):
    verdict = status.health(True, [], good_bridge(**changes), [])
    assert verdict.level == status.CRITICAL
    assert any("br_netfilter is off" in p for p in verdict.problems)


@pytest.mark.parametrize("changes", [{"up": False}, {"ports": (port("eth0", up=False), port("eth1"))}])
def test_health_critical_when_not_forwarding(changes):
    verdict = status.health(True, [], good_bridge(**changes), [])
    assert verdict.level == status.CRITICAL
    assert any("not forwarding" in p for p in verdict.problems)


def test_health_critical_when_the_bridge_is_missing():
    verdict = status.health(True, [], good_bridge(present=False), [])
    assert verdict.level == status.CRITICAL
    assert any("does not exist" in p for p in verdict.problems)


def test_health_critical_wins_over_warning():
    verdict = status.health(False, [], None, [knock_list(100, oldest=1)])
    assert verdict.level == status.CRITICAL
    assert len(verdict.warnings) == 1


def test_health_extra_problems_and_warnings():
    verdict = status.health(True, [], good_bridge(), [], extra_warnings=("saved state skipped",))
    assert (verdict.level, verdict.warnings) == (status.WARNING, ("saved state skipped",))
    verdict = status.health(True, ["same"], good_bridge(), [], extra_problems=("same", "other"))
    assert verdict.level == status.CRITICAL
    assert verdict.problems == ("same", "other")  # no duplicates


def test_list_size_warning_only_when_configured_and_different():
    lists = [knock_list(10, capacity=100)]
    assert status.list_size_warning(None, lists) is None
    assert status.list_size_warning(100, lists) is None
    warning = status.list_size_warning(10000, lists)
    assert warning is not None and "next boot" in warning and "10000" in warning
