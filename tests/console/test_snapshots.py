"""Every screen at 80x25, as an admin sees it on the Linux console.

Each snapshot is an SVG under __snapshots__/; after a deliberate change to the look,
regenerate with `pytest tests/console/test_snapshots.py --snapshot-update` and look
at the SVGs before committing them. The dashboard and review shots also show the
engine's counter labels and compiled rules: a change there needs an update too.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_textual_snapshot")

from textual.widgets import Input, Select, TextArea

from .conftest import SIZE
from .fake_daemon import FakeDaemon
from .helpers import poll, settle
from .test_management import KEY, MANAGED_YAML


def snap(snap_compare, app, *steps) -> bool:
    """Run `steps` (async callables taking the pilot, or key names) before the shot."""

    async def run_before(pilot) -> None:
        await settle(pilot)
        for step in steps:
            if isinstance(step, str):
                await pilot.press(step)
            else:
                await step(pilot)
            await settle(pilot)

    return snap_compare(app, terminal_size=SIZE, run_before=run_before)


def fill(name: str, text: str):
    async def step(pilot) -> None:
        control = pilot.app.screen.query_one(f"#{name}")
        control.focus()
        if isinstance(control, TextArea):
            control.text = text
        elif isinstance(control, Select | Input):
            control.value = text
        await pilot.pause()

    return step


# ---- dashboard ------------------------------------------------------------------------


def test_dashboard(snap_compare, make_app, daemon, clock):
    async def a_minute_later(pilot) -> None:
        daemon.counters["knocks"]["ipv4"] += 42
        daemon.counters["after_knock"]["ipv4"] += 12
        daemon.counters["refused"]["ipv4"] += 300
        clock.advance(60)
        await poll(pilot)

    assert snap(snap_compare, make_app(), a_minute_later)


def test_dashboard_with_problems_warnings_and_a_pending_change(snap_compare, make_app, daemon, clock):
    daemon.capacity = 3
    daemon.knocks["mxknock4-32"][2]["age"] = 3000.0
    daemon.carrier["eth1"] = False
    daemon.filtering = False
    daemon.pending = {"previous": daemon.config, "text": daemon.config.to_yaml(), "deadline": clock() + 42}
    assert snap(snap_compare, make_app())


def test_dashboard_with_management_and_a_duplicate_address(snap_compare, make_app, daemon):
    daemon.config = FakeDaemon(MANAGED_YAML).config
    daemon.dad_failed.add("2001:db8::5")
    assert snap(snap_compare, make_app())


def test_dashboard_daemon_unreachable(snap_compare, make_app, daemon):
    daemon.unreachable = True
    assert snap(snap_compare, make_app())


# ---- setup, edit, review, countdown ---------------------------------------------------


def test_setup_with_ports_picked_and_a_bad_address(snap_compare, make_app, daemon):
    daemon.config = None
    assert snap(
        snap_compare, make_app(), "o", "down", "i", fill("mx1", "192.0.2.10, 2001:db8::10"), fill("mx2", "192.0.2.20")
    )


def test_edit_with_errors(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "e", fill("window", "0"), fill("knock_ports", "110, 25"), "f2")


def test_review(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "e", fill("window", "3600"), "f2")


def test_countdown(snap_compare, make_app, clock):
    async def later(pilot) -> None:
        clock.advance(17)
        pilot.app.screen.tick()

    assert snap(snap_compare, make_app(), "e", fill("window", "3600"), "f2", "a", later)


def test_countdown_timed_out(snap_compare, make_app, daemon, clock):
    async def time_out(pilot) -> None:
        daemon.time_out()
        clock.advance(61)
        pilot.app.screen.tick()

    assert snap(snap_compare, make_app(), "e", fill("window", "3600"), "f2", "a", time_out)


# ---- management ---------------------------------------------------------------------------


def test_management(snap_compare, make_app, daemon):
    daemon.config = FakeDaemon(MANAGED_YAML).config
    assert snap(snap_compare, make_app(), "m", "tab")


def test_management_off(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "m")


def test_management_switched_on_with_errors(snap_compare, make_app):
    assert snap(
        snap_compare,
        make_app(),
        "m",
        fill("management", "on"),
        fill("address", "192.0.2.5"),
        fill("gateway", "198.51.100.1"),
        fill("ssh_keys", f"{KEY}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL admin"),
        "f2",
    )


# ---- knocks, whitelist, proven senders, help -----------------------------------------


def test_knocks(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "k", "s")


def test_whitelist_with_a_bad_entry(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "w", fill("add", "198.51.100.1/24"))


def test_whitelist_remove_question(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "w", "tab", "d")


def test_proven_senders_with_a_bad_entry(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "t", fill("add", "192.0.2.0/24"))


def test_help(snap_compare, make_app):
    assert snap(snap_compare, make_app(), "f1")
