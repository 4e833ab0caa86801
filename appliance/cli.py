"""mxknock: the command line. `check` and `rules` work offline; the rest asks mxknockd.

Exit codes (stable, for scripts):
  0  success (status: healthy)
  1  the operation failed
  2  bad input: invalid config, bad address, wrong usage
  3  mxknockd cannot be reached
  4  status: healthy but with warnings (e.g. the knock list is evicting)
  5  status: critical (not filtering, not forwarding, or not configured)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import config as config_module
from . import metrics, mxcheck
from .compiler import compile_config
from .config import ConfigError
from .control import ControlClient, ControlError
from .status import COUNTER_LABELS
from .status import human_age as _age

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE, EXIT_WARNING, EXIT_CRITICAL = 0, 1, 2, 3, 4, 5
HEALTH_EXIT = {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL}


def _read_config_text(path: str | None, use_default: bool) -> str:
    """The config's text; bytes that are not UTF-8 are a field-named refusal, not a traceback."""
    if use_default:
        return config_module.default_text()
    target = Path(path) if path else config_module.DEFAULT_PATH
    try:
        if str(target) == "-":
            stdin = getattr(sys.stdin, "buffer", None)  # a test's StringIO has none: text already
            return config_module.decode(stdin.read()) if stdin is not None else sys.stdin.read()
        return config_module.decode(target.read_bytes())
    except OSError as exc:
        raise ConfigError([config_module.FieldError("(file)", f"cannot read {target}: {exc.strerror}")]) from None


def cmd_check(args: argparse.Namespace, client: ControlClient) -> Any:
    config = config_module.parse_yaml(_read_config_text(args.file, args.default))
    return {"valid": True, "mode": config.mode, "families": [f"ipv{f}" for f in config.families()]}


def cmd_rules(args: argparse.Namespace, client: ControlClient) -> Any:
    config = config_module.parse_yaml(_read_config_text(args.file, args.default))
    return {"rules": compile_config(config).render()}


def cmd_apply(args: argparse.Namespace, client: ControlClient) -> Any:
    text = _read_config_text(args.file, args.default)
    config_module.parse_yaml(text)  # refuse locally with the same errors, before the daemon
    return client.call("apply", yaml=text, confirm_within=args.confirm_within)


def cmd_whitelist(args: argparse.Namespace, client: ControlClient) -> Any:
    if args.action == "list":
        return client.call("whitelist_list")
    if not args.entries:
        raise ConfigError(
            [config_module.FieldError("whitelist", f"give at least one address or network to {args.action}")]
        )
    return client.call(f"whitelist_{args.action}", entries=args.entries)


def cmd_check_mx(args: argparse.Namespace, client: ControlClient) -> Any:
    config = config_module.parse_yaml(_read_config_text(args.config, args.default))
    results = []
    for domain in args.domains:
        try:
            records = mxcheck.lookup(domain, args.nameserver)
        except Exception as exc:  # DNS failures are reported per domain, not as a crash
            findings = [mxcheck.Finding(mxcheck.ERROR, f"cannot look up {domain}: {exc}")]
        else:
            findings = mxcheck.assess(domain, config, records)
        results.append({"domain": domain, "findings": [f.to_json() for f in findings]})
    return {"domains": results}


def cmd_trusted(args: argparse.Namespace, client: ControlClient) -> Any:
    if args.action == "list":
        return client.call("trusted_list")
    if not args.entries:
        raise ConfigError([config_module.FieldError("trusted", f"give at least one address to {args.action}")])
    return client.call(f"trusted_{args.action}", entries=args.entries)


def cmd_metrics(args: argparse.Namespace, client: ControlClient) -> Any:
    return {"metrics": metrics.render(client.call("status"))}


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all: node_exporter's textfile collector may read at any moment."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def simple(command: str) -> Any:
    return lambda args, client: client.call(command)


# ---- readable output ----------------------------------------------------------------


