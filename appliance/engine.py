"""The engine: owns the kernel state and the config file; the daemon's one source of truth.

Every change goes validate -> compile -> apply (atomic) -> verify -> (confirm or roll back).
Refused input raises before anything in the kernel changes. The control API, the
CLI and the console all come through here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bridge, ipsets, management, netfilter, recent, status
from .compiler import IPSET_MAX_TIMEOUT, compile_config, refused_list_name, set_name
from .config import (
    Config,
    ConfigError,
    FieldError,
    Management,
    decode,
    edit_networks,
    parse_yaml,
    proven_sender,
)
from .files import atomic_write, remove_staged, stage_file
from .ruleset import FamilyRuleset, Ruleset
from .state import StateKeeper

log = logging.getLogger(__name__)


REFUSED_HORIZON = 86400  # seconds; only used to report ages of refused sources


class EngineError(RuntimeError):
    """An operation failed; the message says what to do next."""


@dataclass
class PendingChange:
    """An applied change that rolls back at `deadline` unless confirmed."""

    previous: Config | None
    new_text: str
    deadline: float
    timer: threading.Timer | None
    staged: Path  # the new file, written before the change went live; put in place on confirm


class Engine:
    def __init__(
        self,
        config_path: Path,
        state_dir: Path | None = None,
        before_commit: netfilter.FailureHook | None = None,
        authorized_keys: Path | None = None,
    ):
        self.config_path = Path(config_path)
        # A copy of the last file that was put in force: a file broken by hand (or by a bad
        # disk) must not leave the mail path without filtering after a restart.
        self.last_good_path = self.config_path.with_name(self.config_path.name + ".last-good")
        # Root's SSH keys from management.ssh_keys, next to the config (sshd reads it there).
        self.authorized_keys = authorized_keys or self.config_path.parent / "authorized_keys"
        self.state = StateKeeper(state_dir) if state_dir else None
        self.config: Config | None = None
        self.ruleset: Ruleset | None = None
        self.pending: PendingChange | None = None
        self.last_error: str | None = None  # why filtering is not (fully) in place
        self.notice: str | None = None  # something the admin should know, not a fault
        self.management_error: str | None = None  # the management address failed; mail is filtered
        self.file_problem: str | None = None  # the file is broken; the last good config filters meanwhile
        self.before_commit = before_commit  # failure injection for tests
        self._lock = threading.RLock()

    # ---- start-up -------------------------------------------------------------------

    def start(self) -> None:
        """Load the file and put it in force; without a usable one, fall back to the last good
        config if there is one, else stay closed and say why. Never raises: the daemon stays up."""
        remove_staged(self.config_path)  # of a change that was waiting for confirmation when we stopped
        try:
            # A staging set a crash left behind would only confuse the first apply.
            removed = ipsets.remove_staging_sets()
            if removed:
                log.warning("removed staging ipsets left behind: %s", ", ".join(removed))
        except Exception:  # never a reason not to filter
            log.exception("could not look for staging ipsets left behind")
        if not self.config_path.exists():
            self.last_error = f"no config at {self.config_path}: the bridge stays closed until one is applied"
            log.warning(self.last_error)
            return
        try:
            text, config = _read_config(self.config_path)
        except ConfigError as exc:
            self._start_from_last_good(str(exc))
            return
        except Exception as exc:  # a loader bug must not crash-loop the daemon: same as a bad file
            log.exception("reading %s failed", self.config_path)
            self._start_from_last_good(f"cannot be read: {exc!r}")
            return
        try:
            # Saved knocks and proven senders go back in before the bridge forwards.
            self._put_in_force(config, before_forwarding=self._restore_state)
        except EngineError as exc:
            self.last_error = str(exc)
            log.error("filtering is NOT in place: %s", exc)
            return
        self._finish_restore(config)
        self._remember_good(text)

    def _start_from_last_good(self, problem: str) -> None:
        why = f"{self.config_path} is not valid ({problem})"
        try:
            _, config = _read_config(self.last_good_path)
        except Exception:  # none, or broken too: nothing to fall back on
            self.last_error = f"{why}: the bridge stays closed; fix it and `mxknock reload`"
            log.error(self.last_error)
            return
        try:
            self._put_in_force(config, before_forwarding=self._restore_state)
        except EngineError as apply_exc:
            self.last_error = f"{why}, and the last good config failed too: {apply_exc}"
            log.error("filtering is NOT in place: %s", self.last_error)
            return
        self._finish_restore(config)
        self.file_problem = (
            f"{why}; filtering with the last good config ({self.last_good_path}) meanwhile:"
            " fix the file and `mxknock reload`"
        )
        log.error(self.file_problem)

    def _remember_good(self, text: str) -> None:
        """Keep a copy of a config that is in force and saved (only when it changed)."""
        try:
            if self.last_good_path.exists() and self.last_good_path.read_text(errors="replace") == text:
                return
            atomic_write(self.last_good_path, text, mode=0o600)
        except OSError as exc:  # a convenience: never a reason to refuse a change
            log.warning("cannot keep a copy of the good config at %s: %s", self.last_good_path, exc)

    def _restore_state(self, config: Config, ruleset: Ruleset) -> None:
        if self.state is None:
            return
        try:
            self.state.restore(config, _knock_lists(ruleset))
        except Exception as exc:  # saved state is a convenience: never a reason not to filter
            self.state.restore_problem = f"saved state skipped: restoring it failed ({exc})"
            log.exception("restoring saved state failed")

    def _finish_restore(self, config: Config) -> None:
        """Proven senders that did not fit restore's time budget, now that the ports are open."""
        if self.state is None:
            return
        try:
            self.state.finish_restore(config)
        except Exception as exc:
            self.state.restore_problem = f"saved state skipped in part: restoring proven senders failed ({exc})"
            log.exception("restoring the remaining proven senders failed")

    def maintain(self) -> None:
        """Periodic upkeep: extend long-lived proven senders and save the state.

        Only the references to the config in force are taken under the engine's lock:
        the set dump and the file write (seconds at 262,144 proven senders) run outside
        it, so the control API answers meanwhile. The StateKeeper keeps saves apart."""
        with self._lock:
            if self.state is None or self.config is None or self.ruleset is None:
                return
            config, knock_lists = self.config, _knock_lists(self.ruleset)
        self.state.maintain(config, knock_lists)

    # ---- changes ------------------------------------------------------------------

    def apply_text(self, text: str, confirm_within: float | None = None) -> dict[str, Any]:
        config = parse_yaml(text)  # refused input stops here, before the kernel
        _check_confirm_within(confirm_within)
        with self._lock:
            self._refuse_while_pending()
            previous = self.config
            staged = self._put_in_force_staged(config, text)
            if confirm_within:
                pending = PendingChange(previous, text, time.monotonic() + confirm_within, None, staged)
                pending.timer = threading.Timer(confirm_within, self._rollback_on_timeout, args=(pending,))
                pending.timer.daemon = True
                self.pending = pending
                try:
                    pending.timer.start()
                except RuntimeError as exc:  # no thread to be had: unguarded, the change would stay for good
                    self.rollback()
                    raise EngineError(f"cannot arm the confirmation timer ({exc}): the change is rolled back") from exc
            else:
                self._commit_staged(staged, text, previous)
            return {"applied": True, "confirm_within": confirm_within}

    def reload(self) -> dict[str, Any]:
        """Re-read the file (SIGHUP); a bad file is refused and the running rules stay."""
        text, config = _read_config(self.config_path)
        with self._lock:
            self._refuse_while_pending()
            self._put_in_force(config)
            self.file_problem = None
            self._remember_good(text)
        return {"applied": True}

    def confirm(self) -> dict[str, Any]:
        with self._lock:
            if self.pending is None:
                raise EngineError("nothing is waiting for confirmation")
            pending = self.pending
            _cancel(pending)
            self.pending = None
            self._commit_staged(pending.staged, pending.new_text, pending.previous)
            return {"confirmed": True}

    def rollback(self) -> dict[str, Any]:
        with self._lock:
            if self.pending is None:
                raise EngineError("nothing is waiting for confirmation")
            _cancel(self.pending)
            previous = self.pending.previous
            self.pending.staged.unlink(missing_ok=True)
            self.pending = None
            if previous is not None:
                self._put_in_force(previous)
            else:
                self._unconfigure()
            log.warning("change rolled back to the previous configuration")
            return {"rolled_back": True}

    def _rollback_on_timeout(self, pending: PendingChange) -> None:
        with self._lock:
            # Confirmed (or replaced by a newer change) while this timer waited for the lock.
            if self.pending is not pending:
                return
            try:
                self.rollback()
            except Exception as exc:  # nobody waits for this thread: say it where the admin looks
                log.exception("rolling back the unconfirmed change failed")
                self.last_error = (
                    f"a change was not confirmed in time and rolling it back failed ({exc}): the unconfirmed"
                    f" rules may be in force while {self.config_path} holds the previous config;"
                    " `mxknock reload` puts the file's config in force"
                )
                return
            self.notice = "a change was not confirmed in time and was rolled back"

    def _unconfigure(self) -> None:
        """Back to "no config yet": nothing forwards, none of our rules remain."""
        if self.config is not None:
            bridge.close(self.config.bridge)
            self._set_management(self.config.bridge.name, None, quiet=True)
        empty = Ruleset(tuple(FamilyRuleset(family=f, rules=(), sets=(), knock_list=None) for f in (4, 6)))
        netfilter.apply(empty, previous=self.ruleset)
        self.config, self.ruleset = None, None
        self.last_error = "the first configuration was rolled back: the bridge is closed until one is applied"

    def _refuse_while_pending(self) -> None:
        # A change on top of an unconfirmed one would be lost (or half kept) by its rollback.
        if self.pending is not None:
            raise EngineError("a change is waiting for confirmation: `mxknock confirm` or `mxknock rollback` first")

    def change_list(self, key: str, add: list[str] = (), remove: list[str] = ()) -> dict[str, Any]:
        """Add or remove whitelist (or selective) entries; saved to the file at once."""
        with self._lock:
            self._refuse_while_pending()
            if self.config is None:
                raise EngineError("no configuration yet: apply one first")
            previous = self.config
            config = edit_networks(self.config, key, add, remove)
            text = config.to_yaml()
            self._commit_staged(self._put_in_force_staged(config, text), text, previous)
            return {key: config.to_dict()[key]}  # the file's own format, as whitelist_list answers

    def _put_in_force(self, config: Config, before_forwarding: Any = None) -> None:
        """Apply and verify a valid config; on any failure the previous bridge, rules and
        addresses come back as they were (with nothing before: the bridge stays closed)."""
        ruleset = compile_config(config)
        with self._lock:
            try:
                bridge.prepare(config.bridge)
                # Addresses the new config drops leave before the rules that guard them do:
                # never a moment with an address on the bridge and no MXKNOCK-INPUT.
                management.withdraw(config.bridge.name, config.management)
                bridge.ensure_reset_routes(config.bridge.name)  # gone with the last IPv4 address
            except (bridge.BridgeError, management.ManagementError, OSError) as exc:
                self._fall_back(config)
                raise EngineError(f"cannot set up the bridge: {exc}") from exc
            try:
                netfilter.apply(ruleset, self.before_commit, previous=self.ruleset)
                problems = netfilter.verify(ruleset)  # raises only if the kernel cannot be read at all
                if problems and self.ruleset is not None:
                    # The kernel is not what we last put there (someone changed it):
                    # rewrite everything rather than trust our memory of it.
                    log.warning("kernel rules differ from the last applied (%s); rewriting", "; ".join(problems))
                    netfilter.apply(ruleset, self.before_commit)
                    problems = netfilter.verify(ruleset)
            except Exception as exc:  # ApplyError, or python-iptables/pyroute2: the kernel lacks something
                self._fall_back(config)
                detail = (
                    str(exc) if isinstance(exc, netfilter.ApplyError) else f"cannot apply or read back the rules: {exc}"
                )
                raise EngineError(detail) from exc
            state = bridge.read_state(config.bridge)
            if not state.filtering:
                problems.append("br_netfilter is not active on the bridge")
            if problems:
                self._fall_back(config)
                raise EngineError(
                    "filtering could not be verified ("
                    + "; ".join(problems)
                    + "); "
                    + ("the previous configuration is back" if self.config else "the bridge is kept closed")
                )
            management_error = None
            try:
                self._set_management(config.bridge.name, config.management)
            except (management.ManagementError, OSError) as exc:
                if self.config is not None:  # an admin's change: refused as a whole
                    self._fall_back(config)
                    raise EngineError(f"{exc}; the previous configuration is back") from exc
                # At boot (or the first config) the mail comes first: filter and forward
                # without the management address, and say so.
                management_error = f"the management address is not in place ({exc}); mail is filtered without it"
                log.error(management_error)
                self._set_management(config.bridge.name, None, quiet=True)
            if before_forwarding is not None:
                before_forwarding(config, ruleset)
            bridge.open_ports(config.bridge)
            if self.config is not None and self.config.bridge.name != config.bridge.name:
                bridge.remove(self.config.bridge.name)  # its ports are the new bridge's now
            self.config, self.ruleset, self.last_error, self.notice = config, ruleset, None, None
            self.management_error = management_error
            log.info("applied: mode %s, mx1 %s, mx2 %s", config.mode, _addrs(config.mx1), _addrs(config.mx2))

    def _fall_back(self, failed: Config) -> None:
        """After a failed change: the previous bridge (ports, name), rules and management
        address back in force. With nothing before, the bridge stays closed and bare."""
        previous = self.config
        try:
            if previous is None:
                bridge.close(failed.bridge)
                self._set_management(failed.bridge.name, None, quiet=True)
                return
            if previous.bridge.name != failed.bridge.name:
                bridge.remove(failed.bridge.name)  # the ports go back to the previous bridge below
            bridge.prepare(previous.bridge)
            self._restore_previous()
            self._set_management(previous.bridge.name, previous.management, quiet=True)
            bridge.open_ports(previous.bridge)
        except Exception:  # keep going: the caller reports the original failure
            log.exception("could not put the previous configuration back in full")

    def _set_management(self, bridge_name: str, wanted: Management | None, quiet: bool = False) -> None:
        try:
            # Keys first: once the address answers (duplicate address detection takes a
            # second), SSH should already take the configured keys.
            management.write_authorized_keys(self.authorized_keys, wanted)
            management.apply(bridge_name, wanted)
            bridge.ensure_reset_routes(bridge_name)
        except (management.ManagementError, OSError):
            if not quiet:
                raise
            log.exception("could not set the management address")

    def _restore_previous(self) -> None:
        if self.ruleset is not None:
            try:
                netfilter.apply(self.ruleset)
            except netfilter.ApplyError:
                log.exception("could not restore the previous rules")

    def _put_in_force_staged(self, config: Config, text: str) -> Path:
        """The file is written first: a change is saved and live, or neither (a full disk
        refuses the change before the kernel sees it). Returns the staged file."""
        staged = self._stage(text)
        try:
            self._put_in_force(config)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged

    def _stage(self, text: str) -> Path:
        """Write the new file beside the config (synced): what can fail on a full or broken
        disk fails here, before anything in the kernel changes."""
        try:
            return stage_file(self.config_path, text, mode=0o644)
        except OSError as exc:
            raise EngineError(
                f"cannot save the config to {self.config_path} ({exc.strerror or exc}): nothing was changed;"
                " free space on that disk and try again"
            ) from exc

    def _commit_staged(self, staged: Path, text: str, previous: Config | None) -> None:
        """Put the staged file in place; if even that fails, the kernel goes back to `previous`."""
        try:
            os.replace(staged, self.config_path)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            if previous is not None:
                self._put_in_force(previous)
            else:
                self._unconfigure()
            raise EngineError(
                f"cannot save the config to {self.config_path} ({exc.strerror or exc}): the change was undone"
            ) from exc
        self.file_problem = None
        self._remember_good(text)

    # ---- reading --------------------------------------------------------------------

    def in_force(self) -> tuple[Config | None, Ruleset | None]:
        """The config and its ruleset as one pair: an apply replaces both under the lock."""
        with self._lock:
            return self.config, self.ruleset

    def knock_reports(self, with_knocks: bool = False) -> list[recent.ListReport]:
        config, ruleset = self.in_force()  # the lists are read without it: 100k entries take a while
        if ruleset is None or config is None:
            return []
        return [
            recent.report(fam.knock_list, config.window, with_knocks=with_knocks)
            for fam in ruleset.families
            if fam.knock_list is not None
        ]

    def status(self) -> dict[str, Any]:
        with self._lock:
            config, ruleset = self.config, self.ruleset
            try:
                kernel = [netfilter.read_family(f) for f in (4, 6)]
                rule_problems = netfilter.verify(ruleset, deep=False) if ruleset else []
            except Exception as exc:  # e.g. iptables modules missing: report it, don't die
                kernel, rule_problems = [], [f"cannot read the kernel's iptables rules: {exc}"]
            bridge_state = bridge.read_state(config.bridge) if config else None
            lists = self.knock_reports()
            managed = management.read_state(config.bridge.name) if config else None
            management_problems = management.problems(config.management, managed) if config else []
            conntrack = bridge.read_conntrack().to_json() if config else None
            conntrack_problems, conntrack_warnings = status.conntrack_health(conntrack)
            missing_routes = [
                f"IPv{family} has no route for resets: refused senders wait for a timeout instead of a reset; "
                "`mxknock reload` puts it back"
                for family in (config.families() if config and bridge_state and bridge_state.present else ())
                if family not in bridge_state.reset_routes
            ]
            warnings = (
                self.file_problem,
                self.management_error,
                *management_problems,  # the mail is filtered all the same: a warning
                self.notice,
                self.state.last_problem if self.state else None,
                status.list_size_warning(config.knock_list_size if config else None, lists),
                *conntrack_warnings,
            )
            verdict = status.health(
                config is not None,
                rule_problems,
                bridge_state,
                lists,
                extra_problems=(
                    *missing_routes,
                    *conntrack_problems,
                    *((self.last_error,) if self.last_error else ()),
                ),
                extra_warnings=tuple(w for w in warnings if w),
            )
            return {
                "health": verdict.level,
                "problems": list(verdict.problems),
                "warnings": list(verdict.warnings),
                "config_path": str(self.config_path),
                "config": config.to_dict() if config else None,
                "filtering_verified": config is not None
                and not rule_problems
                and bool(bridge_state and bridge_state.filtering),
                "bridge": bridge_state.to_json() if bridge_state else None,
                "conntrack": conntrack,
                "counters": status.counters(kernel),
                "knock_lists": [r.to_json() for r in lists],
                "trusted": self._trusted_counts(),
                "management": self._management_status(config, managed),
                "pending": None
                if self.pending is None
                else {"seconds_left": max(0.0, round(self.pending.deadline - time.monotonic(), 1))},
            }

    def trusted(self) -> dict[str, Any]:
        """Every proven sender: one bulk dump per family, without the engine's lock."""
        with self._lock:
            config = self.config
        if config is None or self.state is None:
            return {"trusted": [], "enabled": False, "active": False, "lifetime": 0}
        entries = [
            {"address": address, "family": f"ipv{family}", "time_left": round(left)}
            for family in config.families()
            for address, left in self.state.trusted(config, family)
        ]
        trust = config.trust
        return {
            "trusted": entries,
            "enabled": trust.enabled,
            # Nolisting opens mx2 to all, so no trust rules are compiled there.
            "active": trust.enabled and config.mode != "nolisting",
            "lifetime": trust.lifetime,
        }

    def change_trusted(self, add: list[str] = (), remove: list[str] = ()) -> dict[str, Any]:
        """Make addresses proven senders by hand (full lifetime), or forget them."""
        with self._lock:
            if self.config is None or self.state is None:
                raise EngineError("no configuration yet: apply one first")
            state = self.state
            families = self.config.families()
            lifetime = self.config.trust.lifetime

            def change() -> None:
                parsed = []
                errors = []
                members: dict[int, set[str]] = {}  # one dump per family, only if something is removed
                # Entries are named as the whitelist's are: trusted[+i] added, trusted[-i] removed.
                for verb, sign, items in (("add", "+", add), ("remove", "-", remove)):
                    for i, item in enumerate(items):
                        try:
                            address = proven_sender(item, families)
                        except ValueError as exc:
                            errors.append(FieldError(f"trusted[{sign}{i}]", str(exc)))
                            continue
                        net = ipaddress.ip_network(address)
                        if verb == "remove" and net.version not in members:
                            members[net.version] = ipsets.members(set_name("trust", net.version)) or set()
                        if verb == "remove" and str(net) not in members[net.version]:
                            errors.append(FieldError(f"trusted[{sign}{i}]", f"{address} is not a proven sender"))
                        else:
                            parsed.append((verb, net))
                if errors:
                    raise ConfigError(errors)
                now = time.time()
                for verb, net in parsed:
                    name, address = set_name("trust", net.version), str(net.network_address)
                    book = state.books[net.version]
                    if verb == "add":
                        timeout = min(lifetime, IPSET_MAX_TIMEOUT)
                        ipsets.add(name, net.version, address, timeout)
                        book.record_write(str(net), now + lifetime, now + timeout)
                    else:
                        ipsets.delete(name, net.version, address)
                        book.expires.pop(str(net), None)
                        book.written.pop(str(net), None)

            state.change(change)
        return self.trusted()  # the full list: outside the engine's lock

    def refused(self) -> dict[str, Any]:
        """Who was refused at mx2 lately (the kernel keeps the newest per family)."""
        with self._lock:
            if self.config is None:
                return {"refused_lists": []}
            reports = [
                # The window of a refusal list has no meaning: age is what matters.
                recent.report(refused_list_name(family), REFUSED_HORIZON)
                for family in self.config.families()
                if self.config.mode != "nolisting"
            ]
            return {"refused_lists": [r.to_json(with_knocks=True) for r in reports]}

    def knocks(self) -> dict[str, Any]:
        return {"knock_lists": [r.to_json(with_knocks=True) for r in self.knock_reports(with_knocks=True)]}

    def config_text(self) -> dict[str, Any]:
        with self._lock:
            return {
                "config": self.config.to_dict() if self.config else None,
                "yaml": self.config.to_yaml() if self.config else None,
            }

    def _management_status(self, config: Config | None, state: management.ManagementState | None) -> dict | None:
        if config is None or config.management is None or state is None:
            return None
        return management.report(config.management, state)

    def _trusted_counts(self) -> dict[str, int]:
        counts = {}
        for family in (4, 6):
            counts[f"ipv{family}"] = (ipsets.size(set_name("trust", family)) or 0) if self.config else 0
        return {**counts, "total": sum(counts.values())}

    def rules_text(self) -> dict[str, Any]:
        _, ruleset = self.in_force()
        return {"rules": ruleset.render() if ruleset else ""}


CONFIRM_WITHIN_MAX = 3600


def _check_confirm_within(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= CONFIRM_WITHIN_MAX:
        raise ConfigError(
            [FieldError("confirm_within", f"must be seconds from 1 to {CONFIRM_WITHIN_MAX}, not {value!r}")]
        )


def _read_config(path: Path) -> tuple[str, Config]:
    """The file's text (as written, comments and all) and the Config it describes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([FieldError("(file)", f"cannot read {path}: {exc.strerror or exc}")]) from None
    text = decode(raw)
    return text, parse_yaml(text)


def _cancel(pending: PendingChange) -> None:
    if pending.timer is not None:
        pending.timer.cancel()


def _knock_lists(ruleset: Ruleset) -> dict[int, str]:
    return {fam.family: fam.knock_list for fam in ruleset.families if fam.knock_list}


def _addrs(addresses: tuple) -> str:
    return ",".join(str(a) for a in addresses)
