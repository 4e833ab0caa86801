"""mxknockd: puts the config in force, serves the control API, reloads on SIGHUP.

On stop the rules stay in the kernel: the bridge keeps filtering without us.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import config as config_module
from . import state as state_module
from .config import ConfigError, FieldError
from .control import (
    CONTROL_LIMITS,
    STATUS_COMMANDS,
    STATUS_LIMITS,
    ControlServer,
    SharedResult,
    socket_path,
    status_socket_path,
)
from .engine import Engine, EngineError
from .notify import notify, watchdog_interval

log = logging.getLogger("mxknockd")


# Each command's arguments: name -> (kind, required). Checked before the engine is called,
# so that a bad argument is refused by name and an error from inside the engine is a bug.
TEXT, SECONDS, ENTRIES = "text", "seconds", "entries"
ARGS: dict[str, dict[str, tuple[str, bool]]] = {
    "check": {"yaml": (TEXT, True)},
    "apply": {"yaml": (TEXT, True), "confirm_within": (SECONDS, False)},
    "whitelist_add": {"entries": (ENTRIES, True)},
    "whitelist_remove": {"entries": (ENTRIES, True)},
    "trusted_add": {"entries": (ENTRIES, True)},
    "trusted_remove": {"entries": (ENTRIES, True)},
}
STATUS_LIFETIME = 1.0  # seconds the status socket reuses one status: its readers cannot load the engine


def check_args(command: str, args: dict[str, Any]) -> None:
    """Refuse unknown, missing and mistyped arguments, naming them (ConfigError)."""
    spec = ARGS.get(command, {})
    errors = [FieldError(f"args.{name}"[:100], "unknown argument") for name in args if name not in spec]
    for name, (kind, required) in spec.items():
        value = args.get(name)
        if value is None:
            if required:
                errors.append(FieldError(f"args.{name}", "missing"))
        elif kind == TEXT and not isinstance(value, str):
            errors.append(FieldError(f"args.{name}", "must be a string"))
        elif kind == SECONDS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.append(FieldError(f"args.{name}", "must be a number of seconds"))
        elif kind == ENTRIES and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            errors.append(FieldError(f"args.{name}", "must be a list of strings"))
    if errors:
        raise ConfigError(errors)


def handlers(engine: Engine) -> dict[str, Any]:
    """The control API's commands; args come from the JSON request (checked by check_args)."""
    commands = {
        "ping": lambda a: {"pong": True},
        "status": lambda a: engine.status(),
        "knocks": lambda a: engine.knocks(),
        "refused": lambda a: engine.refused(),
        "config": lambda a: engine.config_text(),
        "rules": lambda a: engine.rules_text(),
        "check": lambda a: {"valid": True, "config": config_module.parse_yaml(a["yaml"]).to_dict()},
        "apply": lambda a: engine.apply_text(a["yaml"], a.get("confirm_within")),
        "confirm": lambda a: engine.confirm(),
        "rollback": lambda a: engine.rollback(),
        "reload": lambda a: engine.reload(),
        "whitelist_add": lambda a: engine.change_list("whitelist", add=list(a["entries"])),
        "whitelist_remove": lambda a: engine.change_list("whitelist", remove=list(a["entries"])),
        "whitelist_list": lambda a: {"whitelist": (engine.config_text()["config"] or {}).get("whitelist", [])},
        "trusted_list": lambda a: engine.trusted(),
        "trusted_add": lambda a: engine.change_trusted(add=list(a["entries"])),
        "trusted_remove": lambda a: engine.change_trusted(remove=list(a["entries"])),
    }
    return {name: _checked(name, handler) for name, handler in commands.items()}


def _checked(command: str, handler: Any) -> Any:
    def run(args: dict[str, Any]) -> Any:
        check_args(command, args)
        return handler(args)

    return run


