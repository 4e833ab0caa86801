"""Issue 10, item 3: proven senders at scale, and the per-prefix cap on earning trust.

- A full saved trust set (262,144) goes back in bulk: the daemon starts and the bridge
  forwards within seconds (one by one, 100,000 took 130 s and systemd gave up).
- Saving and `trusted list` do not hold the control API.
- One prefix (IPv4 /24, IPv6 /48) earns at most TRUST_CAP_PER_HOUR proven senders an hour;
  the rest are let through (they knocked) but earn nothing, and status counts them.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import time

from appliance.compiler import TRUST_CAP_PER_HOUR, TRUST_SET_SIZE
from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.lab.procs import wait_until

WINDOW = 60
LIFETIME = 36 * 86400


def trusted(appliance: Appliance) -> set[str]:
    return {e["address"] for e in appliance.client.call("trusted_list")["trusted"]}


def counters(appliance: Appliance) -> dict[str, dict[str, int]]:
    return appliance.status()["counters"]


def knock_then_mx2(lab: Lab, sources: list[str], mx1: str, mx2: str) -> list[str]:
    """Each source knocks at mx1, then completes a handshake with mx2 (one process, in order)."""
    targets = [t for src in sources for t in ((src, mx1, 25), (src, mx2, 25))]
    return lab.connect_many("bot", targets, timeout=3.0)


def test_one_prefix_earns_at_most_the_cap_and_the_rest_is_counted(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=WINDOW, trust={"enabled": True, "lifetime": LIFETIME}))
    extra = 8
    # One /64 (inside one /48) and one /24: whoever owns them completes real handshakes.
    v6 = lab.add_bot_addresses(TRUST_CAP_PER_HOUR + extra, 6)  # 2001:db8:b07::1 ...
    v4 = lab.add_bot_addresses(TRUST_CAP_PER_HOUR + extra, 4)  # 198.51.100.1 ...
    assert len({ipaddress.ip_network(f"{a}/48", strict=False) for a in v6}) == 1
    assert len({ipaddress.ip_network(f"{a}/24", strict=False) for a in v4}) == 1

    results = knock_then_mx2(lab, v6, A.MX1_V6, A.MX2_V6) + knock_then_mx2(lab, v4, A.MX1_V4, A.MX2_V4)
    # Over the cap or not, every one of them knocked: all are let through to mx2.
    assert results == ["reset", "accepted"] * (2 * (TRUST_CAP_PER_HOUR + extra))
    proven = trusted(appliance)
    assert len(proven & set(v6)) == TRUST_CAP_PER_HOUR, sorted(proven)
    assert len(proven & set(v4)) == TRUST_CAP_PER_HOUR, sorted(proven)
    # Earned in order: the first ones (the burst) are the proven ones.
    assert proven == set(v6[:TRUST_CAP_PER_HOUR]) | set(v4[:TRUST_CAP_PER_HOUR])
    got = counters(appliance)
    assert got["trust_capped"] == {"ipv4": extra, "ipv6": extra, "total": 2 * extra}, got
    assert got["trust_earned"] == {
        "ipv4": TRUST_CAP_PER_HOUR,
        "ipv6": TRUST_CAP_PER_HOUR,
        "total": 2 * TRUST_CAP_PER_HOUR,
    }, got

    # A proven sender of the same prefix comes back (straight to mx2) and refreshes its
    # entry: refreshes take nothing from the cap and are not refused.
    assert lab.connect("bot", v6[0], A.MX2_V6, 25) == "accepted"
    assert counters(appliance)["trust_capped"]["total"] == 2 * extra
    # Another prefix is not affected by this one's cap.
    assert knock_then_mx2(lab, [A.BOT_V6], A.MX1_V6, A.MX2_V6) == ["reset", "accepted"]
    assert knock_then_mx2(lab, [A.BOT_V4], A.MX1_V4, A.MX2_V4) == ["reset", "accepted"]
    assert {A.BOT_V4, A.BOT_V6} <= trusted(appliance)
    # A capped source is not trusted: without a fresh knock mx2 resets it once its window ends.
    assert v4[-1] not in trusted(appliance)

    # The CLI shows the counter with its label; metrics carry it too.
    out = appliance.cli("status")
    assert "trust refused by the per-prefix cap" in out.stdout, out.stdout
    scraped = appliance.cli("metrics")
    assert f'mxknock_connections_total{{kind="trust_capped",family="ipv6"}} {extra}' in scraped.stdout


def slowest_status(appliance: Appliance, seconds: float) -> float:
    slowest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        appliance.client.call("status")
        slowest = max(slowest, time.monotonic() - t0)
    return slowest


def _big_state(path_dir: object, count: int, extra_v4: list[str], extra_v6: list[str]) -> None:
    """A state file with `count` proven senders (IPv6, 2001:db8:5::/64) plus the given ones."""
    now = time.time()
    base = int(ipaddress.IPv6Address("2001:db8:5::"))
    v6 = [str(ipaddress.IPv6Address(base + i)) for i in range(1, count - len(extra_v6) - len(extra_v4) + 1)]
    data = {
        "version": 1,
        "saved_at": now,
        "knocks": {},
        "trusted": {
            "4": [{"address": a, "expires_at": now + 86400} for a in extra_v4],
            # Expiries spread over a day, as a real set's would be.
            "6": [{"address": a, "expires_at": now + 3600 + i % 80000} for i, a in enumerate(v6 + extra_v6)],
        },
    }
    path = path_dir / "state.json"  # type: ignore[operator]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_full_saved_trust_set_restores_within_seconds(lab: Lab, appliance: Appliance) -> None:
    text = config_text(window=WINDOW, trust={"enabled": True, "lifetime": LIFETIME})
    # The baseline: the same start with nothing saved, on the same (shared) machine.
    started = time.monotonic()
    appliance.start(text)
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"  # forwarded (and refused), no knock recorded
    baseline = time.monotonic() - started
    assert appliance.stop(signal.SIGTERM) == 0

    # The set's full size, proven senders of both families.
    _big_state(appliance.state_dir, TRUST_SET_SIZE, [A.SENDER_V4], [A.BOT_V6])
    started = time.monotonic()
    appliance.start()  # answers only once the engine has started (ports open)
    # The bridge forwards and the restored proven senders pass without a knock.
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "accepted"
    forwarding_after = time.monotonic() - started
    print(
        f"forwarding {forwarding_after:.2f} s after start with {TRUST_SET_SIZE} saved proven senders, "
        f"{baseline:.2f} s with none"
    )
    # One by one this took about 6 minutes; the restore's budget before the ports open is 2 s.
    assert forwarding_after < baseline + 5.0
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "reset"  # and the others are still refused
    status = appliance.status()
    assert status["health"] == "ok", status
    assert status["trusted"]["total"] == TRUST_SET_SIZE

    # trusted list: one bulk dump, seconds not minutes.
    t0 = time.monotonic()
    listed = appliance.client.call("trusted_list")["trusted"]
    listing = time.monotonic() - t0
    print(f"trusted list of {len(listed)}: {listing:.2f} s")
    assert len(listed) == TRUST_SET_SIZE
    assert listing < 10.0

    # Saves (every second here) run outside the engine's lock: status answers meanwhile.
    quiet = slowest_status(appliance, 3.0)  # no save due for a minute
    assert appliance.stop(signal.SIGTERM) == 0
    appliance.start(save_interval=1.0)
    saved_before = (appliance.state_dir / "state.json").stat().st_mtime
    slowest = slowest_status(appliance, 8.0)
    wait_until(lambda: (appliance.state_dir / "state.json").stat().st_mtime > saved_before, timeout=10.0, what="a save")
    print(f"slowest status answer during saves of {TRUST_SET_SIZE}: {slowest:.2f} s, {quiet:.2f} s without")
    # Held by the save, status would wait whole saves (14.6 s at 100,000 before, 18.7 s at this
    # size in bench 6); the save's Python work still shares the interpreter with the API's
    # threads, which on a loaded 2-core CI machine cost 1.2 s once (hence 3 s, far from a save).
    assert slowest < quiet + 3.0
    assert appliance.stop(signal.SIGTERM) == 0
    saved = json.loads((appliance.state_dir / "state.json").read_text())
    assert sum(len(v) for v in saved["trusted"].values()) == TRUST_SET_SIZE