def show_status(result: dict[str, Any]) -> str:
    lines = [f"health: {result['health'].upper()}"]
    lines += [f"  problem: {p}" for p in result["problems"]]
    lines += [f"  warning: {w}" for w in result["warnings"]]
    cfg = result.get("config")
    if cfg:
        lines.append(f"mode: {cfg['mode']}   window: {cfg['window']} s   smtp port: {cfg['smtp_port']}")
        lines.append(f"mx1: {', '.join(cfg['mx1'])}   mx2: {', '.join(cfg['mx2'])}")
    lines.append(f"filtering verified: {'yes' if result['filtering_verified'] else 'NO'}")
    br = result.get("bridge")
    if br:
        ports = "  ".join(
            f"{p['name']}({'up' if p['up'] else 'down'}, {'link' if p['carrier'] else 'no link'}"
            f"{'' if p['enslaved'] else ', NOT in bridge'})"
            for p in br["ports"]
        )
        lines.append(f"bridge {br['name']}: {'up' if br['up'] else 'down'}, ports {ports}")
        lines.append(
            f"br_netfilter: bridge nf_call_iptables={int(br['nf_call_iptables'])} nf_call_ip6tables="
            f"{int(br['nf_call_ip6tables'])}, sysctls {int(br['sysctl_iptables'])}/{int(br['sysctl_ip6tables'])}"
        )
    lines.append("counters (connection attempts):       total    IPv4    IPv6")
    for key, label in COUNTER_LABELS.items():
        c = result["counters"].get(key, {})  # an older daemon may not count everything
        lines.append(f"  {label:<34} {c.get('total', 0):>7} {c.get('ipv4', 0):>7} {c.get('ipv6', 0):>7}")
    trusted = result.get("trusted") or {}
    lines.append(
        f"proven senders: {trusted.get('total', 0)} (IPv4 {trusted.get('ipv4', 0)}, IPv6 {trusted.get('ipv6', 0)})"
    )
    for kl in result["knock_lists"]:
        lines.append(
            f"knock list {kl['name']}: {kl['entries']}/{kl['capacity']} entries ({kl['live']} inside the window), "
            f"oldest {_age(kl['oldest_age'])}{'  EVICTING' if kl['evicting'] else ''}"
        )
    if result.get("pending"):
        lines.append(
            f"pending change: rolls back in {result['pending']['seconds_left']:.0f} s unless `mxknock confirm`"
        )
    return "\n".join(lines)


def show_knocks(result: dict[str, Any], sort: str) -> str:
    lines = []
    for kl in result["knock_lists"]:
        lines.append(f"{kl['name']}: {kl['entries']}/{kl['capacity']} entries, window {kl['window']} s")
        knocks = sorted(kl["knocks"], key=lambda k: k[sort])
        lines.append(f"  {'address':<40} {'age':>8} {'left':>8} {'hits':>5}")
        for k in knocks:
            lines.append(f"  {k['address']:<40} {_age(k['age']):>8} {_age(k['time_left']):>8} {k['hits']:>5}")
    return "\n".join(lines) or "no knock lists"


def show_refused(result: dict[str, Any]) -> str:
    lines = []
    for rl in result["refused_lists"]:
        lines.append(f"refused at mx2 ({rl['name']}, newest {rl['capacity']} kept): {rl['entries']}")
        lines.append(f"  {'address':<40} {'last refused':>12} {'times':>5}")
        for k in sorted(rl["knocks"], key=lambda k: k["age"]):
            lines.append(f"  {k['address']:<40} {_age(k['age']) + ' ago':>12} {k['hits']:>5}")
    return "\n".join(lines) or "no refusals recorded (nolisting refuses nothing at mx2)"


