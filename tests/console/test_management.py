"""The management screen: the box's own address, SSH keys and metrics, through the
same form, review and countdown as Edit, driven by keys against the in-memory daemon."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_asyncio")

from textual.widgets import Input, Select, TextArea

from tui.screens.dashboard import DashboardScreen
from tui.screens.help import HelpScreen
from tui.screens.management import ManagementScreen
from tui.screens.pending import KEPT, TIMED_OUT, PendingScreen
from tui.screens.review import ReviewScreen

from .conftest import SIZE
from .fake_daemon import CONFIG_YAML, FakeDaemon
from .helpers import poll, settle
from .test_flows import field, footer_keys, shown, type_into

pytestmark = pytest.mark.asyncio

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILRbC91NRp/0UZbI3uknIplLexQS9enUyC9nJjDcDR+i admin@laptop"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIy2jTvRSnNDATPA4eWnT7omzHeHbEg1OR7ZhlY70qUF backup@host"
MANAGED_YAML = (
    CONFIG_YAML
    + f"""\
management:
  address: [192.0.2.5/24, 2001:db8::5/64]
  gateway: [192.0.2.1]
  ssh_keys: ['{KEY}', '{KEY2}']
  allow: [198.51.100.0/24, 2001:db8:aa::/48]
  metrics: true
