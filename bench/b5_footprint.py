"""Benchmark 5: mxknockd's memory and CPU, idle and busy, against a bare Python process.

One lab with mxknockd (the configuration of benchmark 2: embedded default, SMTP port
2525, bench/netload.py sink on mx2). The baseline is `python -c 'import time;
time.sleep(...)'` from the same interpreter in the same namespace, sampled in the same
seconds. RSS (VmRSS) from /proc/PID/status; CPU from utime+stime in /proc/PID/stat (all
threads), per one-second interval, in percent of one core.

Phases: idle; benchmark 2's connection load through the bridge (the kernel does the
filtering, so the daemon should not notice); the console open (it asks for `status`
every 2 s); and after `mxknock apply` of a 10,000-entry whitelist.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.lab import Lab
from tests.lab.appliance import Appliance, config_text

from .b2_throughput import PORT, Rig
from .common import ProcSample, Row, Section, Spread, cpu_percent, python_in_ns, sample, whitelist
from .labs import prefix

CONSOLE_POLL = 2.0  # tui/app.py POLL_INTERVAL
WHITELIST = 10000


def watch(
    pids: dict[str, int], seconds: float, each_second: Callable[[int], None] | None = None
) -> dict[str, list[ProcSample]]:
    """Samples every second for `seconds`; each_second(i) runs right after sample i."""
    samples: dict[str, list[ProcSample]] = {name: [sample(pid)] for name, pid in pids.items()}
    start = time.monotonic()
    for tick in range(1, round(seconds) + 1):
        if each_second is not None:
            each_second(tick - 1)
        time.sleep(max(0.0, start + tick - time.monotonic()))
        for name, pid in pids.items():
            samples[name].append(sample(pid))
    return samples


def per_second_cpu(samples: list[ProcSample]) -> list[float]:
    return [cpu_percent(a, b) for a, b in itertools.pairwise(samples)]


def rss_mib(samples: list[ProcSample]) -> float:
    return samples[-1].rss_kib / 1024


def cpu_text(samples: list[ProcSample]) -> str:
    """Whole-phase average (finer than one tick per second) and the per-second spread."""
    per_second = Spread.of(per_second_cpu(samples))
    return f"{cpu_percent(samples[0], samples[-1]):.2f} % (per s {per_second.fmt(digits=1)})"


def run(quick: bool = False) -> Section:
    seconds = 4.0 if quick else 10.0
    section = Section(5, "mxknockd footprint")
    phases: dict[str, dict[str, list[ProcSample]]] = {}
    load: dict[str, float] = {"connections": 0, "seconds": 0.0}
    with Lab(prefix("f")) as lab:
        appliance = Appliance(lab.ns("fw"), lab.workdir / "fw")
        bare = None
        rig = None
        try:
            appliance.start(config_text(smtp_port=PORT))
            assert appliance.process is not None
            daemon = appliance.process.pid  # `ip netns exec` execs: the same process
            if "appliance.daemon" not in Path(f"/proc/{daemon}/cmdline").read_text():
                raise RuntimeError("the daemon's pid is not the daemon")
            bare = subprocess.Popen(python_in_ns(lab.ns("fw"), "-c", "import time; time.sleep(600)"))
            rig = Rig(lab)
            time.sleep(1.0)  # both settled after start-up
            pids = {"mxknockd": daemon, "bare python": bare.pid}
            phases["idle"] = watch(pids, seconds)

            client = rig.start_rate(seconds)
            phases["connection load"] = watch(pids, seconds)
            out, _ = client.communicate(timeout=seconds + 30)
            load.update(json.loads(out))

            def console(tick: int) -> None:
                if tick % round(CONSOLE_POLL) == 0:
                    appliance.status()

            phases["console open"] = watch(pids, seconds, console)
            result = appliance.apply(config_text(smtp_port=PORT, whitelist=whitelist(WHITELIST)))
            if result.returncode != 0:
                raise RuntimeError(f"mxknock apply failed: {result.stderr}")
            phases[f"after a {WHITELIST}-entry whitelist"] = watch(pids, min(seconds, 3.0))
        finally:
            if rig is not None:
                rig.close()
            if bare is not None:
                bare.kill()
                bare.wait(timeout=10)
            appliance.stop()

    idle = phases["idle"]
    base_rss = rss_mib(idle["bare python"])
    for phase, samples in phases.items():
        d, b = samples["mxknockd"], samples["bare python"]
        dcpu, bcpu = cpu_percent(d[0], d[-1]), cpu_percent(b[0], b[-1])
        extra = ""
        if phase == "connection load" and load["seconds"]:
            extra = f" ({load['connections'] / load['seconds']:.0f} new connections/s through the bridge)"
        section.rows.append(
            Row(
                f"mxknockd, {phase}: RSS; CPU{extra}",
                f"{rss_mib(d):.1f} MiB; {cpu_text(d)}",
                f"{rss_mib(b):.1f} MiB; {cpu_text(b)}",
                f"+{rss_mib(d) - rss_mib(b):.1f} MiB ({rss_mib(d) / rss_mib(b):.1f}×); {dcpu - bcpu:+.2f} % CPU",
            )
        )
    peak = max(s.hwm_kib for samples in phases.values() for s in samples["mxknockd"]) / 1024
    section.notes += [
        f"Each phase lasts {seconds:g} s (the last one 3 s), sampled every second. CPU in percent of one "
        "core: the average over the phase, then median [IQR] of the one-second intervals (the kernel "
        f"counts in 10 ms ticks, so 1 % is a second's resolution). Bare Python RSS: {base_rss:.1f} MiB.",
        f"Peak RSS of mxknockd over the run (VmHWM): {peak:.1f} MiB.",
        "The connection load is benchmark 2's rate client (knocked sources, 8 in flight) running through "
        "the whole phase; the console phase asks `status` over the control socket every "
        f"{CONSOLE_POLL:g} s as the console does.",
    ]
    return section
