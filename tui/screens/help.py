"""F1 / ?: what each screen's keys do and what the numbers mean."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from appliance.config import METRICS_PORT

HELP = f"""\
Every action has a key; the bottom line shows the keys of this screen.

Dashboard   e edit   w whitelist   t proven senders   k knocks   r rules
            m management address (mgmt)   q quit
            s setup (only while there is no configuration)
            c keep a pending change   b roll it back now
Setup/Edit  Tab, Shift+Tab: next, previous field   Enter: the mode list
            o, i on the interface list: outside, inside port
            F2 review and apply   Esc cancel
Management  the same keys; Enter opens the on/off and metrics lists
            SSH keys: one key per line, Enter starts the next line
Review      arrows, PgUp, PgDn scroll   a apply   Esc back to the form
Countdown   c keep the change   b roll back now   Esc close
Knocks      s sort by the next column   v reverse the order   Esc back
Whitelist   type, then Enter: add   Tab to the list, d: remove   Esc back
Proven      the same, one address at a time   F5 read the list again
Anywhere    F1 or ? this help   Ctrl+Q quit

Unlisting: mx1 (MX 10) refuses every sender with a reset and records it
as a knock; mx2 (MX 20) accepts a sender that knocked within the window.
Real mail servers try the second MX at once; most spam bots never do.

Counters (connection attempts since the rules were last applied):
  knocks recorded            connections to mx1 (or to a knock port)
  let through after a knock  connections to mx2 after a knock
  whitelisted connections    senders on the whitelist: no knock needed
  refused at mx2             senders that never knocked: mostly spam
  without a knock            nolisting, or senders outside selective nets
  as proven senders          senders that once completed a handshake

Proven senders: a sender let through after a knock whose handshake with
mx2 completes passes without a knock from then on, for the lifetime in
the config (trust), renewed with each connection. Add a known server by
hand to let it in at once; remove one to make it knock again.

A knock list holds a fixed number of senders (xt_recent ip_list_tot).
When it is full and its oldest knock is younger than the window, new
knocks push out live ones (EVICTING): raise ip_list_tot, shorten the
window, or switch to nolisting.

Management address: by default the bridge has no address of its own
and the box cannot be reached over the network (transparent). Give it
one (and a gateway if admins are beyond its subnet) to reach SSH as
root with the keys given, and Prometheus metrics on TCP {METRICS_PORT}; from
the allowed networks only, if any are given.

A change applied here rolls back by itself unless you keep it in time,
so a mistake cannot lock mail out for long, nor you out of SSH.
If mxknockd cannot be reached: systemctl start mxknockd;
journalctl -u mxknockd says why.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,f1,q,question_mark", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Help"

    def action_close(self) -> None:
        self.dismiss(None)
