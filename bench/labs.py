"""Lab pairs: the same namespace topology side by side, one with mxknockd, one with a plain
bridge (and, on request, extra arms).

All labs live for the whole benchmark, so the arms can alternate measurement by
measurement instead of one arm running after the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab import Lab, missing_requirements
from tests.lab.appliance import Appliance, config_text

from .common import in_ns

NETLOAD = Path(__file__).with_name("netload.py")
# Extra arms: an A/A control (a second plain lab: how far two identical labs differ in this
# run) and two that split mxknock's cost into what any filter on a bridge pays.
PLAIN_AGAIN = "plain, second lab (A/A)"
NF_ONLY = "br_netfilter only"  # br_netfilter on, no rules: the bridge-to-IP hooks alone
CONNTRACK_ONLY = "conntrack only"  # plus one stateful rule: conntrack on every packet
STATEFUL_ACCEPT = "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"


@dataclass
class Pair:
    """`filtered`: mxknockd's br0 with its rules; `plain`: an unfiltered br0 (no br_netfilter);
    `extra`: the cost-splitting arms, when asked for."""

    filtered: Lab
    plain: Lab
    appliance: Appliance
    extra: dict[str, Lab] = field(default_factory=dict)

    def labs(self) -> dict[str, Lab]:
        return {"mxknock": self.filtered, "plain": self.plain, **self.extra}


def tables(lab: Lab) -> list[str]:
    """iptables tables that exist in the lab's fw namespace (IPv4, IPv6)."""
    text = lab.fw_exec(["cat", "/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"]).stdout
    return sorted(set(text.split()))


def _extra_arm(lab: Lab, name: str) -> None:
    if name == PLAIN_AGAIN:
        lab.plain_bridge()
        return
    lab.plain_bridge(netfilter=True)
    if name == CONNTRACK_ONLY:
        lab.fw_exec(["iptables-legacy", *STATEFUL_ACCEPT.split()])


def prefix(tag: str) -> str:
    # Unique per run, short enough for namespace names; distinct from the tests' "mxk<pid>".
    return f"mxb{os.getpid() % 100000}{tag}"


@contextmanager
def lab_pair(tag: str, *, split_cost: bool = False, **config: Any) -> Iterator[Pair]:
    """Two labs (five with split_cost); mxknockd runs in the first with the embedded default
    plus `config` changes."""
    problems = missing_requirements()
    if problems:
        raise RuntimeError(f"the lab cannot run here: {'; '.join(problems)}")
    with ExitStack() as stack:
        filtered = stack.enter_context(Lab(prefix(f"{tag}f")))
        plain = stack.enter_context(Lab(prefix(f"{tag}p")))
        appliance = Appliance(filtered.ns("fw"), filtered.workdir / "fw")
        stack.callback(appliance.stop)
        appliance.start(config_text(**config))
        plain.plain_bridge()
        pair = Pair(filtered, plain, appliance)
        if split_cost:
            for i, name in enumerate((PLAIN_AGAIN, NF_ONLY, CONNTRACK_ONLY)):
                pair.extra[name] = stack.enter_context(Lab(prefix(f"{tag}{i}")))
                _extra_arm(pair.extra[name], name)
        yield pair


class Sink:
    """netload.py sink in a lab's mail namespace (the lab's teardown would kill it anyway)."""

    def __init__(self, lab: Lab, addr: str, port: int) -> None:
        argv = in_ns(lab.ns("mail"), [sys.executable, str(NETLOAD), "sink", "--addr", addr, "--port", str(port)])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the sink on {addr}:{port} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