def show(command: str, result: Any, args: argparse.Namespace) -> str:
    if command == "status":
        return show_status(result)
    if command == "knocks":
        return show_knocks(result, args.sort)
    if command == "refused":
        return show_refused(result)
    if command == "rules":
        return result["rules"].rstrip("\n")
    if command == "check":
        return f"valid: mode {result['mode']}, families {', '.join(result['families'])}"
    if command == "whitelist":
        return "\n".join(result["whitelist"]) or "(whitelist is empty)"
    if command == "apply":
        if result.get("confirm_within"):
            return f"applied; rolls back in {result['confirm_within']:g} s unless you run `mxknock confirm`"
        return "applied"
    if command == "check-mx":
        return "\n".join(
            f"{d['domain']}: {f['level'].upper()}: {f['message']}" for d in result["domains"] for f in d["findings"]
        )
    if command == "trusted":
        rows = [f"{e['address']:<40} {e['family']}  {_age(e['time_left'])} left" for e in result["trusted"]]
        state = "on" if result.get("enabled") else "off"
        return "\n".join([f"proven senders: {len(rows)} (trust {state})", *rows])
    if command == "default-config":
        return result.rstrip("\n")
    return json.dumps(result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxknock", description="control the mxknock appliance")
    parser.add_argument("--socket", type=Path, default=None, help="control socket of mxknockd")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, helptext in (("check", "validate a config file"), ("rules", "print the rules a config compiles to")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", nargs="?", help=f"config file (default {config_module.DEFAULT_PATH}; - for stdin)")
        p.add_argument("--default", action="store_true", help="use the embedded default config")
    p = sub.add_parser("apply", help="put a config file in force through mxknockd")
    p.add_argument("file", nargs="?", help=f"config file (default {config_module.DEFAULT_PATH}; - for stdin)")
    p.add_argument("--default", action="store_true", help="apply the embedded default config")
    p.add_argument("--confirm-within", type=float, metavar="SECONDS", help="roll back unless confirmed in time")
    sub.add_parser("confirm", help="keep the change applied with --confirm-within")
    sub.add_parser("rollback", help="undo the change applied with --confirm-within now")
    sub.add_parser("reload", help="re-read the config file")
    sub.add_parser("status", help="health, counters, knock list, bridge")
    p = sub.add_parser("knocks", help="the live knock list")
    p.add_argument("--sort", choices=["age", "time_left", "address", "hits"], default="age")
    p = sub.add_parser("check-mx", help="check that domains' MX records send mail to mx1 first, then mx2")
    p.add_argument("domains", nargs="+", metavar="DOMAIN")
    p.add_argument("--config", help=f"config file (default {config_module.DEFAULT_PATH})")
    p.add_argument("--default", action="store_true", help="check against the embedded default config")
    p.add_argument("--nameserver", help="ask this DNS server instead of the system's resolver")
    sub.add_parser("refused", help="sources refused at mx2 lately (they never reach the MTA's log)")
    p = sub.add_parser("whitelist", help="addresses and networks that pass without knocking")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("entries", nargs="*", metavar="ADDRESS_OR_NETWORK")
    p = sub.add_parser("trusted", help="proven senders: pass to mx2 without a knock")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("entries", nargs="*", metavar="ADDRESS")
    sub.add_parser("default-config", help="print the embedded default config")
    p = sub.add_parser("metrics", help="status as Prometheus metrics (for node_exporter's textfile collector)")
    p.add_argument("--output", type=Path, metavar="FILE", help="write them to FILE (atomically) instead of stdout")
    p = sub.add_parser("console", help="the full-screen console (tty1, serial line)")
    # Also accepted after the subcommand; SUPPRESS keeps a --socket given before it.
    p.add_argument("--socket", type=Path, default=argparse.SUPPRESS, help="control socket of mxknockd")
    p.add_argument(
        "--confirm-within",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="applied changes roll back unless kept within this time (0: no countdown)",
    )
    for name, subparser in sub.choices.items():
        if name != "console":
            # `mxknock status --json` as well as `mxknock --json status`; SUPPRESS keeps the first.
            subparser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


COMMANDS = {
    "check": cmd_check,
    "rules": cmd_rules,
    "apply": cmd_apply,
    "confirm": simple("confirm"),
    "rollback": simple("rollback"),
    "reload": simple("reload"),
    "status": simple("status"),
    "knocks": simple("knocks"),
    "refused": simple("refused"),
    "whitelist": cmd_whitelist,
    "trusted": cmd_trusted,
    "check-mx": cmd_check_mx,
    "default-config": lambda args, client: config_module.default_text(),
    "metrics": cmd_metrics,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "console":
        return run_console(args)
    client = ControlClient(args.socket)
    try:
        result = COMMANDS[args.command](args, client)
    except ConfigError as exc:
        _error(args, str(exc), exc.to_json())
        return EXIT_INVALID
    except ControlError as exc:
        if args.command == "metrics" and exc.unreachable:
            # mxknock_up 0 all the same, so that an alert can fire on it.
            return _metrics_out(args, metrics.render_unreachable(str(exc)), EXIT_UNREACHABLE, str(exc))
        _error(args, str(exc), exc.errors)
        if exc.unreachable:
            return EXIT_UNREACHABLE
        return EXIT_INVALID if exc.errors else EXIT_FAILED
    if args.command == "metrics":
        return _metrics_out(args, result["metrics"], EXIT_OK)
    print(json.dumps(result, indent=2) if args.json else show(args.command, result, args))
    if args.command == "status":
        return HEALTH_EXIT.get(result["health"], EXIT_FAILED)
    if args.command == "check-mx":
        levels = {f["level"] for d in result["domains"] for f in d["findings"]}
        return EXIT_FAILED if mxcheck.ERROR in levels else EXIT_WARNING if mxcheck.WARNING in levels else EXIT_OK
    return EXIT_OK


def _metrics_out(args: argparse.Namespace, text: str, code: int, error: str | None = None) -> int:
    if error is not None:
        print(f"mxknock: {error}", file=sys.stderr)
    if args.output is not None:
        try:
            write_atomically(args.output, text)
        except OSError as exc:
            print(f"mxknock: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    elif args.json:
        print(json.dumps({"metrics": text, **({"error": error} if error else {})}, indent=2))
    else:
        print(text, end="")
    return code


def run_console(args: argparse.Namespace) -> int:
    """The console needs textual (the `console` extra); the rest of mxknock does not."""
    try:
        from tui.app import run
    except ImportError as exc:
        print(f"mxknock: the console is not installed ({exc}): pip install 'mxknock[console]'", file=sys.stderr)
        return EXIT_FAILED
    run(ControlClient(args.socket), confirm_within=args.confirm_within)
    return EXIT_OK


def _error(args: argparse.Namespace, message: str, errors: list[dict[str, str]]) -> None:
    if args.json:
        print(json.dumps({"error": message, "errors": errors}, indent=2))
    if errors:
        print("mxknock: refused:", file=sys.stderr)
        for e in errors:
            print(f"  {e['field']}: {e['message']}", file=sys.stderr)
    else:
        print(f"mxknock: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
