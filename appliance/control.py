"""The control API: JSON lines over a Unix socket (root-only by default).

Request:  {"command": "status", "args": {...}}
Response: {"ok": true, "result": {...}}
      or  {"ok": false, "error": "what went wrong and what to do",
           "errors": [{"field": "mx2[0]", "message": "..."}]}   (config errors only)

One request per line; a connection may send several. The CLI and the console are
the clients; nothing else in the appliance talks to the engine.

Every socket has its own budget (SocketLimits): connections served at once (a thread
each; one more is answered with a one-line error and closed, without a thread), the
longest request line (read in bounded chunks, never more than that into memory) and the
time a request line may take to arrive, counted from the end of the previous answer (an
idle or trickling client is cut). The 0666 status socket gets a small budget of its own,
so that no local user can starve root's control socket.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class SocketLimits:
    max_clients: int  # connections served at once, a thread each
    max_line: int  # bytes in one request line, newline excluded
    line_timeout: float  # seconds for a whole request line to arrive (and an answer to leave)
    max_per_uid: int = 0  # connections one local user may hold at once (SO_PEERCRED); 0: max_clients


# Root's socket: the CLI and the console open one connection per call. A 16 MiB apply
# arrives in well under a second over a Unix socket; a minute is for a stalled client.
CONTROL_LIMITS = SocketLimits(max_clients=8, max_line=MAX_REQUEST, line_timeout=60.0)
# Anyone's socket: `ping` and `status` take no arguments; 4 KiB is plenty. One user holds at
# most 4 of its 16 connections, so a local user's flood leaves room for the metrics server's.
STATUS_LIMITS = SocketLimits(max_clients=16, max_line=4096, line_timeout=10.0, max_per_uid=4)
# Thread budget of mxknockd against the unit's TasksMax=64 (image/.../mxknockd.service):
#   1 main + 2 accept loops + 8 control + 16 status + 1 confirm-within timer = 28,
# leaving 36 for anything a library starts. Connections over a cap cost no thread.

# Commands that change the box may take long (a 50k whitelist, a lock held by a state
# save): the client waits this long for their answer instead of its usual timeout, so that
# it does not report a failure while the daemon is still putting the change in force.
CHANGE_COMMANDS = frozenset(
    {"apply", "confirm", "rollback", "reload", "whitelist_add", "whitelist_remove", "trusted_add", "trusted_remove"}
)
CHANGE_TIMEOUT = 600.0


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
# Called when the answer of a successful request could not be delivered (the client went away).
Undelivered = Callable[[str, dict[str, Any], Any], None]


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Request lines from a socket, with a bound on size and on the time each may take."""

    def __init__(self, sock: socket.socket, limits: SocketLimits):
        self.sock = sock
        self.limits = limits
        self.buffer = bytearray()

    def readline(self) -> bytes | None:
        """The next line (with its newline), or None at end of input. Raises TimeoutError,
        _LineTooLong; holds at most max_line + READ_CHUNK bytes."""
        deadline = time.monotonic() + self.limits.line_timeout
        searched = 0
        while True:
            end = self.buffer.find(b"\n", searched)
            if end >= 0:
                if end > self.limits.max_line:
                    raise _LineTooLong()
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > self.limits.max_line:
                raise _LineTooLong()
            searched = len(self.buffer)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self.sock.settimeout(left)
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                return bytes(self.buffer) if self.buffer else None  # a last line without newline
            self.buffer += chunk