def status_handlers(commands: dict[str, Any]) -> dict[str, Any]:
    """The read-only status socket's commands: its `status` is shared for STATUS_LIFETIME,
    computed by one reader at a time, so that a flood of readers costs the engine (and its
    lock, which root's changes need) at most one status a second."""
    shared = SharedResult(lambda: commands["status"]({}), STATUS_LIFETIME)
    status_only = {name: commands[name] for name in STATUS_COMMANDS}
    return {**status_only, "status": lambda a: (check_args("status", a), shared.get())[1]}


def undo_undelivered(engine: Engine) -> Any:
    """An apply with confirm_within whose answer never reached its client is rolled back at
    once: nobody learnt that it is waiting for a confirmation."""

    def undo(command: str, args: dict[str, Any], result: Any) -> None:
        if command != "apply" or not args.get("confirm_within"):
            return
        try:
            engine.rollback()
            log.warning("the client of an apply went away before its answer: the change is rolled back")
        except EngineError as exc:  # confirmed or rolled back meanwhile by someone else
            log.info("the client of an apply went away before its answer; nothing to roll back: %s", exc)

    return undo


def _maintain(engine: Engine) -> None:
    try:
        engine.maintain()
    except Exception:  # saving state must never stop the daemon; the next tick tries again
        log.exception("saving state failed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mxknockd", description="mxknock daemon: Unlisting for SMTP on a bridge")
    parser.add_argument("--config", type=Path, default=config_module.DEFAULT_PATH, help="YAML config file")
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="control socket (default $MXKNOCK_SOCKET or /run/mxknock/control.sock)",
    )
    parser.add_argument(
        "--status-socket",
        type=Path,
        default=None,
        help="read-only status socket, mode 0666 (default: status.sock next to --socket, "
        "else $MXKNOCK_STATUS_SOCKET or /run/mxknock/status.sock)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=state_module.DEFAULT_DIR, help="where knocks and proven senders are saved"
    )
    parser.add_argument("--save-interval", type=float, default=60.0, help="seconds between state saves")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    engine = Engine(args.config, state_dir=args.state_dir)
    engine.start()
    commands = handlers(engine)
    server = ControlServer(
        args.socket or socket_path(),
        commands,
        limits=CONTROL_LIMITS,
        routine_errors=(EngineError,),
        on_undelivered=undo_undelivered(engine),
    )
    server.serve_in_thread()
    status_path = args.status_socket or (args.socket.with_name("status.sock") if args.socket else status_socket_path())
    status_server = ControlServer(
        status_path, status_handlers(commands), mode=0o666, limits=STATUS_LIMITS, routine_errors=(EngineError,)
    )
    status_server.serve_in_thread()

    stop = threading.Event()
    reload_requested = threading.Event()
    wake = threading.Event()  # signals wake the main loop at once, not at the next tick

    def on_signal(event: threading.Event) -> Any:
        return lambda *_: (event.set(), wake.set())

    signal.signal(signal.SIGTERM, on_signal(stop))
    signal.signal(signal.SIGINT, on_signal(stop))
    signal.signal(signal.SIGHUP, on_signal(reload_requested))

    health = engine.status()["health"]
    log.info("ready (health %s), control socket %s", health, server.path)
    notify(f"READY=1\nSTATUS=health {health}")
    tick = min(watchdog_interval() or 5.0, args.save_interval)
    next_save = time.monotonic() + args.save_interval
    while not stop.is_set():
        wake.wait(tick)
        wake.clear()
        if time.monotonic() >= next_save:
            next_save = time.monotonic() + args.save_interval
            _maintain(engine)
        if reload_requested.is_set():
            reload_requested.clear()
            try:
                engine.reload()
                log.info("reloaded %s", args.config)
            except Exception as exc:  # a bad file must not take the daemon (or the rules) down
                log.error("reload refused, the running rules stay: %s", exc)
        notify("WATCHDOG=1")
    notify("STOPPING=1")
    server.close()
    status_server.close()
    _maintain(engine)  # save knocks and proven senders for the next start
    log.info("stopped; the rules stay in the kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
