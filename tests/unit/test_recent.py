"""xt_recent knock lists: parsing /proc/net/xt_recent text, ages at the kernel's HZ, eviction."""

from __future__ import annotations

import pytest

from appliance import recent

# As the kernel prints it (net/netfilter/xt_recent.c, recent_seq_show): IPv6 with %pI6, i.e.
# uncompressed; "oldest_pkt" is the ring index; then every remembered stamp, comma-separated.
PROC_TEXT = """\
src=192.0.2.100 ttl: 64 last_seen: 4295072070 oldest_pkt: 2 4295071000, 4295072070
src=198.51.100.7 ttl: 52 last_seen: 4295000000 oldest_pkt: 1 4295000000
src=2001:0db8:0000:0000:0000:0000:0000:0064 ttl: 57 last_seen: 4295060000 oldest_pkt: 3 4295050000, 4295055000, \
4295060000
this line is not an entry
src= ttl: x last_seen: y

  src=203.0.113.9 ttl: 0 last_seen: 4295072000 oldest_pkt: 1 4295072000
"""

# Trimmed from a real /proc/timer_list (kernel 6.18, HZ 250): "now at" comes first, then one
# "jiffies:" line per CPU; other lines mention jiffies too and must not be taken for it.
TIMER_LIST = """\
Timer List Version: v0.10
HRTIMER_MAX_CLOCK_BASES: 8
now at 881181595618 nsecs

cpu: 0
 clock 0:
  .base:       00000000df0eff18
  .index:      0
  .resolution: 1 nsecs
  .offset:     0 nsecs
active timers:
 #0: <000000001a622444>, tick_nohz_handler, S:01
 # expires at 877080000000-877080000000 nsecs [in 25829 to 25829 nsecs]
  .tick_stopped   : 0
  .idle_jiffies   : 4295112456
  .idle_calls     : 64879
  .last_jiffies   : 4295112504
  .next_timer     : 880980000000
  .idle_expires   : 880980000000 nsecs
jiffies: 4295112512

cpu: 1
 clock 0:
  .idle_jiffies   : 4295112455
jiffies: 4295112513

Tick Device: mode:     1
"""


def jiffies_at(hz: int, uptime: float) -> int:
    """The kernel's jiffies after `uptime` seconds: they start 300 s before a 32-bit wrap."""
    return 2**32 - 300 * hz + round(hz * uptime)


# ---- parse --------------------------------------------------------------------------------


def test_parse_realistic_text():
    entries = recent.parse(PROC_TEXT)
    assert [e.address for e in entries] == [
        "192.0.2.100",
        "198.51.100.7",
        "2001:db8::64",  # the kernel prints it uncompressed; parse normalises it
        "203.0.113.9",
    ]
    first, second, v6, indented = entries
    assert first == recent.RawEntry("192.0.2.100", 64, 4295072070, (4295071000, 4295072070))
    assert second.stamps == (4295000000,)
    assert v6.ttl == 57
    assert v6.last_seen == 4295060000
    assert v6.stamps == (4295050000, 4295055000, 4295060000)
    assert indented.ttl == 0


def test_parse_ignores_garbage_and_empty_text():
    assert recent.parse("") == []
    assert recent.parse("nothing here\nsrc=?\n") == []


# ---- ages, windows, hits ------------------------------------------------------------------------


def test_age_depends_on_hz():
    entries = recent.parse(PROC_TEXT)[:1]  # last_seen 4295072070
    now = 4295072070 + 1000
    (at_250,) = recent.knocks(entries, now, hz=250, window=4000)
    (at_1000,) = recent.knocks(entries, now, hz=1000, window=4000)
    assert at_250.age == pytest.approx(4.0)
    assert at_1000.age == pytest.approx(1.0)
    assert at_250.time_left == pytest.approx(3996.0)
    assert at_1000.time_left == pytest.approx(3999.0)


def test_time_left_clamps_at_zero():
    entries = recent.parse(PROC_TEXT)
    now = 4295072070 + 250 * 5000
    found = recent.knocks(entries, now, hz=250, window=4000)
    assert all(k.age > 4000 for k in found)
    assert [k.time_left for k in found] == [0.0] * len(found)


def test_age_never_negative_when_now_was_read_before_the_list():
    (knock,) = recent.knocks(recent.parse(PROC_TEXT)[:1], now_jiffies=4295072000, hz=250, window=10)
    assert knock.age == 0
    assert knock.time_left == 10


