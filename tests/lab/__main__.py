"""`python -m tests.lab up [--prefix mxk]` builds the lab and leaves it running (for the demo);
`python -m tests.lab down` tears down the lab recorded in the state file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import addresses as A
from . import demo
from .lab import Lab, missing_requirements
from .netns import LabError

STATE_FILE = Path("/run/mxknock-demo/lab.json")

MX_SETS = {
    "dual": A.MX_DUAL_STACK,
    "ipv4-only": A.MX_IPV4_ONLY,
    "mx1-v4-only": A.MX_MX1_V4_ONLY,
}


def up(prefix: str, mx: str, state_file: Path, with_daemon: bool = False) -> int:
    if state_file.exists():
        # A previous demo lab: take it down first rather than leak it.
        down(state_file)
    lab = Lab(prefix, mx=MX_SETS[mx])
    lab.start()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state = {**lab.state(), "mx": mx, "namespaces": lab.topology.namespaces}
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    print(f"lab up in {lab.timings['total']:.2f}s: {', '.join(lab.topology.namespaces)}")
    print(f"state: {state_file}")
    if with_daemon:
        try:
            state["daemon_pid"] = demo.start_daemon(lab, state_file.parent)
        finally:  # recorded even on failure, so `down` cleans up what did start
            state_file.write_text(json.dumps(state, indent=2) + "\n")
        demo.show(lab)
    return 0


def down(state_file: Path) -> int:
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        print(f"no lab state at {state_file}; nothing to do")
        return 0
    demo.stop_daemon(state.get("daemon_pid"))
    demo.forget_daemon_files(state_file.parent)
    Lab(state["prefix"], workdir=Path(state["workdir"])).stop()
    state_file.unlink(missing_ok=True)
    print(f"lab {state['prefix']} down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    parser.add_argument("--state-file", type=Path, default=STATE_FILE)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build the lab and leave it running")
    p_up.add_argument("--prefix", default="mxk")
    p_up.add_argument("--mx", choices=sorted(MX_SETS), default="dual")
    p_up.add_argument("--with-daemon", action="store_true", help="run mxknockd on the embedded default")
    sub.add_parser("down", help="tear down the lab in the state file")
    args = parser.parse_args(argv)
    problems = missing_requirements()
    if problems:
        print(f"cannot run the lab: {'; '.join(problems)}", file=sys.stderr)
        return 2
    try:
        if args.cmd == "up":
            return up(args.prefix, args.mx, args.state_file, args.with_daemon)
        return down(args.state_file)
    except LabError as exc:
        print(f"lab error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
