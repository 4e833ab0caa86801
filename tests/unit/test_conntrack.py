"""Conntrack fill and timeout: how they are read, judged (status), exposed (metrics) and shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import bridge, metrics, status
from tui import format as fmt
from tui.widgets.panels import conntrack_text


def report(entries: int | None, limit: int | None = 1000, timeout: int | None = 1800) -> dict:
    return bridge.ConntrackState(entries, limit, timeout).to_json()


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(bridge, "CONNTRACK", tmp_path)
    return tmp_path


def test_read_conntrack_from_the_namespace_sysctls(proc: Path):
    (proc / "nf_conntrack_count").write_text("42\n")
    (proc / "nf_conntrack_max").write_text("262144\n")
    (proc / "nf_conntrack_tcp_timeout_established").write_text("432000\n")
    state = bridge.read_conntrack()
    assert state == bridge.ConntrackState(42, 262144, 432000)
    assert state.to_json() == {
        "entries": 42,
        "max": 262144,
        "timeout_established": 432000,
        "fill": 0.0002,
        "expected_timeout_established": bridge.ESTABLISHED_TIMEOUT,
    }


def test_without_conntrack_loaded_nothing_is_known_and_nothing_is_tuned(proc: Path):
    bridge.tune_conntrack()  # no file: nothing to write, no error
    assert not (proc / bridge.TIMEOUT_SYSCTL).exists()
    assert bridge.read_conntrack().to_json()["fill"] is None
    assert status.conntrack_health(bridge.read_conntrack().to_json()) == ((), ())


def test_tune_conntrack_sets_the_established_timeout(proc: Path):
    (proc / bridge.TIMEOUT_SYSCTL).write_text("432000\n")
    bridge.tune_conntrack()
    assert (proc / bridge.TIMEOUT_SYSCTL).read_text() == "1800\n"


def test_the_timeout_covers_smtp_and_imap_idle():
    # RFC 5321 4.5.3.2: 10 min is the longest an SMTP session waits; RFC 2177: IDLE every <29 min.
    assert 29 * 60 < bridge.ESTABLISHED_TIMEOUT < 432000


@pytest.mark.parametrize(
    ("entries", "problems", "warnings"),
    [(0, 0, 0), (799, 0, 0), (800, 0, 1), (949, 0, 1), (950, 1, 0), (1000, 1, 0)],
)
def test_fill_thresholds(entries: int, problems: int, warnings: int):
    found = status.conntrack_health(report(entries))
    assert (len(found[0]), len(found[1])) == (problems, warnings)
    for text in (*found[0], *found[1]):
        assert f"({entries}/1000 entries)" in text and "mail included" in text


def test_a_changed_timeout_is_a_warning_that_says_how_to_fix_it():
    problems, warnings = status.conntrack_health(report(10, timeout=432000))
    assert problems == ()
    assert len(warnings) == 1 and "432000 s, not 1800 s" in warnings[0] and "mxknock reload" in warnings[0]


def test_health_turns_critical_with_a_full_table():
    problems, warnings = status.conntrack_health(report(990))
    verdict = status.health(True, [], None, [], extra_problems=problems, extra_warnings=warnings)
    assert verdict.level == status.CRITICAL


def test_metrics_gauges():
    text = metrics.render({"health": "ok", "conntrack": report(250)})
    assert "# TYPE mxknock_conntrack_entries gauge\nmxknock_conntrack_entries 250\n" in text
    assert "mxknock_conntrack_max 1000\n" in text
    assert "mxknock_conntrack_tcp_timeout_established_seconds 1800\n" in text


def test_metrics_leave_out_what_is_not_known():
    assert "conntrack" not in metrics.render({"health": "ok", "conntrack": None})
    assert "conntrack_entries" not in metrics.render({"health": "ok", "conntrack": report(None)})


@pytest.mark.parametrize(
    ("entries", "shown", "style"),
    [(3, "0.3%", "green"), (120, "12%", "green"), (850, "85%", "bold yellow"), (960, "96%", "bold red")],
)
def test_dashboard_shows_the_fill_coloured_by_the_thresholds(entries: int, shown: str, style: str):
    text = conntrack_text(report(entries))
    assert text.plain == f"conntrack {shown} full"  # in the counters panel's title
    assert any(span.style == style for span in text.spans)


def test_dashboard_shows_nothing_without_a_figure():
    assert conntrack_text(None).plain == "" and conntrack_text(report(None)).plain == ""
    assert fmt.percent(0.0) == "0.0%"