def test_hits_count_the_stamps():
    found = recent.knocks(recent.parse(PROC_TEXT), 4295072070, hz=250, window=4000)
    assert [k.hits for k in found] == [2, 1, 3, 1]


def test_knock_to_json_rounds():
    knock = recent.Knock("192.0.2.1", age=1.2345, time_left=3998.7655, hits=2)
    assert knock.to_json() == {"address": "192.0.2.1", "age": 1.2, "time_left": 3998.8, "hits": 2}


# ---- report -----------------------------------------------------------------------------------

NOW = 4295072070  # the newest entry's last_seen


def three_entries(ages: tuple[float, float, float], hz: int = 250) -> str:
    return "".join(
        f"src=192.0.2.{i} ttl: 64 last_seen: {NOW - round(age * hz)} oldest_pkt: 1 {NOW - round(age * hz)}\n"
        for i, age in enumerate(ages, start=1)
    )


def test_report_oldest_age_and_live(monkeypatch):
    monkeypatch.setattr(recent, "list_capacity", lambda: 100)
    text = three_entries((10, 500, 5000))
    report = recent.report("mxknock4-32", window=4000, text=text, now_jiffies=NOW, hz=250)
    assert report.exists
    assert report.entries == 3
    assert report.capacity == 100
    assert report.oldest_age == pytest.approx(5000)
    assert report.live == 2
    assert not report.evicting


def test_report_evicting_when_full_and_oldest_inside_the_window(monkeypatch):
    monkeypatch.setattr(recent, "list_capacity", lambda: 3)
    report = recent.report("mxknock4-32", window=4000, text=three_entries((1, 2, 3999)), now_jiffies=NOW, hz=250)
    assert report.entries == report.capacity == 3
    assert report.evicting
    assert report.to_json()["evicting"] is True


def test_report_not_evicting_when_full_but_oldest_expired(monkeypatch):
    monkeypatch.setattr(recent, "list_capacity", lambda: 3)
    report = recent.report("mxknock4-32", window=4000, text=three_entries((1, 2, 4001)), now_jiffies=NOW, hz=250)
    assert report.entries == 3
    assert not report.evicting


def test_report_not_evicting_when_not_full(monkeypatch):
    monkeypatch.setattr(recent, "list_capacity", lambda: 4)
    report = recent.report("mxknock4-32", window=4000, text=three_entries((1, 2, 3)), now_jiffies=NOW, hz=250)
    assert not report.evicting


def test_report_hz_changes_eviction(monkeypatch):
    """The same jiffies are 1000 s old at HZ 1000 but 4000 s old at HZ 250."""
    monkeypatch.setattr(recent, "list_capacity", lambda: 1)
    text = f"src=192.0.2.1 ttl: 64 last_seen: {NOW - 1_000_000} oldest_pkt: 1 {NOW - 1_000_000}\n"
    fast = recent.report("l", window=2000, text=text, now_jiffies=NOW, hz=1000)
    slow = recent.report("l", window=2000, text=text, now_jiffies=NOW, hz=250)
    assert (fast.oldest_age, fast.evicting) == (1000, True)
    assert (slow.oldest_age, slow.evicting) == (4000, False)


def test_report_empty_list(monkeypatch):
    monkeypatch.setattr(recent, "list_capacity", lambda: 100)
    report = recent.report("mxknock4-32", window=4000, text="", now_jiffies=NOW, hz=250)
    assert report.exists and report.entries == 0
    assert report.oldest_age is None
    assert not report.evicting
    assert report.to_json()["oldest_age"] is None


def test_report_missing_list(monkeypatch, tmp_path):
    monkeypatch.setattr(recent, "PROC_DIR", tmp_path)
    monkeypatch.setattr(recent, "list_capacity", lambda: 100)
    report = recent.report("mxknock4-32", window=4000)
    assert not report.exists
    assert (report.entries, report.oldest_age, report.knocks) == (0, None, ())


def test_report_reads_the_proc_file(monkeypatch, tmp_path):
    monkeypatch.setattr(recent, "PROC_DIR", tmp_path)
    monkeypatch.setattr(recent, "list_capacity", lambda: 100)
    (tmp_path / "mxknock6-128").write_text(PROC_TEXT)
    report = recent.report("mxknock6-128", window=4000, now_jiffies=NOW, hz=250)
    assert report.entries == 4
    assert report.to_json(with_knocks=True)["knocks"][0]["address"] == "192.0.2.100"
    assert "knocks" not in report.to_json()


