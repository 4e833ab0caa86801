"""The control API: JSON lines over a Unix socket (root-only by default).

Request:  {"command": "status", "args": {...}}
Response: {"ok": true, "result": {...}}
      or  {"ok": false, "error": "what went wrong and what to do",
           "errors": [{"field": "mx2[0]", "message": "..."}]}   (config errors only)

One request per line; a connection may send several. The CLI and the console are
the clients; nothing else in the appliance talks to the engine.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/mxknock/control.sock")
# Read-only: status for anyone on the box (the metrics server runs as a user of its own),
# with no command that changes anything.
DEFAULT_STATUS_SOCKET = Path("/run/mxknock/status.sock")
STATUS_COMMANDS = ("ping", "status")
MAX_REQUEST = 16 * 1024 * 1024  # a whitelist of 65536 networks fits with room to spare


def socket_path() -> Path:
    return Path(os.environ.get("MXKNOCK_SOCKET", DEFAULT_SOCKET))


def status_socket_path() -> Path:
    return Path(os.environ.get("MXKNOCK_STATUS_SOCKET", DEFAULT_STATUS_SOCKET))


class ControlError(RuntimeError):
    """The daemon refused a request (or could not be reached)."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, unreachable: bool = False):
        super().__init__(message)
        self.errors = errors or []
        self.unreachable = unreachable


Handler = Callable[[dict[str, Any]], Any]


class _RequestHandler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST + 1)
            if not line:
                return
            self.wfile.write((json.dumps(self.server.dispatch(line)) + "\n").encode())
            self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, handlers: dict[str, Handler], mode: int = 0o600):
        self.handlers = handlers
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        old_umask = os.umask(0o777 ^ mode)  # the socket is born with its final mode
        try:
            super().__init__(str(path), _RequestHandler)
        finally:
            os.umask(old_umask)
        self.path = path

    def dispatch(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be an object with a "command" string'}
        command, args = request["command"], request.get("args", {})
        handler = self.handlers.get(command)
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(sorted(self.handlers))}"}
        if not isinstance(args, dict):
            return {"ok": False, "error": '"args" must be an object'}
        try:
            return {"ok": True, "result": handler(args)}
        except ConfigError as exc:
            return {"ok": False, "error": f"config refused: {exc}", "errors": exc.to_json()}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"bad arguments for {command}: {exc}"}
        except Exception as exc:  # the daemon must outlive any one bad request
            log.exception("command %s failed", command)
            return {"ok": False, "error": str(exc)}

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer (a scrape that timed out, Ctrl+C on the
        # CLI) is not the daemon's fault: one line, not a traceback in the journal.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            log.info("a control client hung up before its answer")
            return
        super().handle_error(request, client_address)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="control-api", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def close(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self.shutdown()  # waits for serve_forever: only call it if that ever ran
        self.server_close()
        self.path.unlink(missing_ok=True)


class ControlClient:
    """Blocking client; one connection per call keeps it simple and thread-safe."""

    def __init__(self, path: Path | None = None, timeout: float = 30.0):
        self.path = path or socket_path()
        self.timeout = timeout

    def call(self, command: str, **args: Any) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall((json.dumps({"command": command, "args": args}) + "\n").encode())
                reply = sock.makefile("rb").readline()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"mxknockd is not running (no socket at {self.path}): start it with `systemctl start mxknockd`",
                unreachable=True,
            ) from exc
        except PermissionError as exc:
            raise ControlError(f"no permission to use {self.path}: run as root", unreachable=True) from exc
        except OSError as exc:
            raise ControlError(f"cannot talk to mxknockd at {self.path}: {exc}", unreachable=True) from exc
        if not reply:
            raise ControlError("mxknockd closed the connection without answering", unreachable=True)
        response = json.loads(reply)
        if not response.get("ok"):
            raise ControlError(response.get("error", "unknown error"), response.get("errors"))
        return response.get("result")
