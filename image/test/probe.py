"""One TCP connection from a bound source address; says how it ended (standard library only).

    python3 image/test/probe.py SOURCE DEST PORT [--timeout S]
prints one JSON line: {"result": "accepted"|"reset"|"timeout"|"error", "ms": ..., "banner": ...}
exit code: 0 accepted, 1 reset, 2 timeout, 3 other error.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def probe(source: str, dest: str, port: int, timeout: float) -> dict:
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        try:
            sock.connect((dest, port))
        except ConnectionRefusedError:
            return {"result": "reset", "ms": round((time.monotonic() - start) * 1000, 1)}
        except TimeoutError:
            return {"result": "timeout", "ms": round((time.monotonic() - start) * 1000, 1)}
        except OSError as exc:
            return {"result": "error", "error": str(exc), "ms": round((time.monotonic() - start) * 1000, 1)}
        ms = round((time.monotonic() - start) * 1000, 1)
        try:
            banner = sock.recv(200).decode(errors="replace").strip()
            sock.sendall(b"QUIT\r\n")
        except OSError as exc:
            banner = f"(no banner: {exc})"
        return {"result": "accepted", "ms": ms, "banner": banner}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    result = probe(args.source, args.dest, args.port, args.timeout)
    print(json.dumps(result), flush=True)
    return {"accepted": 0, "reset": 1, "timeout": 2}.get(result["result"], 3)


if __name__ == "__main__":
    sys.exit(main())