def test_list_capacity_from_the_module_parameter(monkeypatch, tmp_path):
    param = tmp_path / "ip_list_tot"
    monkeypatch.setattr(recent, "LIST_SIZE_PARAM", param)
    assert recent.list_capacity() == recent.DEFAULT_LIST_SIZE  # missing
    param.write_text("5000\n")
    assert recent.list_capacity() == 5000
    param.write_text("garbage\n")
    assert recent.list_capacity() == recent.DEFAULT_LIST_SIZE


def test_report_uses_the_module_parameter(monkeypatch, tmp_path):
    param = tmp_path / "ip_list_tot"
    param.write_text("3\n")
    monkeypatch.setattr(recent, "LIST_SIZE_PARAM", param)
    report = recent.report("l", window=4000, text=three_entries((1, 2, 3)), now_jiffies=NOW, hz=250)
    assert report.capacity == 3
    assert report.evicting


# ---- HZ and jiffies -----------------------------------------------------------------------------


@pytest.mark.parametrize("hz", recent.HZ_CANDIDATES)
@pytest.mark.parametrize("uptime", [0.5, 60, 250, 400, 877, 3600, 40 * 86400])
def test_hz_from_sample(hz: int, uptime: float):
    assert recent.hz_from_sample(jiffies_at(hz, uptime), uptime) == hz


@pytest.mark.parametrize("hz", recent.HZ_CANDIDATES)
def test_hz_from_sample_tolerates_a_little_skew(hz: int):
    # jiffies and the clock are read a moment apart
    assert recent.hz_from_sample(jiffies_at(hz, 1000) + hz // 5, 1000) == hz


@pytest.mark.parametrize("hz", recent.HZ_CANDIDATES)
@pytest.mark.parametrize("uptime", [271, 299, 300, 301, 329])
def test_hz_from_sample_near_300_seconds_is_undecided(hz: int, uptime: float):
    assert recent.hz_from_sample(jiffies_at(hz, uptime), uptime) is None


def test_hz_from_sample_refuses_a_rate_between_candidates():
    assert recent.hz_from_sample(jiffies_at(275, 1000), 1000) is None
    assert recent.hz_from_sample(jiffies_at(600, 1000), 1000) is None


def test_read_jiffies_from_timer_list():
    jiffies, now = recent.read_jiffies(TIMER_LIST)
    assert jiffies == 4295112512  # the first CPU's line, not .idle_jiffies or .last_jiffies
    assert now == pytest.approx(881.181595618)
    assert recent.hz_from_sample(jiffies, now) == 250


def test_read_jiffies_without_the_lines():
    with pytest.raises(RuntimeError, match="jiffies"):
        recent.read_jiffies("Timer List Version: v0.10\n  .idle_jiffies   : 4295112456\n")


def test_kernel_hz_from_one_sample(monkeypatch):
    recent.kernel_hz.cache_clear()
    monkeypatch.setattr(recent, "read_jiffies", lambda: (jiffies_at(1000, 5000), 5000.0))
    try:
        assert recent.kernel_hz() == 1000
    finally:
        recent.kernel_hz.cache_clear()


def test_kernel_hz_measures_the_tick_rate_near_300_seconds(monkeypatch):
    samples = iter([(jiffies_at(300, 300), 300.0), (jiffies_at(300, 300), 300.0), (jiffies_at(300, 300.2), 300.2)])
    recent.kernel_hz.cache_clear()
    monkeypatch.setattr(recent, "read_jiffies", lambda: next(samples))
    monkeypatch.setattr(recent.time, "sleep", lambda seconds: None)
    try:
        assert recent.kernel_hz() == 300
    finally:
        recent.kernel_hz.cache_clear()


@pytest.mark.parametrize("hz", [250, 1000])
def test_summary_agrees_with_the_full_report(hz: int) -> None:
    now = jiffies_at(hz, 10_000)
    lines = [
        f"src=192.0.2.{i} ttl: 64 last_seen: {now - i * hz * 7} oldest_pkt: 1 {now - i * hz * 7}" for i in range(1, 120)
    ]
    text = "\n".join(["garbage line", *lines, ""])
    full = recent.report("l", 400, text=text, now_jiffies=now, hz=hz)
    fast = recent.report("l", 400, text=text, now_jiffies=now, hz=hz, with_knocks=False)
    assert (fast.entries, fast.live, fast.oldest_age) == (full.entries, full.live, full.oldest_age)
    assert fast.entries == 119 and fast.live == 57  # ages 7..399 s are inside a 400 s window
    assert fast.knocks == ()
