"""`mxknock check-mx` against the lab's real DNS (dnsmasq serving example.test)."""

from __future__ import annotations

import json
import sys

from tests.lab import MX_MX1_V4_ONLY
from tests.lab.addresses import DNS_V4


def check_mx(lab, *domains: str):
    return lab.exec(
        "sender",
        [sys.executable, "-m", "appliance.cli", "--json", "check-mx", *domains, "--default", "--nameserver", DNS_V4],
        check=False,
    )


def test_correct_mx_pair_passes(lab) -> None:
    result = check_mx(lab, "example.test")
    assert result.returncode == 0, result.stdout + result.stderr
    findings = json.loads(result.stdout)["domains"][0]["findings"]
    assert [f["level"] for f in findings] == ["ok"]


def test_mx1_without_aaaa_is_caught(make_lab) -> None:
    lab = make_lab(mx=MX_MX1_V4_ONLY)
    result = check_mx(lab, "example.test")
    assert result.returncode == 1
    findings = json.loads(result.stdout)["domains"][0]["findings"]
    assert any(f["level"] == "error" and "IPv6" in f["message"] for f in findings), findings