"""
)


def managed(daemon: FakeDaemon) -> None:
    daemon.config = FakeDaemon(MANAGED_YAML).config


async def open_management(pilot) -> None:
    await settle(pilot)
    await pilot.press("m")
    await settle(pilot)
    assert isinstance(pilot.app.screen, ManagementScreen)


async def switch(pilot, value: str) -> None:
    pilot.app.screen.query_one("#management", Select).value = value
    await pilot.pause()


async def type_keys(pilot, text: str) -> None:
    area = pilot.app.screen.query_one("#ssh_keys", TextArea)
    area.focus()
    area.text = text
    await pilot.pause()


# ---- set, review, apply, keep -------------------------------------------------------------


async def test_set_an_address_a_gateway_and_a_key_then_keep_it(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "management none (transparent)" in shown(app, "#bridge")
        assert "m" in footer_keys(app)
        await open_management(pilot)
        assert app.screen.query_one("#address", Input).disabled  # off: nothing to type yet
        # Switched on by keys, as on the console: Enter opens the list, down, Enter picks.
        app.screen.query_one("#management", Select).focus()
        await pilot.press("enter", "down", "enter")
        await pilot.pause()
        assert app.screen.query_one("#management", Select).value == "on"
        assert not app.screen.query_one("#address", Input).disabled
        assert not field(app, "address").errors  # empty, but not yet the admin's mistake
        await type_into(pilot, "address", "192.0.2.5/24")
        await type_into(pilot, "gateway", "192.0.2.1")
        await type_keys(pilot, KEY)
        assert not any(field(app, name).errors for name in ("address", "gateway", "ssh_keys"))
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        diff = shown(app, "#diff")
        assert "+management:" in diff and "+  - 192.0.2.5/24" in diff and "+  - 192.0.2.1" in diff
        assert f"+  - {KEY}" in diff
        assert "+:MXKNOCK-INPUT" in diff  # the rules let SSH and metrics reach the box
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, PendingScreen)
        management = daemon.config.management
        assert [str(a) for a in management.addresses] == ["192.0.2.5/24"]
        assert [str(g) for g in management.gateways] == ["192.0.2.1"] and management.ssh_keys == (KEY,)
        args = next(args for command, args in daemon.calls if command == "apply")
        assert args["confirm_within"] == 60.0 and "management:" in args["yaml"]
        # The countdown says what could go wrong here: the admin's own way in.
        assert "you still get in (open a new SSH session)" in shown(app, "#pending-text")
        await pilot.press("c")
        await settle(pilot)
        assert app.screen.state == KEPT and "ssh_keys" in daemon.saved_text
        await pilot.press("enter")
        await poll(pilot)
        assert isinstance(app.screen, DashboardScreen)
        # Metrics stay off unless asked for (the form's default).
        assert "management 192.0.2.5/24  gw 192.0.2.1  ssh 1 key  metrics off" in shown(app, "#bridge")


async def test_not_kept_in_time_the_old_management_comes_back(make_app, daemon, clock):
    """An admin who cut himself off cannot press c: the daemon rolls back on its own."""
    managed(daemon)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await type_into(pilot, "address", "203.0.113.5/24, 2001:db8::5/64")
        await type_into(pilot, "gateway", "203.0.113.1")
        await type_into(pilot, "allow", "198.51.100.0/24, 2001:db8:aa::/48")
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert str(daemon.config.management.addresses[0]) == "203.0.113.5/24"
        daemon.time_out()
        clock.advance(61)
        app.screen.tick()
        await settle(pilot)
        assert app.screen.state == TIMED_OUT
        assert str(daemon.config.management.addresses[0]) == "192.0.2.5/24"


async def test_turning_management_off_removes_the_section(make_app, daemon):
    managed(daemon)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "management 192.0.2.5, 2001:db8::5  gw 192.0.2.1  ssh 2 keys  metrics :9425" in shown(app, "#bridge")
        await open_management(pilot)
        assert app.screen.query_one("#ssh_keys", TextArea).text == f"{KEY}\n{KEY2}"
        await switch(pilot, "off")
        assert all(app.screen.query_one(f"#{name}").disabled for name in ("address", "gateway", "ssh_keys"))
        await pilot.press("f2")
        await settle(pilot)
        diff = shown(app, "#diff")
        assert "-management:" in diff and "-  - 192.0.2.5/24" in diff
        assert "-:MXKNOCK-INPUT" in diff
        await pilot.press("a")
        await settle(pilot)
        assert daemon.config.management is None
        args = next(args for command, args in daemon.calls if command == "apply")
        assert "management" not in args["yaml"]
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("enter")
        await poll(pilot)
        assert "management none (transparent)" in shown(app, "#bridge")


async def test_escape_cancels_without_a_change(make_app, daemon):
    managed(daemon)
    before = daemon.config
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await type_into(pilot, "address", "192.0.2.99/24")
        await type_keys(pilot, "")
        await pilot.press("escape")  # from inside the key list: Esc is not text there
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        assert daemon.config is before
        assert "apply" not in daemon.commands() and "rules" not in daemon.commands()


# ---- errors at their field ------------------------------------------------------------------


async def test_a_bad_address_is_shown_under_it_and_f2_refuses(make_app, daemon):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await switch(pilot, "on")
        await type_into(pilot, "address", "192.0.2.5")
        assert field(app, "address").errors == ["give the prefix length too, e.g. 192.0.2.5/24"]
        assert field(app, "address").has_class("-invalid")
        assert "give the prefix length too" in shown(app, "#field-address .field-note")
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, ManagementScreen)
        assert "Fix the fields marked in red first." in shown(app, "#form-general")
        assert app.screen.focused is app.screen.query_one("#address")
        await type_into(pilot, "address", "192.0.2.10/24")
        assert "is the mail server's (an MX address)" in field(app, "address").errors[0]
        assert "apply" not in daemon.commands()


async def test_switched_on_an_empty_address_is_asked_for_on_f2(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await switch(pilot, "on")
        assert not field(app, "address").errors
        await pilot.press("f2")
        assert isinstance(app.screen, ManagementScreen)
        assert "missing: give the box's own address" in field(app, "address").errors[0]


async def test_each_bad_key_is_named_by_its_line_as_you_type(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await switch(pilot, "on")
        await type_into(pilot, "address", "192.0.2.5/24")
        area = app.screen.query_one("#ssh_keys", TextArea)
        area.focus()
        await pilot.press(*list("ssh-ed25519 AAAA?"))  # typed: ? is text here, not help
        assert not isinstance(app.screen, HelpScreen)
        assert field(app, "ssh_keys").errors == ["line 1: the key is not valid base64: was it cut while copying?"]
        assert field(app, "ssh_keys").has_class("-invalid")
        await type_keys(pilot, f"{KEY}\n\n{KEY}\nAAAA admin@host")
        errors = field(app, "ssh_keys").errors
        assert errors[0] == "line 3: this key is listed twice"
        assert errors[1].startswith("line 4: not a public key line")
        assert "line 3: this key is listed twice" in shown(app, "#field-ssh_keys .field-note")
        await type_keys(pilot, f"{KEY}\n{KEY2}\n")
        assert field(app, "ssh_keys").errors == []


async def test_an_engine_error_naming_the_gateway_lands_under_it(make_app, daemon):
    daemon.refusals = [{"field": "management.gateway[0]", "message": "192.0.2.1 does not answer ARP on br0"}]
    managed(daemon)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await type_into(pilot, "allow", "198.51.100.0/24, 2001:db8:bb::/48")
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ManagementScreen)
        assert field(app, "gateway").errors == ["192.0.2.1 does not answer ARP on br0"]
        assert app.screen.focused is app.screen.query_one("#gateway")
        assert not field(app, "allow").errors
        await type_into(pilot, "gateway", "192.0.2.254")
        assert field(app, "gateway").errors == []  # the daemon judged the old value


async def test_an_engine_error_on_a_key_names_its_line(make_app, daemon):
    daemon.refusals = [{"field": "management.ssh_keys[1]", "message": "sshd refused it"}]
    managed(daemon)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        await type_keys(pilot, f"{KEY}\n\n{KEY2}")
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert field(app, "ssh_keys").errors == ["line 3: sshd refused it"]
        assert app.screen.focused is app.screen.query_one("#ssh_keys")


# ---- dashboard and keys ---------------------------------------------------------------------


async def test_a_duplicate_address_shows_on_the_dashboard(make_app, daemon):
    managed(daemon)
    daemon.dad_failed.add("2001:db8::5")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "health WARNING" in shown(app, "TitleBar")
        assert "management address 2001:db8::5 is already used by another host" in shown(app, "#messages")
        line = next(text for text in app.screen.query_one("#bridge").content.split() if "management" in text.plain)
        red = {line.plain[span.start : span.end] for span in line.spans if "red" in str(span.style)}
        assert red == {"2001:db8::5"}


async def test_management_waits_while_a_change_is_pending(make_app, daemon, clock):
    daemon.pending = {"previous": daemon.config, "text": daemon.config.to_yaml(), "deadline": clock() + 42}
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "m" not in footer_keys(app)
        await pilot.press("m")
        assert isinstance(app.screen, DashboardScreen)


async def test_the_management_screen_offers_its_keys_and_help_explains_them(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_management(pilot)
        assert {"f2", "escape", "f1"} <= footer_keys(app)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        help_text = shown(app, "#help-box Static")
        assert "m management address" in help_text and "SSH keys: one key per line" in help_text


async def test_editing_keys_in_the_key_list_keep_their_order_in_a_burst():
    """As for one-line fields (textual#6605): type-ahead over a serial line arrives in
    one read, and Backspace must not run after the characters typed behind it."""
    from textual import events
    from textual.app import App

    from tui.widgets.field import text_area

    class OneArea(App[None]):
        def compose(self):
            yield text_area("ssh-rsa", id="keys")

    app = OneArea()
    async with app.run_test() as pilot:
        area = app.query_one("#keys", TextArea)
        area.focus()
        area.move_cursor((0, 7))
        await pilot.pause()
        burst = [("backspace", None)] * 3 + [(c, c) for c in "ed25519"] + [("enter", None), ("left", None)]
        for key, character in burst:
            event = events.Key(key, character)
            event.set_sender(app)
            app._driver.send_message(event)  # all at once, as one read from the tty
        await pilot.pause(0.2)
        await pilot.press("backspace", "!")
        assert area.text == "ssh-ed2551!\n"
