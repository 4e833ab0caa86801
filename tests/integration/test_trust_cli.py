"""Issue 6: `mxknock trusted list|add|remove`, good input and bad (exit 2 naming the field).

The good path runs the real `mxknock` process; the battery of bad input calls the same CLI
entry point (appliance.cli.main) in-process, which saves a second of start-up per call.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from appliance import cli
from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text

LIFETIME = 36 * 86400
EXIT_INVALID = 2


Mxknock = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def mxknock(appliance: Appliance, capsys: pytest.CaptureFixture[str]) -> Mxknock:
    """`mxknock ARGS` against the lab's daemon, in-process: (returncode, stdout, stderr)."""

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        code = cli.main(["--socket", str(appliance.socket), *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return call


def trusted(mxknock: Mxknock) -> dict[str, dict[str, object]]:
    out = mxknock("--json", "trusted", "list")
    assert out.returncode == 0, out.stderr
    return {e["address"]: e for e in json.loads(out.stdout)["trusted"]}


def refused(mxknock: Mxknock, *args: str) -> str:
    """Run a CLI command that must be refused as bad input; its stderr."""
    out = mxknock(*args)
    assert out.returncode == EXIT_INVALID, (args, out.returncode, out.stdout, out.stderr)
    return out.stderr


def test_trusted_add_list_remove(lab: Lab, appliance: Appliance, mxknock: Mxknock) -> None:
    appliance.start(config_text(window=60))
    out = appliance.cli("trusted", "list")
    assert out.returncode == 0 and out.stdout.startswith("proven senders: 0 (trust on)"), out

    # Good input: one address per family; the IPv6 one written non-canonically.
    out = appliance.cli("trusted", "add", A.BOT_V4, "2001:0db8:0:0::0200")
    assert out.returncode == 0, out.stderr
    assert "proven senders: 2 (trust on)" in out.stdout
    entries = trusted(mxknock)
    assert set(entries) == {A.BOT_V4, A.BOT_V6}
    assert entries[A.BOT_V4]["family"] == "ipv4" and entries[A.BOT_V6]["family"] == "ipv6"
    assert all(LIFETIME - 30 < e["time_left"] <= LIFETIME for e in entries.values()), entries
    assert appliance.status()["trusted"] == {"ipv4": 1, "ipv6": 1, "total": 2}
    # Added by hand, they pass to mx2 without a knock.
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"
    assert mxknock("trusted", "add", A.BOT_V4).returncode == 0  # again: no error, no duplicate
    assert set(trusted(mxknock)) == {A.BOT_V4, A.BOT_V6}

    # Bad input: exit 2, the field named, and nothing changes (not even the good entries).
    err = refused(mxknock, "trusted", "add", "192.0.2.0/24")
    assert "trusted[+0]" in err and "single addresses" in err
    err = refused(mxknock, "trusted", "add", A.SENDER_V4, "198.51.100.0/24")
    assert "trusted[+1]" in err and "trusted[+0]" not in err
    err = refused(mxknock, "trusted", "add", "not-an-address")
    assert "trusted[+0]" in err
    err = refused(mxknock, "trusted", "add")
    assert "trusted:" in err
    err = refused(mxknock, "trusted", "remove", "192.0.2.201")
    assert "trusted[-0]" in err and "not a proven sender" in err
    err = refused(mxknock, "trusted", "remove", A.BOT_V4, "2001:db8::201")
    assert "trusted[-1]" in err and "not a proven sender" in err
    out = mxknock("--json", "trusted", "add", "192.0.2.0/24")
    assert out.returncode == EXIT_INVALID
    assert json.loads(out.stdout)["errors"][0]["field"] == "trusted[+0]"
    assert set(trusted(mxknock)) == {A.BOT_V4, A.BOT_V6}

    # Remove: gone from the list and from mx2.
    out = appliance.cli("trusted", "remove", A.BOT_V4, A.BOT_V6)
    assert out.returncode == 0, out.stderr
    assert trusted(mxknock) == {}
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "reset"


def test_trusted_add_refuses_a_family_the_mail_server_lacks(appliance: Appliance, mxknock: Mxknock) -> None:
    appliance.start(config_text(mx1=[A.MX1_V4], mx2=[A.MX2_V4]))
    err = refused(mxknock, "trusted", "add", A.BOT_V6)
    assert "trusted[+0]" in err and "IPv6" in err
    assert mxknock("trusted", "add", A.BOT_V4).returncode == 0
    assert set(trusted(mxknock)) == {A.BOT_V4}
