"""Issue 6: Debian's Exim skips mx1 by its retry record and goes straight to mx2.

After mx1 refuses it, Exim writes a host retry record for mx1 (hints database
<spool>/db/retry) and, under Debian's default rule `F,2h,15m; ...`, leaves mx1 alone for
15 minutes: later mails go to mx2 only. Once the last knock has left the window, mx2
refuses them and they wait in the queue for hours, unless the sender became a proven
sender with its first delivery.

The Exim binary is Debian's, unpacked privately (tests/lab/exim.py). Its log lines are
printed (run with -s or -rA to see them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.lab.exim import EximSender, EximUnavailable, fetch

WINDOW = 3  # seconds: short, so the test can wait past it
LIFETIME = 36 * 86400


@pytest.fixture(scope="module")
def exim_root() -> Path:
    try:
        return fetch()
    except EximUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Exim is needed in CI: {exc}")
        pytest.skip(f"Exim unavailable: {exc}")


@pytest.fixture
def exim(lab: Lab, exim_root: Path) -> Iterator[EximSender]:
    sender = EximSender(lab.ns("sender"), lab.workdir / "exim", exim_root).prepare()
    yield sender


def trusted(appliance: Appliance) -> dict[str, float]:
    """Proven senders -> seconds left (the control API behind `mxknock trusted list`)."""
    return {e["address"]: e["time_left"] for e in appliance.client.call("trusted_list")["trusted"]}


def show(title: str, lines: list[str] | str) -> None:
    text = lines if isinstance(lines, str) else "\n".join(lines)
    print(f"\n--- {title} ---\n{text}")


@pytest.mark.parametrize("trust", [False, True], ids=["trust-off", "trust-on"])
def test_exim_skips_mx1_after_the_window(lab: Lab, appliance: Appliance, exim: EximSender, trust: bool) -> None:
    appliance.start(config_text(window=WINDOW, trust={"enabled": trust, "lifetime": LIFETIME}))
    show("exim", exim.version())

    # First mail: mx1 refuses (the knock), Exim falls back to mx2 in the same attempt.
    first = exim.send("exim first")
    first_log = exim.log_for(first)
    show(f"first mail, trust {'on' if trust else 'off'}", first_log)
    assert lab.wait_for_mail("exim first").local == A.MX2_V4
    assert any(f"H=mx1.{A.ZONE} [{A.MX1_V4}]:25 Connection refused" in line for line in first_log)
    assert any(f"=> user@{A.ZONE}" in line and f"[{A.MX2_V4}]:25" in line for line in first_log)
    retry = exim.retry_records()
    show("retry hints after the first mail (exim_dumpdb <spool> retry)", retry)
    assert f"T:mx1.{A.ZONE}:{A.MX1_V4}" in retry  # mx1 is now in its retry time
    assert (A.SENDER_V4 in trusted(appliance)) == trust  # the handshake to mx2 earned trust

    time.sleep(WINDOW + 1.5)  # the first mail's knock is no longer inside the window

    second = exim.send("exim second")
    second_log = exim.log_for(second)
    show(f"second mail after the window, trust {'on' if trust else 'off'}", second_log)
    # The retry record keeps Exim away from mx1: no knock this time.
    assert not any(A.MX1_V4 in line for line in second_log), second_log
    counters = appliance.status()["counters"]
    if trust:
        assert lab.wait_for_mail("exim second").local == A.MX2_V4
        assert any(f"=> user@{A.ZONE}" in line and f"[{A.MX2_V4}]:25" in line for line in second_log)
        assert exim.queue() == []
        assert counters["trusted"]["ipv4"] >= 1
    else:
        assert any(f"H=mx2.{A.ZONE} [{A.MX2_V4}]:25 Connection refused" in line for line in second_log)
        assert any("== user@" in line and "defer (111): Connection refused" in line for line in second_log)
        assert exim.queue() == [second]
        assert counters["refused"]["ipv4"] >= 1
        # Debian's queue runner (`exim -q` every 30 min) is not forced: it respects the
        # retry times, so the message just waits (for hours, under the default rule).
        exim.exim("-q")
        assert exim.queue() == [second]
        assert not any(" => " in line for line in exim.log_for(second))
        show("after an ordinary queue run (-q)", exim.log_for(second))
        show("retry hints after the second mail", exim.retry_records())
        assert "exim second" not in {m.subject for m in lab.received()}
