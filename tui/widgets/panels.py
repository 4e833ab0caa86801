"""The dashboard's panels. Each redraws itself in place from a Snapshot (no recompose,
so a live refresh does not flicker)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from appliance.config import METRICS_PORT
from appliance.status import CONNTRACK_CRITICAL, CONNTRACK_WARNING, COUNTER_LABELS

from .. import format as fmt
from ..state import Snapshot

BAR_WIDTH = 20
LINE_WIDTH = 78  # a panel's line on an 80-column console


class TitleBar(Static):
    """One line: what this screen is, and the daemon's health."""

    def show(self, screen_title: str, snapshot: Snapshot) -> None:
        line = Text(f" mxknock  {screen_title}", style="bold")
        if snapshot.reachable:
            health = snapshot.status["health"]
            style = {"ok": "bold green", "warning": "bold yellow"}.get(health, "bold red")
            line.append("   health ")
            line.append(health.upper(), style=style)
        elif snapshot.error:
            line.append("   mxknockd ")
            line.append("UNREACHABLE", style="bold red")
        self.update(line)


class SummaryPanel(Static):
    """Mode, window and the two MX addresses."""

    def show(self, snapshot: Snapshot) -> None:
        config = snapshot.config
        if config is None:
            self.update(Text(" no configuration in force", style="bold red") if snapshot.reachable else "")
            return
        text = Text(" mode ")
        text.append(config["mode"], style="bold")
        text.append(f"   window {config['window']} s   smtp port {config['smtp_port']}")
        if config["knock_ports"]:
            text.append(f"   knock ports {','.join(str(p) for p in config['knock_ports'])}")
        text.append("\n mx1 ")
        text.append(fmt.addresses(config["mx1"]), style="bold")
        text.append("   mx2 ")
        text.append(fmt.addresses(config["mx2"]), style="bold")
        self.update(text)


class BridgePanel(Static):
    """Ports and link state, whether filtering is really in the path, and the box's own
    (management) address on the bridge."""

    def show(self, snapshot: Snapshot) -> None:
        bridge = snapshot.status.get("bridge") if snapshot.status else None
        if not bridge:
            self.border_title = "Bridge"
            self.update("no bridge yet (it is set up with the first configuration)")
            return
        self.border_title = f"Bridge {bridge['name']}"
        roles = ("outside", "inside")
        line = Text()
        for role, port in zip(roles, bridge["ports"], strict=False):
            ok = port.get("present", True) and port["up"] and port["carrier"] and port["enslaved"]
            line.append(f"{role} ")
            line.append(port["name"], style="bold")
            line.append(f" {fmt.port_state(port)}   ", style="green" if ok else "red")
        line.append("forwarding ")
        line.append("yes" if bridge["forwarding"] else "NO", style="green" if bridge["forwarding"] else "bold red")
        verified = snapshot.status["filtering_verified"]
        line.append("\nfiltering in the path: ")
        line.append("VERIFIED" if verified else "NOT VERIFIED", style="bold green" if verified else "bold red")
        line.append(
            f"   br_netfilter: bridge {fmt.flag(bridge['nf_call_iptables'])}/{fmt.flag(bridge['nf_call_ip6tables'])}"
            f"  sysctl {fmt.flag(bridge['sysctl_iptables'])}/{fmt.flag(bridge['sysctl_ip6tables'])}"
        )
        line.append("\n")
        line.append_text(management_line(snapshot))
        self.update(line)


def conntrack_text(conntrack: dict[str, Any] | None) -> Text:
    """How full the conntrack table is: when full, the kernel drops new connections."""
    fill = (conntrack or {}).get("fill")
    if fill is None:
        return Text()
    style = "bold red" if fill >= CONNTRACK_CRITICAL else "bold yellow" if fill >= CONNTRACK_WARNING else "green"
    text = Text("conntrack ")
    text.append(fmt.percent(fill), style=style)
    text.append(" full")
    return text


def management_line(snapshot: Snapshot, width: int = LINE_WIDTH) -> Text:
    """One line: the management address(es), gateways, SSH and metrics, or none. An
    address the bridge lacks or another host holds is red (the warning says which)."""
    wanted = (snapshot.config or {}).get("management")
    if not wanted:
        return Text("management none (transparent)")
    state = (snapshot.status or {}).get("management")  # None: the daemon did not say
    found = {a["address"]: a for a in state["addresses"]} if state else {}
    keys = len(wanted.get("ssh_keys") or ())
    port = state["metrics_port"] if state else METRICS_PORT
    tail = "  gw " + ", ".join(wanted["gateway"]) if wanted.get("gateway") else ""
    tail += f"  ssh {keys} key{'s' if keys != 1 else ''}" if keys else "  ssh off"
    tail += f"  metrics :{port}" if wanted.get("metrics", True) else "  metrics off"
    for short in (False, True):  # too long: the prefix lengths go (the screen m shows them)
        line = Text("management ")
        for i, address in enumerate(wanted["address"]):
            line.append(", " if i else "")
            style = address_style(found.get(address), known=state is not None)
            line.append(address.split("/")[0] if short else address, style=style)
        line.append(tail)
        if line.cell_len <= width:
            break
    return line


