"""A real Debian Postfix as the sending MTA, private to one lab.

Postfix's commands (sendmail, postqueue, postconf, postfix) all read /etc/postfix, so each runs in
a private mount namespace (`unshare -m`) where the lab's own copies are bind-mounted over
/etc/postfix, /var/spool/postfix, /var/lib/postfix and /etc/resolv.conf. Two labs never share a
file, and nothing on the host changes.
"""

from __future__ import annotations

import email.utils
import json
import os
import pwd
import shlex
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import addresses as A
from .netns import LabError, in_ns, run
from .procs import wait_until

SYSTEM_CONFIG = Path("/etc/postfix")

# Bound in the private mount namespace: host path -> lab subdirectory.
_MOUNTS = {
    "/etc/postfix": "etc",
    "/var/spool/postfix": "spool",
    "/var/lib/postfix": "lib",
    "/etc/resolv.conf": "resolv.conf",
}

# Sender settings. Fast retries and no connection reuse keep tests quick and each delivery a
# fresh TCP connection (a cached session would skip the knock logic under test).
BASE_SETTINGS: dict[str, str] = {
    "compatibility_level": "3.6",
    "myhostname": f"sender.{A.ZONE}",
    "myorigin": "$myhostname",
    "mydestination": "",
    "relayhost": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "all",
    "smtp_address_preference": "ipv6",
    "alias_maps": "",
    "alias_database": "",
    "local_recipient_maps": "",
    "biff": "no",
    "append_dot_mydomain": "no",
    "smtp_tls_security_level": "none",
    "smtp_connection_cache_on_demand": "no",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "maximal_queue_lifetime": "1h",
    "bounce_queue_lifetime": "1h",
}


class PostfixSender:
    def __init__(self, ns: str, workdir: Path, settings: Mapping[str, str] | None = None) -> None:
        self.ns = ns
        self.dir = workdir
        self.maillog = workdir / "maillog"
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self._preference = self.settings["smtp_address_preference"]

    # --- running commands in the private mount namespace --------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        mounts = " && ".join(
            f"mount --bind {shlex.quote(str(self.dir / sub))} {target}" for target, sub in _MOUNTS.items()
        )
        script = f'{mounts} && exec "$@"'
        return in_ns(self.ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv])

    def exec(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0, check: bool = True) -> str:
        return run(self.argv(argv), input=input, timeout=timeout, check=check).stdout

    # --- lifecycle -----------------------------------------------------------------------

    def prepare(self) -> None:
        etc = self.dir / "etc"
        shutil.copytree(SYSTEM_CONFIG, etc, symlinks=True)
        (etc / "main.cf").write_text(
            "# Written by tests/lab/postfix.py for one lab run.\n"
            + "".join(f"{k} = {v}\n" for k, v in self._main_cf().items())
        )
        (etc / "master.cf").write_text(_unchrooted_master_cf((etc / "master.cf").read_text()))
        self._backdate_config()
        spool = self.dir / "spool"
        spool.mkdir(mode=0o755)  # postfix-files: queue_directory root:755; `postfix start` fills it
        lib = self.dir / "lib"
        lib.mkdir(mode=0o700)
        pw = pwd.getpwnam("postfix")
        os.chown(lib, pw.pw_uid, pw.pw_gid)  # the data directory must belong to mail_owner
        (self.dir / "resolv.conf").write_text(
            f"nameserver {A.DNS_V4}\nnameserver {A.DNS_V6}\noptions timeout:1 attempts:2\n"
        )
        self.maillog.touch()

    def _backdate_config(self) -> None:
        # Postfix will not read a main.cf/master.cf younger than one second (it might still be
        # being written): each command sleeps in 0.3 s steps until the file is old enough, which
        # made `postfix start` take 2 s. Backdating our freshly written files avoids that.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.dir / "etc" / name, (past, past))

    def _main_cf(self) -> dict[str, str]:
        return {
            **self.settings,
            # postlogd writes only under maillog_file_prefixes; keep the log in the lab dir.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.dir),
        }

    def start(self, timeout: float = 30.0) -> None:
        # Creates the queue directories in the empty private spool, checks them, starts master.
        self.exec(["postfix", "start"], timeout=timeout)
        wait_until(
            lambda: "daemon started" in self.log_text(),
            timeout=10.0,
            what="postfix master to log 'daemon started'",
        )

    # --- configuration -------------------------------------------------------------------

    def postconf(self, settings: Mapping[str, str]) -> None:
        """Change main.cf settings and reload; returns once the master has reloaded."""
        if not settings:
            return
        self.exec(["postconf", "-e", *(f"{k}={v}" for k, v in settings.items())])
        self._backdate_config()
        self.settings.update(settings)
        before = self.log_text().count("reload -- version")
        self.exec(["postfix", "reload"])
        # `postfix reload` only signals the master: wait for it, or the next mail may still be
        # handed to an smtp process with the old settings.
        wait_until(
            lambda: self.log_text().count("reload -- version") > before,
            timeout=10.0,
            what="postfix reload",
        )

    def set_address_preference(self, preference: str) -> None:
        if preference not in ("ipv4", "ipv6", "any"):
            raise ValueError(f"address preference must be ipv4, ipv6 or any, not {preference!r}")
        if preference != self._preference:
            self.postconf({"smtp_address_preference": preference})
            self._preference = preference

    # --- mail ----------------------------------------------------------------------------

    def send(
        self,
        to: str,
        subject: str,
        *,
        sender: str = f"probe@sender.{A.ZONE}",
        body: str = "lab test message\n",
        address_preference: str | None = None,
    ) -> str:
        """Queue one message with sendmail; returns its Message-ID (delivery is asynchronous)."""
        if address_preference is not None:
            self.set_address_preference(address_preference)
        message_id = f"<{uuid.uuid4().hex}@sender.{A.ZONE}>"
        message = (
            f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
            f"Date: {email.utils.formatdate()}\nMessage-ID: {message_id}\n\n{body}"
        )
        self.exec(["sendmail", "-i", "-f", sender, "--", to], input=message)
        return message_id

    def flush(self) -> None:
        self.exec(["postqueue", "-f"])

    def queue(self) -> list[dict[str, Any]]:
        """`postqueue -j`: one dict per queued message (queue_name, recipients[].delay_reason...)."""
        out = self.exec(["postqueue", "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> list[str]:
        return self.log_text().splitlines()


def _unchrooted_master_cf(text: str) -> str:
    """Debian's master.cf with chroot = n everywhere and no inbound smtpd.

    A chroot would need copies of resolv.conf and libraries inside the private spool; the
    sender only sends, so its `smtp inet` listener is commented out.
    """
    out = []
    dropping = False  # inside a commented-out service: its continuation lines go too
    for line in text.splitlines():
        fields = line.split()
        is_service = bool(fields) and not line[0].isspace() and not line.startswith("#")
        if dropping and fields and line[0].isspace():
            out.append("#" + line)
            continue
        if is_service:
            dropping = False
        if is_service and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                out.append("#" + line)
                dropping = True
                continue
            fields[4] = "n"
            line = " ".join(fields)
        elif is_service:
            raise LabError(f"unexpected master.cf line: {line!r}")
        out.append(line)
    return "\n".join(out) + "\n"
