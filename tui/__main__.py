"""python -m tui [--socket PATH] [--confirm-within SECONDS]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.control import ControlClient

from .app import DEFAULT_CONFIRM_WITHIN, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mxknock console", description="mxknock's console")
    parser.add_argument("--socket", type=Path, default=None, help="control socket of mxknockd")
    parser.add_argument(
        "--confirm-within",
        type=float,
        default=DEFAULT_CONFIRM_WITHIN,
        metavar="SECONDS",
        help="changes roll back unless kept within this time (0: no countdown)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run(ControlClient(args.socket), args.confirm_within)
    return 0


if __name__ == "__main__":
    sys.exit(main())
