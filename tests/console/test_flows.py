"""Every console flow, driven by keys through Pilot against the in-memory daemon."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_asyncio")

from textual.widgets import DataTable, Input, Select

from appliance.interfaces import Interface
from tui.screens.dashboard import DashboardScreen
from tui.screens.edit import EditScreen
from tui.screens.help import HelpScreen
from tui.screens.knocks import KnocksScreen
from tui.screens.pending import KEPT, ROLLED_BACK, TIMED_OUT, PendingScreen
from tui.screens.review import ReviewScreen
from tui.screens.setup import SetupScreen
from tui.screens.trusted import TrustedScreen
from tui.screens.whitelist import WhitelistScreen
from tui.widgets.field import FormField

from .conftest import SIZE
from .fake_daemon import CONFIG_YAML, LIFETIME, TIMEOUT_PROBLEM, UNREACHABLE, FakeDaemon
from .helpers import INTERFACES, poll, settle, text_of

pytestmark = pytest.mark.asyncio


def shown(app, selector: str) -> str:
    return text_of(app.screen.query_one(selector))


def footer_keys(app) -> set[str]:
    """Keys the footer offers now (enabled and shown), e.g. {"e", "w", "f1"}."""
    return {
        binding.key
        for (_, binding, enabled, _) in app.active_bindings.values()
        if binding.show and enabled and binding.description
    }


def field(app, name: str) -> FormField:
    return app.screen.query_one(f"#field-{name}", FormField)


async def type_into(pilot, name: str, text: str, keys: bool = False) -> None:
    """Focus a field and put `text` in it: as one change, or key by key (slower,
    about 0.1 s a key in Pilot, so only where typing itself is the point)."""
    control = pilot.app.screen.query_one(f"#{name}", Input)
    control.focus()
    if keys:
        control.value = ""
        await pilot.press(*list(text))
    else:
        control.value = text
    await pilot.pause()


# ---- dashboard ------------------------------------------------------------------------


async def test_dashboard_shows_mode_ports_filtering_counters_and_lists(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert "health OK" in shown(app, "TitleBar")
        summary = shown(app, "#summary")
        assert "mode unlisting" in summary and "window 4000 s" in summary
        assert "mx1 192.0.2.10, 2001:db8::10" in summary
        bridge = shown(app, "#bridge")
        assert "outside eth0 up, link" in bridge and "inside eth1 up, link" in bridge
        assert "filtering in the path: VERIFIED" in bridge and "bridge 1/1  sysctl 1/1" in bridge
        counters = shown(app, "#counters")
        assert "knocks recorded" in counters and "1234" in counters and "8950" in counters
        lists = shown(app, "#knock-lists")
        assert "mxknock4-32" in lists and "3/100" in lists and "2 live" in lists
        assert "proven senders 28" in lists
        assert {"e", "w", "k", "r", "q", "f1"} <= footer_keys(app)
        assert not {"s", "c", "b"} & footer_keys(app)  # no setup, nothing pending


async def test_counters_show_rates_per_minute(make_app, daemon, clock):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        daemon.counters["knocks"]["ipv4"] += 30
        daemon.counters["refused"]["ipv6"] += 90
        clock.advance(30)
        await poll(pilot)
        assert app.snapshot.rates["knocks"] == pytest.approx(60.0)
        assert app.snapshot.rates["refused"] == pytest.approx(180.0)
        rows = {line.split()[0]: line for line in shown(app, "#counters").splitlines() if line.strip()}
        assert rows["knocks"].split()[-1] == "60"
        assert rows["refused"].split()[-1] == "180"


async def test_status_is_polled_live_in_a_worker(make_app, daemon):
    app = make_app(poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        daemon.counters["knocks"]["ipv4"] = 5000
        for _ in range(40):
            await pilot.pause(0.05)
            if "5034" in shown(app, "#counters"):
                break
        assert "5034" in shown(app, "#counters")
        assert daemon.commands().count("status") >= 2


async def test_a_full_knock_list_shows_the_eviction_warning(make_app, daemon):
    daemon.capacity = 3
    daemon.knocks["mxknock4-32"][2]["age"] = 3000.0  # every entry still inside the window
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "EVICTING" in shown(app, "#knock-lists")
        assert "health WARNING" in shown(app, "TitleBar")
        assert "raise xt_recent ip_list_tot" in shown(app, "#messages")


async def test_filtering_not_in_the_path_and_a_port_without_link_are_plain(make_app, daemon):
    daemon.filtering = False
    daemon.carrier["eth1"] = False
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        bridge = shown(app, "#bridge")
        assert "NOT VERIFIED" in bridge and "bridge 0/0" in bridge
        assert "inside eth1 up, no link" in bridge
        assert "br_netfilter is off" in shown(app, "#messages")


async def test_daemon_unreachable_says_what_to_do_and_recovers(make_app, daemon):
    daemon.unreachable = True
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "UNREACHABLE" in shown(app, "TitleBar")
        assert UNREACHABLE in shown(app, "#messages")
        assert "journalctl -u mxknockd" in shown(app, "#messages")
        assert app.screen.has_class("-unreachable")  # no stale numbers
        assert not {"e", "w", "k", "r", "s"} & footer_keys(app)
        daemon.unreachable = False
        await poll(pilot)
        assert "health OK" in shown(app, "TitleBar")
        assert not app.screen.has_class("-unreachable")
        assert "e" in footer_keys(app)


# ---- first start ----------------------------------------------------------------------


async def test_first_start_sets_up_ports_addresses_and_applies(make_app, daemon):
    daemon.config = None
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)  # offered at once, without a key
        table = app.screen.query_one("#interfaces", DataTable)
        assert [table.get_row_at(i)[:3] for i in range(table.row_count)] == [
            ["eth0", "52:54:00:00:00:01", "link"],
            ["eth1", "52:54:00:00:00:02", "link"],
            ["eth2", "52:54:00:00:00:03", "?"],
            ["enp3s0", "52:54:00:00:00:04", "no link"],
        ]
        await pilot.press("o", "down", "i")
        assert [table.get_row_at(i)[4] for i in range(2)] == ["outside", "inside"]
        await type_into(pilot, "mx1", "192.0.2.10, 2001:db8::10", keys=True)
        await type_into(pilot, "mx2", "192.0.2.20 2001:db8::20")
        assert not any(f.errors for f in app.screen.query(FormField))
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        diff = shown(app, "#diff")
        assert "+  outside: eth0" in diff and "+  inside: eth1" in diff
        assert "+-A MXKNOCK -d 192.0.2.10/32" in diff
        await pilot.press("a")
        await settle(pilot)
        args = next(args for command, args in daemon.calls if command == "apply")
        assert args["confirm_within"] == 60.0
        assert "outside: eth0" in args["yaml"] and "- 2001:db8::20" in args["yaml"]
        assert isinstance(app.screen, PendingScreen)
        await pilot.press("c")
        await settle(pilot)
        assert app.screen.state == KEPT
        assert daemon.saved_text == args["yaml"]
        await pilot.press("enter")
        await poll(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert "mx2 192.0.2.20, 2001:db8::20" in shown(app, "#summary")


async def test_setup_refuses_missing_ports_and_one_port_for_both(make_app, daemon):
    daemon.config = None
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_into(pilot, "mx1", "192.0.2.10")
        await type_into(pilot, "mx2", "192.0.2.20")
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)  # no review with errors
        assert "not a valid interface name: ''" in field(app, "outside").errors[0]
        assert "Fix the fields marked in red first." in shown(app, "#form-general")
        assert daemon.commands().count("apply") == 0
        app.screen.query_one("#interfaces").focus()
        await pilot.press("o", "i")  # the same interface: it moves to inside
        assert app.screen.picks == {"inside": "eth0"}
        assert field(app, "outside").errors and not field(app, "inside").errors


async def test_setup_shows_a_cable_plugged_in_and_drops_the_pick_of_a_nic_that_went(make_app, daemon):
    daemon.config = None
    nics = list(INTERFACES)
    app = make_app(interfaces=lambda: list(nics))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#interfaces", DataTable)
        await pilot.press("down", "down", "o")  # eth2: down, link unknown
        assert table.get_row("eth2") == ["eth2", "52:54:00:00:00:03", "?", "down", "outside"]
        # The admin plugs a cable into eth2 (the box brings unused NICs up to see this).
        nics[2] = Interface("eth2", "52:54:00:00:00:03", "up", True, None)
        nics.append(Interface("eth3", "52:54:00:00:00:05", "up", False, None))  # a USB NIC
        app.screen.refresh_interfaces()  # what the 2 s timer does
        await pilot.pause()
        assert table.get_row("eth2") == ["eth2", "52:54:00:00:00:03", "link", "up", "outside"]
        assert table.get_row("eth3")[:3] == ["eth3", "52:54:00:00:00:05", "no link"]
        assert table.cursor_row == 2  # the highlight stays where the admin left it
        del nics[2]  # unplugged from the bus: its pick goes, and the field says so
        app.screen.refresh_interfaces()
        await pilot.pause()
        assert "eth2" not in [table.get_row_at(i)[0] for i in range(table.row_count)]
        assert app.screen.picks == {}
        assert "(press o on the list)" in shown(app, "#outside")
        assert field(app, "outside").errors


async def test_setup_can_be_left_and_reopened_from_the_dashboard(make_app, daemon):
    daemon.config = None
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert "s" in footer_keys(app) and "e" not in footer_keys(app)
        assert "no configuration yet" in shown(app, "#messages")
        await pilot.press("s")
        assert isinstance(app.screen, SetupScreen)


# ---- edit -----------------------------------------------------------------------------

BAD_INPUT = [
    ("mx1", "192.0.2.300", "not an IP address: '192.0.2.300'"),
    ("mx1", "", "missing: give the mail server's address"),
    ("mx2", "192.0.2.20", "mx1 has an IPv6 address but mx2 has none"),
    ("mx2", "192.0.2.10, 2001:db8::20", "192.0.2.10 is also mx1"),
    ("window", "0", "must be from 1 to 86400, not 0"),
    ("window", "1h", "must be a whole number from 1 to 86400, not '1h'"),
    ("knock_ports", "110, 25", "25 is the SMTP port itself"),
    ("knock_ports", "99999", "must be from 1 to 65535, not 99999"),
    ("selective", "203.0.113.9/24", "has host bits set; did you mean 203.0.113.0/24?"),
]


async def test_bad_input_in_every_field_is_explained_as_you_type(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        assert isinstance(app.screen, EditScreen)
        for name, text, expected in BAD_INPUT:
            good = app.screen.query_one(f"#{name}", Input).value
            await type_into(pilot, name, text)
            errors = field(app, name).errors
            assert any(expected in e for e in errors), (name, text, errors)
            assert field(app, name).has_class("-invalid")
            assert expected in shown(app, f"#field-{name} .field-note")
            await pilot.press("f2")
            assert isinstance(app.screen, EditScreen), name  # nothing goes to the daemon
            await type_into(pilot, name, good)
            assert not field(app, name).errors, name
        assert "apply" not in daemon.commands() and "check" not in daemon.commands()


async def test_mode_selective_needs_selective_networks(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        app.screen.query_one("#mode", Select).value = "selective"
        await pilot.pause()
        assert "needs at least one network" in field(app, "selective").errors[0]
        await type_into(pilot, "selective", "203.0.113.0/24")
        assert not field(app, "selective").errors


async def test_engine_errors_land_next_to_their_field(make_app, daemon):
    daemon.refusals = [{"field": "mx2[0]", "message": "192.0.2.20 does not answer on the inside port"}]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await type_into(pilot, "window", "600")
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, EditScreen)
        assert field(app, "mx2").errors == ["192.0.2.20 does not answer on the inside port"]
        assert app.screen.focused is app.screen.query_one("#mx2")
        await type_into(pilot, "mx2", "192.0.2.21, 2001:db8::20")
        assert field(app, "mx2").errors == []  # the daemon judged the old value


async def test_a_refused_apply_without_fields_is_shown_on_the_review(make_app, daemon):
    daemon.apply_failure = "filtering could not be verified (br_netfilter is off); the previous rules are back"
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await type_into(pilot, "window", "600")
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        error = shown(app, "#review-error")
        assert "did not apply the change: filtering could not be verified" in error
        assert "Press Esc to change the form" in error
        await pilot.press("escape")
        assert isinstance(app.screen, EditScreen)


async def test_review_shows_config_and_rules_diffs(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await type_into(pilot, "window", "3600")
        await type_into(pilot, "knock_ports", "993")
        await pilot.press("f2")
        await settle(pilot)
        diff = shown(app, "#diff")
        assert "--- running config" in diff and "+++ new config" in diff
        assert "-window: 4000" in diff and "+window: 3600" in diff
        assert "--- running rules" in diff and "+++ new rules" in diff
        assert "--seconds 3600" in diff and "--dports 993" in diff


# ---- apply safely ---------------------------------------------------------------------


async def apply_window(pilot, seconds: str) -> None:
    await pilot.press("e")
    await type_into(pilot, "window", seconds)
    await pilot.press("f2")
    await settle(pilot)
    await pilot.press("a")
    await settle(pilot)


async def test_apply_then_keep_within_the_countdown(make_app, daemon, clock):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await apply_window(pilot, "3600")
        assert isinstance(app.screen, PendingScreen)
        assert daemon.pending is not None and daemon.config.window == 3600
        assert "roll back by themselves in  60 s" in shown(app, "#pending-text")
        clock.advance(15)
        app.screen.tick()
        assert " 45 s " in shown(app, "#pending-text")
        await pilot.press("c")
        await settle(pilot)
        assert app.screen.state == KEPT
        assert "Kept." in shown(app, "#pending-text")
        assert daemon.pending is None and "window: 3600" in daemon.saved_text
        await pilot.press("enter")
        await poll(pilot)
        assert "window 3600 s" in shown(app, "#summary")


async def test_not_confirmed_in_time_the_daemon_rolls_back_and_the_console_says_so(make_app, daemon, clock):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await apply_window(pilot, "3600")
        assert isinstance(app.screen, PendingScreen)
        clock.advance(30)
        await poll(pilot)  # the daemon still waits: follow its clock
        assert app.screen.state == "waiting"
        daemon.time_out()  # mxknockd's timer fires
        clock.advance(31)
        app.screen.tick()  # our countdown reaches zero: go and see
        await settle(pilot)
        assert app.screen.state == TIMED_OUT
        assert "mxknockd rolled the change back by itself" in shown(app, "#pending-text")
        assert not {"c", "b"} & footer_keys(app)
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen)
        assert TIMEOUT_PROBLEM in shown(app, "#messages")
        assert "window 4000 s" in shown(app, "#summary")


async def test_roll_back_now(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await apply_window(pilot, "3600")
        await pilot.press("b")
        await settle(pilot)
        assert app.screen.state == ROLLED_BACK
        assert "rollback" in daemon.commands()
        assert daemon.config.window == 4000 and daemon.pending is None


async def test_a_change_pending_from_elsewhere_can_be_kept_from_the_dashboard(make_app, daemon, clock):
    daemon.pending = {"previous": daemon.config, "text": daemon.config.to_yaml(), "deadline": clock() + 42}
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "rolls back in 42 s" in shown(app, "#messages")
        assert {"c", "b"} <= footer_keys(app)
        assert not {"e", "w"} & footer_keys(app)  # the daemon takes no other change meanwhile
        await pilot.press("c")
        await settle(pilot)
        assert "confirm" in daemon.commands() and daemon.pending is None
        assert "kept and saved" in shown(app, "#messages")
        assert "c" not in footer_keys(app)


# ---- whitelist ------------------------------------------------------------------------


def whitelist_rows(app) -> list[str]:
    table = app.screen.query_one("#whitelist", DataTable)
    return [table.get_row_at(i)[0] for i in range(table.row_count)]


async def test_whitelist_add_and_remove(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WhitelistScreen)
        assert whitelist_rows(app) == ["198.51.100.7", "203.0.113.0/24"]
        await pilot.press(*list("192.0.2.99, 2001:db8:1::/48"), "enter")
        await settle(pilot)
        assert ("whitelist_add", {"entries": ["192.0.2.99/32", "2001:db8:1::/48"]}) in daemon.calls
        assert whitelist_rows(app) == ["198.51.100.7", "203.0.113.0/24", "192.0.2.99", "2001:db8:1::/48"]
        assert app.screen.query_one("#add", Input).value == ""
        await pilot.press("tab", "down", "d")
        await pilot.press("y")
        await settle(pilot)
        assert ("whitelist_remove", {"entries": ["203.0.113.0/24"]}) in daemon.calls
        assert whitelist_rows(app) == ["198.51.100.7", "192.0.2.99", "2001:db8:1::/48"]
        assert [str(n) for n in daemon.config.whitelist] == ["198.51.100.7/32", "192.0.2.99/32", "2001:db8:1::/48"]


async def test_whitelist_remove_can_be_declined(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("tab", "d", "n")
        await settle(pilot)
        assert "whitelist_remove" not in daemon.commands()
        assert whitelist_rows(app) == ["198.51.100.7", "203.0.113.0/24"]


async def test_whitelist_bad_input_and_engine_refusals_show_at_the_field(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press(*list("198.51.100.1/24"))
        errors = field(app, "whitelist").errors
        assert errors == ["198.51.100.1/24 has host bits set; did you mean 198.51.100.0/24?"]
        await pilot.press("enter")
        await settle(pilot)
        assert "whitelist_add" not in daemon.commands()
        # Someone else removed an entry meanwhile: the daemon's own words come back.
        daemon.change_whitelist(remove=["203.0.113.0/24"])
        await pilot.press("tab", "down", "d", "y")
        await settle(pilot)
        assert field(app, "whitelist").errors == ["203.0.113.0/24 is not in the whitelist"]


# ---- proven senders -------------------------------------------------------------------


def trusted_rows(app) -> list[list[str]]:
    table = app.screen.query_one("#trusted", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_trusted(pilot) -> None:
    await settle(pilot)
    await pilot.press("t")
    await settle(pilot)
    assert isinstance(pilot.app.screen, TrustedScreen)


async def test_proven_senders_list_add_and_remove(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "t" in footer_keys(app)
        await open_trusted(pilot)
        rows = trusted_rows(app)
        assert len(rows) == 28
        assert rows[0] == ["198.51.100.10", "IPv4", "35d23h"]
        assert rows[-1] == ["2001:db8:beef::3", "IPv6", "6h00m"]
        assert shown(app, "#trusted-count").startswith("28 proven senders (IPv4 25, IPv6 3)")
        assert "for 36 days, renewed with each connection" in shown(app, "#trusted-intro")
        assert {"escape", "f5"} <= footer_keys(app)

        await pilot.press(*list("192.0.2.99"), "enter")
        await settle(pilot)
        assert ("trusted_add", {"entries": ["192.0.2.99"]}) in daemon.calls
        assert trusted_rows(app)[0] == ["192.0.2.99", "IPv4", "36d00h"]  # the full lifetime
        assert daemon.trusted["192.0.2.99"] == LIFETIME
        assert app.screen.query_one("#add", Input).value == ""
        assert shown(app, "#trusted-count").startswith("29 proven senders (IPv4 26, IPv6 3)")
        assert app.snapshot.status["trusted"]["total"] == 29  # the dashboard's count follows

        await pilot.press("tab", "down", "d")
        assert "Remove 198.51.100.10 from the proven senders?" in shown(app, "#dialog-box Static")
        await pilot.press("n")
        await settle(pilot)
        assert "trusted_remove" not in daemon.commands()
        await pilot.press("d", "y")
        await settle(pilot)
        assert ("trusted_remove", {"entries": ["198.51.100.10"]}) in daemon.calls
        assert "198.51.100.10" not in daemon.trusted
        assert [row[0] for row in trusted_rows(app)[:2]] == ["192.0.2.99", "198.51.100.11"]
        table = app.screen.query_one("#trusted", DataTable)
        assert table.get_row_at(table.cursor_row)[0] == "198.51.100.11"  # the cursor stays in place
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


TRUSTED_BAD_INPUT = [
    ("192.0.2.0/24", "192.0.2.0/24: proven senders are single addresses"),
    ("192.0.2.300", "not an address or network: '192.0.2.300'"),
    ("192.0.2.7 192.0.2.8", "one address at a time"),
    ("2001:db8::25", "the mail server has no IPv6 address"),
]


async def test_proven_senders_bad_input_is_explained_as_you_type(make_app, daemon):
    daemon.config = FakeDaemon(CONFIG_YAML.replace(", 2001:db8::10", "").replace(", 2001:db8::20", "")).config
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_trusted(pilot)
        add = app.screen.query_one("#add", Input)
        await pilot.press("enter")
        assert field(app, "trusted").errors == ["type an address first"]
        for text, expected in TRUSTED_BAD_INPUT:
            add.value = ""
            await pilot.press(*list(text))
            assert field(app, "trusted").errors == [expected], text
            assert field(app, "trusted").has_class("-invalid")
            assert expected in shown(app, "#field-trusted .field-note")
            await pilot.press("enter")
            await settle(pilot)
        assert "trusted_add" not in daemon.commands()
        add.value = ""
        await pilot.press(*list("192.0.2.25/32"))
        assert field(app, "trusted").errors == []
        assert "one IPv4 or IPv6 address" in shown(app, "#field-trusted .field-note")  # the hint is back
        await pilot.press("enter")
        await settle(pilot)
        assert ("trusted_add", {"entries": ["192.0.2.25"]}) in daemon.calls


async def test_proven_senders_engine_errors_are_shown_at_the_field(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_trusted(pilot)
        # Someone else removed it meanwhile: the daemon's own words come back.
        daemon.change_trusted(remove=["198.51.100.10"])
        await pilot.press("tab", "d", "y")
        await settle(pilot)
        assert field(app, "trusted").errors == ["198.51.100.10 is not a proven sender"]
        assert "198.51.100.10 is not a proven sender" in shown(app, "#field-trusted .field-note")
        # F5 reads the list again; a change that works clears the daemon's old complaint.
        await pilot.press("f5")
        await settle(pilot)
        assert trusted_rows(app)[0][0] == "198.51.100.11"
        await pilot.press("d", "y")
        await settle(pilot)
        assert field(app, "trusted").errors == []
        # A refusal without a field (the daemon went away) lands there too.
        daemon.unreachable = True
        app.screen.query_one("#add", Input).focus()
        await pilot.press(*list("192.0.2.99"), "enter")
        await settle(pilot)
        assert field(app, "trusted").errors == [UNREACHABLE]
        daemon.unreachable = False
        await pilot.press("enter")
        await settle(pilot)
        assert field(app, "trusted").errors == [] and "192.0.2.99" in daemon.trusted


async def test_proven_senders_off_or_unread_say_so(make_app, daemon):
    daemon.trust_enabled = False
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_trusted(pilot)
        assert "Proven senders are off in the configuration" in shown(app, "#trusted-intro")
        await pilot.press("escape")
        daemon.unreachable = True
        await pilot.press("t")
        await settle(pilot)
        assert shown(app, "#trusted-count").startswith("Cannot read the proven senders: mxknockd is not running")
        assert "d" not in footer_keys(app)


async def test_proven_senders_stay_open_while_a_change_is_pending(make_app, daemon, clock):
    """They are not part of the config, so the daemon changes them while one waits."""
    daemon.pending = {"previous": daemon.config, "text": daemon.config.to_yaml(), "deadline": clock() + 42}
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert {"c", "b", "t"} <= footer_keys(app)
        await open_trusted(pilot)


# ---- knocks, rules, help ----------------------------------------------------------------


def knock_addresses(app) -> list[str]:
    table = app.screen.query_one("#knocks", DataTable)
    return [table.get_row_at(i)[0] for i in range(table.row_count)]


async def test_knocks_are_sortable_by_column(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(app.screen, KnocksScreen)
        by_age = ["198.51.100.23", "2001:db8:beef::25", "203.0.113.77", "192.0.2.200"]
        assert knock_addresses(app) == by_age
        row = app.screen.query_one("#knocks", DataTable).get_row_at(2)
        assert row[1:] == ["mxknock4-32", "62m05s", "4m34s", "3"]
        assert "expired" in app.screen.query_one("#knocks", DataTable).get_row_at(3)
        await pilot.press("v")
        assert knock_addresses(app) == by_age[::-1]
        await pilot.press("s")  # by time left, still reversed
        assert knock_addresses(app) == ["198.51.100.23", "2001:db8:beef::25", "203.0.113.77", "192.0.2.200"]
        await pilot.press("v", "s")  # by hits, ascending
        assert knock_addresses(app)[-1] == "203.0.113.77"
        assert "mxknock4-32: 3/100, 2 live, window 4000 s" in shown(app, "#knock-summary")


async def test_knocks_refresh_in_place_and_keep_the_cursor(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        await pilot.press("down", "down")  # on 203.0.113.77
        daemon.knocks["mxknock4-32"][1]["hits"] = 4
        daemon.knocks["mxknock4-32"].append({"address": "198.51.100.99", "age": 1.0, "time_left": 3999.0, "hits": 1})
        app.screen.fetch()
        await settle(pilot)
        table = app.screen.query_one("#knocks", DataTable)
        assert knock_addresses(app)[0] == "198.51.100.99"
        assert table.get_row_at(table.cursor_row)[0] == "203.0.113.77"
        assert table.get_row_at(table.cursor_row)[4] == "4"


async def test_rules_screen_shows_the_rules_in_force(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert "-A MXKNOCK" in shown(app, "#rules")
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_help_opens_with_f1_or_question_mark_but_not_from_a_text_field(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("e")
        await type_into(pilot, "window", "?", keys=True)
        assert isinstance(app.screen, EditScreen)  # typed, not a help request
        assert app.screen.query_one("#window", Input).value == "?"
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)


async def test_every_screen_offers_its_actions_in_the_footer(make_app):
    """Keyboard only: each binding an admin needs has a footer label."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, screen, expected in (
            ("e", EditScreen, {"f2", "escape", "f1"}),
            ("k", KnocksScreen, {"s", "v", "escape"}),
        ):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, screen)
            assert expected <= footer_keys(app), footer_keys(app)
            await pilot.press("escape")


# ---- typing over a slow line ------------------------------------------------------------


async def test_editing_keys_keep_their_order_in_a_burst_of_input():
    """Type-ahead over a serial line arrives in one read: Backspace must not run after
    the characters typed after it (textual#6605)."""
    from textual import events
    from textual.app import App

    from tui.widgets.field import text_input

    class OneField(App[None]):
        def compose(self):
            yield text_input("400", id="field")

    app = OneField()
    async with app.run_test() as pilot:
        await pilot.pause()
        for key, character in [("backspace", None)] * 3 + [(c, c) for c in "3600"] + [("left", None)] * 2:
            event = events.Key(key, character)
            event.set_sender(app)
            app._driver.send_message(event)  # all at once, as one read from the tty
        await pilot.pause(0.2)
        await pilot.press("backspace", "9")
        assert app.query_one("#field", Input).value == "3900"