def address_style(entry: dict[str, Any] | None, known: bool) -> str:
    """How the bridge has a configured address (`known`: the daemon said which it has)."""
    if known and (entry is None or entry["dad_failed"]):
        return "bold red"  # not on the bridge, or another host has it
    return "bold yellow" if entry and entry["tentative"] else "bold"


# Counters that stay at 0 unless someone attacks the box.
SHOWN_ONLY_WHEN_COUNTING = frozenset({"trust_capped"})


def counter_rows(counters: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, str]]:
    """(label, counts, key) of each row the counters panel shows, in the status' order."""
    rows = []
    for key, label in COUNTER_LABELS.items():
        counts = counters.get(key)
        if key in SHOWN_ONLY_WHEN_COUNTING and not (counts and counts["total"]):
            continue  # an attack's sign: a row of its own only when it happens (25 lines are few)
        rows.append((label, counts, key))
    return rows


class CountersPanel(Static):
    """Connection attempts by meaning, with rates per minute."""

    def on_mount(self) -> None:
        self.border_title = "Connection attempts"

    def show(self, snapshot: Snapshot) -> None:
        table = Table(box=None, padding=(0, 1), expand=True, show_edge=False)
        table.add_column("", ratio=1, no_wrap=True)
        for heading in ("total", "IPv4", "IPv6", "/min"):
            table.add_column(heading, justify="right", width=8, header_style="bold")
        counters: dict[str, Any] = snapshot.status["counters"] if snapshot.status else {}
        # In the title, where there is room at 80 columns: how full the table of tracked
        # connections is (when full, the kernel drops new connections, mail included).
        conntrack = conntrack_text((snapshot.status or {}).get("conntrack"))
        self.border_title = Text("Connection attempts") + (Text("   ") + conntrack if conntrack else Text())
        for label, c, key in counter_rows(counters):
            if c is None:
                table.add_row(label, "-", "-", "-", "-")
                continue
            table.add_row(
                label,
                str(c["total"]),
                str(c.get("ipv4", 0)),
                str(c.get("ipv6", 0)),
                fmt.rate(snapshot.rates.get(key)),
            )
        self.update(table)


class KnockListsPanel(Static):
    """Fill of each knock list against its capacity, with the eviction warning, and
    how many proven senders pass without knocking."""

    def on_mount(self) -> None:
        self.border_title = "Knock lists"

    def show(self, snapshot: Snapshot) -> None:
        lists = snapshot.status.get("knock_lists", []) if snapshot.status else []
        if not lists:
            self.update("no knock lists (no configuration in force)")
            return
        lines = [trust_line(snapshot)] if snapshot.config and "trust" in snapshot.config else []
        for kl in lists:
            line = Text(f"{kl['name']:<13} ")
            style = "red" if kl["evicting"] else "yellow" if kl["entries"] >= kl["capacity"] * 0.8 else "green"
            line.append(fmt.bar(kl["entries"], kl["capacity"], BAR_WIDTH), style=style)
            fill = f" {kl['entries']:>4}/{kl['capacity']:<4}"
            line.append(f"{fill} {kl['live']} live, oldest {fmt.age(kl['oldest_age'])}")
            if kl["evicting"]:
                line.append("  EVICTING", style="bold red")
            lines.append(line)
        self.update(Group(*lines[1:], *lines[:1]))


def trust_line(snapshot: Snapshot) -> Text:
    trust = snapshot.config["trust"]
    if not trust["enabled"]:
        return Text("proven senders: off (every sender knocks)")
    counts = snapshot.status.get("trusted") or {}
    days = trust["lifetime"] / 86400
    return Text(
        f"proven senders {counts.get('total', 0)} (IPv4 {counts.get('ipv4', 0)}, IPv6 {counts.get('ipv6', 0)}), "
        f"pass without a knock for {days:g} days"
    )


class MessagesPanel(Static):
    """Problems and warnings, the pending change, or why the daemon cannot be reached.
    Focusable, so the arrows scroll it when there is more than fits."""

    can_focus = True

    def show(self, snapshot: Snapshot, note: Text | None = None) -> None:
        lines: list[Text] = []
        if not snapshot.reachable and snapshot.error:
            lines.append(Text(snapshot.error, style="bold red"))
            lines.append(
                Text(
                    "If it does not start, `journalctl -u mxknockd` says why. "
                    "The console asks again every few seconds and fills in once mxknockd answers."
                )
            )
        status = snapshot.status or {}
        pending = status.get("pending")
        if pending:  # first: it is the one thing that needs the admin now
            lines.append(
                Text(
                    f"A change rolls back in {pending['seconds_left']:.0f} s: c keeps it, b rolls it back now.",
                    style="bold yellow",
                )
            )
        for problem in status.get("problems", []):
            lines.append(Text(f"! {problem}", style="bold red"))
        for warning in status.get("warnings", []):
            lines.append(Text(f"! {warning}", style="yellow"))
        if note is not None:
            lines.append(note)
        self.set_class(not lines, "-empty")
        self.update(Group(*lines))
