"""Property-based tests against the real kernel (issue 10, "find the rest yourself"):

- every interface name the config accepts is one the kernel takes, under that very name;
- generated valid configs, applied to a running mxknockd one after another, leave in the
  kernel byte for byte the rules `mxknock rules` prints and the set entries it lists, and
  the bridge forwards (a knock on mx1 opens mx2, in every mode).

Few examples, derandomized: each one costs a kernel round trip (see tests/unit/conftest.py
for the profiles; these tests set their own bounds).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import config
from tests.integration.test_engine_apply import filter_rules, rules_by_family, set_entries
from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.unit.test_fuzz_config import IFNAMES

KERNEL_ROUNDS = settings(
    max_examples=8,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@contextmanager
def scratch_namespace() -> Iterator[str]:
    name = f"mxk{os.getpid()}names"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def kernel_takes(ns: str, name: str) -> bool:
    """Create a bridge named `name` in ns; True if the kernel made one with exactly that name."""
    if "\x00" in name:
        return False  # argv cannot carry it; the kernel would cut the name there
    made = subprocess.run(["ip", "-n", ns, "link", "add", "name", name, "type", "bridge"], capture_output=True)
    if made.returncode != 0:
        return False
    shown = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "type", "bridge"], capture_output=True, text=True)
    names = [link["ifname"] for link in json.loads(shown.stdout)]
    subprocess.run(["ip", "-n", ns, "link", "del", "dev", name], check=False, capture_output=True)
    return names == [name]


NAMES = st.one_of(
    IFNAMES,
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=15),
    st.sampled_from(["all", "default", "a%b", "a%d", "eth+", "!eth0", "lo0", "x" * 15]),
)


def test_accepted_interface_names_are_the_kernels(lab: Lab) -> None:
    """Validation accepts a name only if the kernel takes it as it is (here: 300 names)."""
    accepted = 0
    with scratch_namespace() as ns:

        @settings(max_examples=300, derandomize=True, database=None, deadline=None)
        @given(NAMES)
        def check(name: str) -> None:
            nonlocal accepted
            if config._valid_ifname(name):
                accepted += 1
                assert kernel_takes(ns, name), f"validation accepts {name!r} but the kernel does not take it"

        check()
        for name in ("all", "default", "a%b", "lo"):  # the kernel refuses them: so must we (measured)
            assert not kernel_takes(ns, name) and not config._valid_ifname(name), name
    assert accepted > 50, "the generator must reach names validation accepts"


MODES = st.sampled_from(config.MODES)
V4_NETS = st.sampled_from(["198.51.100.0/24", "203.0.113.0/25", "192.0.2.100", "198.51.100.7", "203.0.113.128/26"])
V6_NETS = st.sampled_from(["2001:db8:b07::/64", "2001:db8::100", "2001:db8:1::/48", "2001:db8:b07::1"])


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(MODES)
    changes: dict[str, Any] = {
        "mode": mode,
        "window": draw(st.integers(30, 86400)),
        "knock_ports": draw(st.lists(st.sampled_from([110, 143, 465, 587, 993, 995]), unique=True, max_size=4)),
        "whitelist": draw(st.lists(st.one_of(V4_NETS, V6_NETS), unique=True, max_size=3)),
        "knock_prefix": {"ipv4": draw(st.integers(8, 32)), "ipv6": draw(st.integers(16, 128))},
        # One lifetime throughout: a changed lifetime is refused by the kernel (see the xfail below).
        "trust": {"enabled": draw(st.booleans()), "lifetime": 3110400},
    }
    # Selective networks that leave out the bot's own address, so that it stays un-whitelisted.
    selective = draw(st.lists(st.sampled_from(["203.0.113.0/24", "2001:db8:b07::/64"]), unique=True, max_size=2))
    changes["selective"] = selective or (["203.0.113.0/24"] if mode == "selective" else [])
    # The knocking bot must not be whitelisted (so the knock is what opens mx2).
    changes["whitelist"] = [n for n in changes["whitelist"] if not n.startswith("192.0.2.") and n != "2001:db8::100"]
    return changes


def test_generated_configs_apply_as_printed_and_forward(lab: Lab, appliance: Appliance) -> None:
    appliance.start()  # no config: the first example's apply puts it in force
    seen: list[str] = []

    @KERNEL_ROUNDS
    @given(valid_configs())
    def check(changes: dict[str, Any]) -> None:
        text = config_text(**changes)
        assert config.parse_yaml(config.parse_yaml(text).to_yaml()) == config.parse_yaml(text)
        printed = appliance.cli("rules", "-", input_text=text)
        assert printed.returncode == 0, printed.stderr
        expected = rules_by_family(printed.stdout)
        assert appliance.client.call("apply", yaml=text)["applied"] is True
        for family in (4, 6):
            kernel = filter_rules(appliance.iptables_save(family))
            assert kernel == expected[family], f"{changes}: IPv{family} kernel rules differ from `mxknock rules`"
        names = {line.split()[1] for line in printed.stdout.splitlines() if line.startswith("create ")}
        assert set_entries(lab.fw_exec(["ipset", "save"]).stdout, names) == set_entries(printed.stdout, names)
        # The bridge forwards: a knock on mx1 (refused or not, per mode) opens mx2.
        for mx1, mx2, bot in ((A.MX1_V4, A.MX2_V4, A.BOT_V4), (A.MX1_V6, A.MX2_V6, A.BOT_V6)):
            lab.connect("bot", bot, mx1, 25)
            assert lab.connect("bot", bot, mx2, 25) == "accepted", f"{changes}: mx2 not reached from {bot}"
        seen.append(changes["mode"])

    check()
    assert len(seen) == 8


@pytest.mark.xfail(
    strict=True,
    reason="found by the fuzzer above: the proven-sender set is kept across applies, but its timeout is "
    "part of its spec, so ipsets.ensure() creates it anew and the kernel answers EEXIST (17); "
    "fix in netfilter/ipsets (not the config's), then drop this mark",
)
def test_changing_trust_lifetime_applies(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(trust={"enabled": True, "lifetime": 60}))
    reply = appliance.client.call("apply", yaml=config_text(trust={"enabled": True, "lifetime": 1689}))
    assert reply["applied"] is True


@pytest.mark.parametrize(
    "tail",
    [b"# caf\xe9\n", b"window: " + b"9" * 4400 + b"\n", b"window: !!int abc\n", b"window: !!timestamp 2001-13-45\n"],
    ids=["latin1", "long-int", "int-tag", "timestamp"],
)
def test_daemon_starts_with_an_unreadable_file_and_says_why(lab: Lab, appliance: Appliance, tail: bytes) -> None:
    """Issue 10, item 1: these crash-looped mxknockd (the error escaped the loader)."""
    appliance.workdir.mkdir(parents=True, exist_ok=True)
    appliance.config_path.write_bytes(config.default_text().encode() + tail)
    appliance.start()
    status = appliance.client.call("status")
    assert status["health"] == "critical"
    assert any("(file)" in problem and "not valid" in problem for problem in status["problems"]), status["problems"]