class _RequestHandler(socketserver.BaseRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        limits = self.server.limits
        reader = _LineReader(self.request, limits)
        while True:
            try:
                line = reader.readline()
            except TimeoutError:
                log.debug("a client of %s sent no whole request in %g s: closed", self.server.path, limits.line_timeout)
                self._answer({"ok": False, "error": f"no whole request within {limits.line_timeout:g} s: closed"})
                return
            except _LineTooLong:
                # The rest of the line is not read: the connection closes, memory stays bounded.
                self._answer({"ok": False, "error": f"request larger than {limits.max_line} bytes: closed"})
                return
            if line is None:
                return
            reply, request = self.server.dispatch_request(line)
            if not self._answer(reply) and reply.get("ok") and request is not None:
                self.server.undelivered_answer(request, reply["result"])
                return

    def _answer(self, reply: dict[str, Any]) -> bool:
        """Send one reply line; False when the client is gone or does not read it in time."""
        try:
            self.request.settimeout(self.server.limits.line_timeout)
            self.request.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            log.info("a client of %s went away before its answer", self.server.path)
            return False
        return True


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # Waiting to be accepted (kernel memory only; the accept loop never blocks for long). A
    # full backlog makes a Unix client's connect() fail at once with EAGAIN.
    request_queue_size = 128

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        mode: int = 0o600,
        limits: SocketLimits = CONTROL_LIMITS,
        routine_errors: tuple[type[Exception], ...] = (),
        on_undelivered: Undelivered | None = None,
    ):
        self.handlers = handlers
        self.limits = limits
        self.routine_errors = routine_errors  # refusals the engine raises: one log line, no traceback
        self.on_undelivered = on_undelivered
        self._clients = 0
        self._per_uid: dict[int, int] = {}
        self._uid_of: dict[socket.socket, int] = {}
        self._clients_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        old_umask = os.umask(0o777 ^ mode)  # the socket is born with its final mode
        try:
            super().__init__(str(path), _RequestHandler)
        finally:
            os.umask(old_umask)
        self.path = path

    # ---- connections --------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        uid = _peer_uid(request)
        per_uid = self.limits.max_per_uid or self.limits.max_clients
        with self._clients_lock:
            if self._clients >= self.limits.max_clients:
                refusal = f"too many connections to {self.path} ({self.limits.max_clients} at once): try again"
            elif self._per_uid.get(uid, 0) >= per_uid:
                refusal = f"too many connections to {self.path} from uid {uid} ({per_uid} at once): try again"
            else:
                refusal = None
                self._clients += 1
                self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        if refusal is not None:
            self._refuse(request, refusal)
            return
        with self._clients_lock:
            self._uid_of[request] = uid
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread to be had (the unit's TasksMax): refuse, don't die
            self._release(request)
            self._refuse(request, "mxknockd has no thread free for this connection: try again")

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._clients_lock:
            uid = self._uid_of.pop(request)
            self._clients -= 1
            self._per_uid[uid] -= 1
            if not self._per_uid[uid]:
                del self._per_uid[uid]

    def _refuse(self, request: socket.socket, message: str) -> None:
        """One line, without blocking the accept loop and without a thread, then close."""
        log.warning("%s refused a connection: %s", self.path, message)
        try:
            request.setblocking(False)
            request.send((json.dumps({"ok": False, "error": message}) + "\n").encode())
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer (a scrape that timed out, Ctrl+C on the
        # CLI) is not the daemon's fault: one line, not a traceback in the journal.
        if isinstance(sys.exc_info()[1], OSError):
            log.info("a control client hung up before its answer: %s", sys.exc_info()[1])
            return
        super().handle_error(request, client_address)

    # ---- requests ------------------------------------------------------------------

    def dispatch(self, line: bytes) -> dict[str, Any]:
        return self.dispatch_request(line)[0]

    def dispatch_request(self, line: bytes) -> tuple[dict[str, Any], tuple[str, dict[str, Any]] | None]:
        """The reply, and (command, args) when a handler ran."""
        if len(line.rstrip(b"\n")) > self.limits.max_line:
            return {"ok": False, "error": f"request larger than {self.limits.max_line} bytes"}, None
        try:
            request = json.loads(line)
        except RecursionError:
            return {"ok": False, "error": "request is nested too deeply"}, None
        except ValueError:
            return {"ok": False, "error": "request is not valid JSON"}, None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be an object with a "command" string'}, None
        command, args = request["command"], request.get("args", {})
        handler = self.handlers.get(command)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {command[:100]!r}; known: {known}"}, None
        if not isinstance(args, dict):
            return {"ok": False, "error": '"args" must be an object'}, None
        return self._run(command, handler, args), (command, args)

    def _run(self, command: str, handler: Handler, args: dict[str, Any]) -> dict[str, Any]:
        try:
            result = handler(args)
            json.dumps(result)  # an answer that cannot be sent is the daemon's bug, caught here
            return {"ok": True, "result": result}
        except ConfigError as exc:
            return {"ok": False, "error": f"config refused: {exc}", "errors": exc.to_json()}
        except self.routine_errors as exc:
            log.info("%s refused: %s", command, exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug (arguments are checked before): the daemon outlives it
            log.exception("command %s failed", command)
            return {"ok": False, "error": str(exc) or type(exc).__name__}

    def undelivered_answer(self, request: tuple[str, dict[str, Any]], result: Any) -> None:
        if self.on_undelivered is None:
            return
        try:
            self.on_undelivered(request[0], request[1], result)
        except Exception:
            log.exception("undoing the undelivered %s failed", request[0])

    # ---- life ----------------------------------------------------------------------

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=f"control-api:{self.path.name}", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def close(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self.shutdown()  # waits for serve_forever: only call it if that ever ran
        self.server_close()
        self.path.unlink(missing_ok=True)


def _peer_uid(sock: socket.socket) -> int:
    """The connecting process's user (SO_PEERCRED: pid, uid, gid as three ints)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except OSError:
        return -1


class SharedResult:
    """A result computed at most once per `lifetime` seconds, one computation at a time:
    callers that arrive meanwhile wait for it and share it. Errors are shared too (for
    the same lifetime), so that a failing source is not hammered either."""

    def __init__(self, compute: Callable[[], Any], lifetime: float):
        self.compute = compute
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._value: Any = None
        self._error: BaseException | None = None

    def get(self) -> Any:
        with self._lock:  # the one computing holds it; the others wait here, then reuse
            if time.monotonic() - self._at >= self.lifetime:
                try:
                    self._value, self._error = self.compute(), None
                except Exception as exc:
                    self._value, self._error = None, exc
                self._at = time.monotonic()
            if self._error is not None:
                raise self._error
            return self._value


class ControlClient:
    """Blocking client; one connection per call keeps it simple and thread-safe."""

    def __init__(self, path: Path | None = None, timeout: float = 30.0):
        self.path = path or socket_path()
        self.timeout = timeout

    def call(self, command: str, **args: Any) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                _connect(sock, self.path, self.timeout)
                sock.sendall((json.dumps({"command": command, "args": args}) + "\n").encode())
                if command in CHANGE_COMMANDS:
                    sock.settimeout(max(self.timeout, CHANGE_TIMEOUT))
                reply = sock.makefile("rb").readline()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"mxknockd is not running (no socket at {self.path}): start it with `systemctl start mxknockd`",
                unreachable=True,
            ) from exc
        except PermissionError as exc:
            raise ControlError(f"no permission to use {self.path}: run as root", unreachable=True) from exc
        except TimeoutError as exc:
            if command in CHANGE_COMMANDS:
                raise ControlError(
                    f"mxknockd did not answer {command} within {max(self.timeout, CHANGE_TIMEOUT):g} s: the change may "
                    "be in force or not; see `mxknock status` (an unconfirmed apply rolls back by itself)",
                    unreachable=True,
                ) from exc
            raise ControlError(f"cannot talk to mxknockd at {self.path}: {exc}", unreachable=True) from exc
        except OSError as exc:
            raise ControlError(f"cannot talk to mxknockd at {self.path}: {exc}", unreachable=True) from exc
        if not reply:
            raise ControlError("mxknockd closed the connection without answering", unreachable=True)
        response = json.loads(reply)
        if not response.get("ok"):
            raise ControlError(response.get("error", "unknown error"), response.get("errors"))
        return response.get("result")


def _connect(sock: socket.socket, path: Path, timeout: float) -> None:
    """connect(), retried while the server's backlog is full (EAGAIN on a Unix socket)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path}: the daemon's queue of connections stayed full") from None
            time.sleep(0.02)
