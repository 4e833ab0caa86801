"""A measuring process inside a private network namespace (benchmarks 3 and 4).

Started as `ip netns exec NS python -m bench.nsworker` from the repo root; reads one JSON
request per line on stdin and answers one JSON line on stdout. Timing happens in here,
so neither `ip netns exec` nor Python's start-up is part of any figure.
"""

from __future__ import annotations

import cProfile
import io
import ipaddress
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import compiler, config, netfilter, recent
from appliance.engine import Engine
from appliance.ruleset import Ruleset

from .common import whitelist


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _config(n: int, variant: int) -> config.Config:
    return config.with_changes(config.default(), whitelist=whitelist(n, variant))


class Worker:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mxkbench-"))
        self.engine = Engine(self.dir / "mxknock.yaml")
        self.n = -1
        self.configs: list[config.Config] = []
        self.texts: list[str] = []
        self.rulesets: list[Ruleset] = []
        self.current = 0  # which of the two variants the kernel holds

    # --- benchmark 3: apply ---------------------------------------------------------------

    def prepare(self, n: int) -> dict[str, Any]:
        """Two rulesets that differ in one whitelist entry; the first goes in cold."""
        self.n = n
        self.configs = [_config(n, 0), _config(n, 1)]
        self.texts = [c.to_yaml() for c in self.configs]
        self.rulesets = [compiler.compile_config(c) for c in self.configs]
        netfilter.apply(self.rulesets[0])
        self.current = 0
        return {"entries": n}

    def _flip(self) -> tuple[Ruleset, Ruleset]:
        old, self.current = self.rulesets[self.current], 1 - self.current
        return self.rulesets[self.current], old

    def warm(self) -> float:
        """What the daemon does on a whitelist change: only the sets are swapped."""
        new, old = self._flip()
        return _timed(lambda: netfilter.apply(new, previous=old))

    def cold(self) -> float:
        """No knowledge of the kernel: read it, rewrite both tables and the sets."""
        new, _ = self._flip()
        return _timed(lambda: netfilter.apply(new))

    def verify(self, deep: bool) -> float:
        ruleset = self.rulesets[self.current]
        problems: list[str] = []
        t = _timed(lambda: problems.extend(netfilter.verify(ruleset, deep=deep)))
        if problems:
            raise RuntimeError(f"verify found: {problems}")
        return t

    def compile(self) -> float:
        return _timed(lambda: compiler.compile_config(self.configs[self.current]))

    def engine_apply(self) -> float:
        """The whole daemon path of `mxknock apply`: YAML, validate, compile, apply, verify, save."""
        self.current = 1 - self.current
        text = self.texts[self.current]
        return _timed(lambda: self.engine.apply_text(text))

    def naive_text(self, family: int, sets: bool) -> str:
        """iptables-restore input: mxknock's rules with the whitelist set rules replaced by one
        rule per entry (sets=False), or unchanged (sets=True: the ipsets hold the whitelist)."""
        fam = self.rulesets[self.current].family(family)
        mx2 = self.configs[self.current].mx("mx2", family)
        lines = []
        for rule in fam.rules:
            if rule.role != compiler.ROLE_WHITELIST or sets:
                lines.append(rule.render())
            elif rule.dst and ipaddress.ip_network(rule.dst).network_address == mx2:
                lines += [
                    f"-A {rule.chain} -s {entry} -d {rule.dst} -p tcp -m tcp --dport 25 -j ACCEPT"
                    for entry in fam.sets[0].entries
                ]
        head = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        head += [f":{chain} - [0:0]" for chain in fam.chains]
        return "\n".join([*head, *lines, "COMMIT", ""])

    def ipset_text(self) -> str:
        """`ipset restore` input that swaps in new whitelist sets, as netfilter.apply does."""
        lines = []
        for fam in self.rulesets[self.current].families:
            allow = fam.sets[0]
            staging = f"{allow.name}-tmp"
            family = "inet" if fam.family == 4 else "inet6"
            lines.append(f"create {staging} hash:net family {family} maxelem {allow.maxelem}")
            lines += [f"add {staging} {entry}" for entry in allow.entries]
            lines += [f"swap {staging} {allow.name}", f"destroy {staging}"]
        return "\n".join(lines) + "\n"

    def naive(self, kind: str) -> float:
        """A shell-tool baseline, timed as the processes a script would run.

        rules: iptables-legacy-restore + ip6tables-legacy-restore, whitelist as rules;
        ipset: `ipset restore` of the whitelist sets only (the sets-only change).
        """
        self.current = 1 - self.current
        if kind == "rules":
            jobs = [
                (["iptables-legacy-restore"], self.naive_text(4, sets=False)),
                (["ip6tables-legacy-restore"], self.naive_text(6, sets=False)),
            ]
        else:
            jobs = [(["ipset", "restore"], self.ipset_text())]
        t0 = time.perf_counter()
        for argv, text in jobs:
            subprocess.run(argv, input=text, text=True, check=True, capture_output=True, timeout=120)
        return time.perf_counter() - t0

    # --- benchmark 4: status with real knock lists ------------------------------------------

    def start_engine(self, window: int) -> dict[str, Any]:
        self.engine.apply_text(config.with_changes(config.default(), window=window).to_yaml())
        return {"knock_lists": [f.knock_list for f in self.engine.ruleset.families]}  # type: ignore[union-attr]

    def fill_list(self, name: str, addresses: list[str]) -> int:
        path = recent.PROC_DIR / name
        for address in addresses:
            path.write_text(f"+{address}\n")  # one write per entry: the kernel takes one per write
        return len(recent.parse(path.read_text()))

    def fill_trust(self, family: int, addresses: list[str]) -> int:
        name = compiler.set_name("trust", family)
        text = "".join(f"add {name} {a} timeout 3600\n" for a in addresses)
        subprocess.run(["ipset", "restore", "-exist"], input=text, text=True, check=True, timeout=120)
        return len(addresses)

    def report(self, name: str, window: int, with_knocks: bool) -> float:
        """with_knocks=False is what status does (numbers only), True what `mxknock knocks` does."""
        return _timed(lambda: recent.report(name, window, with_knocks=with_knocks))

    def read_split(self, name: str) -> float:
        """The floor for any reader: read the same /proc file and split it into fields."""
        path = recent.PROC_DIR / name
        return _timed(lambda: [line.split() for line in path.read_text().splitlines()])

    def status(self) -> float:
        return _timed(self.engine.status)

    def status_json(self) -> dict[str, Any]:
        return self.engine.status()

    # --- both ---------------------------------------------------------------------------------

    def peak(self, target: str, **args: Any) -> dict[str, Any]:
        """Peak Python heap (tracemalloc) of one call; slower, so never mixed with timings."""
        tracemalloc.start()
        try:
            getattr(self, target)(**args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return {"peak_bytes": peak}

    def profile(self, target: str, top: int = 12, **args: Any) -> str:
        """cProfile of one call: the functions with the most cumulative time."""
        prof = cProfile.Profile()
        prof.runcall(getattr(self, target), **args)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats("cumulative").print_stats(top)
        return out.getvalue()


def main() -> None:
    worker = Worker()
    try:
        for line in sys.stdin:  # ends when the caller closes our stdin
            request = json.loads(line)
            try:
                result: Any = getattr(worker, request["op"])(**request.get("args", {}))
                answer = {"ok": True, "result": result}
            except Exception as exc:  # report it to the caller; the worker stays usable
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        shutil.rmtree(worker.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
