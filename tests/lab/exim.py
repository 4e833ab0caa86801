"""A private Debian Exim 4.96 as a second sending MTA in the lab's sender namespace.

Debian's exim4 packages conflict with Postfix (the lab's system MTA), so Exim is never
installed: `fetch()` downloads the .debs with `apt-get download`, unpacks them with
`dpkg-deb -x` into a cache directory and runs the binary from there. Only its shared
libraries come from apt (tests/lab/REQUIREMENTS-exim.txt). From a clean machine:

    apt-get update && xargs apt-get install -y < <(grep -v '^#' tests/lab/REQUIREMENTS-exim.txt)
    python -m tests.lab.exim fetch          # -> /var/cache/mxknock-tests/exim/root/usr/sbin/exim4

How it runs without touching the host:
- Debian's binary looks up its compiled-in user "Debian-exim" at start and exits without it.
  Every exim command runs in a private mount namespace (`unshare -m`, as the lab's Postfix)
  where private copies of /etc/passwd and /etc/group that add that user, and the lab's
  resolv.conf (DNS at 192.0.2.53), are bind-mounted over the host's.
- The config is passed with `-C`. Exim keeps root privilege for a -C file if the caller is
  root; a caller that is the Exim user keeps it only if the file is listed in the compiled-in
  TRUSTED_CONFIG_LIST (/etc/exim4/trusted_configs on Debian), anyone else loses it. We run
  as root, so the submission is accepted with privilege. For the delivery Exim re-executes
  itself (exim_path, -C passed on) as Debian-exim, which logs "exim user lost privilege for
  using -C option": harmless for remote SMTP, whose transport runs as Debian-exim anyway.
  Listing the file in /etc/exim4/trusted_configs would silence it, but that needs /etc/exim4
  on the host. ALT_CONFIG_PREFIX is not set in Debian's build (it would only restrict the
  paths -C accepts).
- spool_directory and log_file_path point into the lab's work dir; the spool belongs to
  the private Debian-exim uid. The hints databases (retry records) live in <spool>/db.
- IPv4 only (disable_ipv6, interface 192.0.2.100), Debian's default retry rule read from the
  exim4-config package, no daemon: submissions deliver in the foreground (-odi) and queue
  runs are forced by hand (-qff, -M), so every test step is synchronous.
"""

from __future__ import annotations

import email.utils
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from . import addresses as A
from .netns import LabError, in_ns, run

PACKAGES = ("exim4-daemon-light", "exim4-base", "exim4-config")
CACHE_DIR = Path(os.environ.get("MXKNOCK_EXIM_CACHE", "/var/cache/mxknock-tests/exim"))
EXIM_BINARY = Path("usr/sbin/exim4")
DUMPDB_BINARY = Path("usr/sbin/exim_dumpdb")
DEBIAN_RETRY_FILE = Path("etc/exim4/conf.d/retry/30_exim4-config")
EXIM_USER = "Debian-exim"


class EximUnavailable(RuntimeError):
    """The Exim binary cannot be fetched or run here (the message says what is missing)."""


# --- fetching -------------------------------------------------------------------------------


def fetch(cache: Path = CACHE_DIR) -> Path:
    """Download and unpack Debian's Exim into `cache` (once); returns the unpacked root.

    Idempotent: a complete unpack (marked by a stamp file naming the .debs) is reused.
    Raises EximUnavailable if apt cannot download or a shared library is missing.
    """
    root = cache / "root"
    stamp = cache / "fetched"
    if not (stamp.exists() and (root / EXIM_BINARY).exists()):
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise EximUnavailable("apt-get and dpkg-deb are needed to fetch Debian's exim4")
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs fetch once
            if not (stamp.exists() and (root / EXIM_BINARY).exists()):
                _download_and_unpack(cache, root, stamp)
    missing = missing_libraries(root / EXIM_BINARY)
    if missing:
        raise EximUnavailable(
            f"shared libraries of exim4 missing: {', '.join(missing)} "
            "(install the packages in tests/lab/REQUIREMENTS-exim.txt)"
        )
    return root


def _download_and_unpack(cache: Path, root: Path, stamp: Path) -> None:
    # apt downloads as root here (it notes that its _apt user cannot write the temp dir).
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        proc = subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, capture_output=True, text=True, timeout=300)
        debs = sorted(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(debs) != len(PACKAGES):
            raise EximUnavailable(
                f"apt-get download {' '.join(PACKAGES)} failed (run apt-get update first?):\n"
                f"{proc.stdout}{proc.stderr}".rstrip()
            )
        unpack = Path(tmp) / "root"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpack)], check=True, timeout=120)
        stamp.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(unpack, root)
        stamp.write_text("".join(f"{deb.name}\n" for deb in debs))


def missing_libraries(binary: Path) -> list[str]:
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in proc.stdout.splitlines() if "not found" in line]


def debian_retry_rule(root: Path) -> str:
    """The retry rule of Debian's exim4-config (`*  *  F,2h,15m; G,16h,1h,1.5; F,4d,6h`)."""
    text = (root / DEBIAN_RETRY_FILE).read_text()
    rules = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(rules) != 1:
        raise EximUnavailable(f"unexpected retry rules in {DEBIAN_RETRY_FILE}: {rules!r}")
    return rules[0]


# --- running --------------------------------------------------------------------------------


def _free_id(taken: set[int]) -> int:
    for candidate in range(64990, 60000, -1):
        if candidate not in taken:
            return candidate
    raise LabError("no free uid/gid for the private Debian-exim user")


class EximSender:
    """Exim in a lab namespace with its own config, spool, log and user database."""

    def __init__(self, ns: str, workdir: Path, root: Path, *, interface: str = A.SENDER_V4) -> None:
        self.ns = ns
        self.dir = Path(workdir)
        self.root = root
        self.binary = root / EXIM_BINARY
        self.interface = interface
        self.config = self.dir / "exim.conf"
        self.spool = self.dir / "spool"
        self.logdir = self.dir / "log"
        self.mainlog = self.logdir / "mainlog"
        self.uid = self.gid = 0

    # --- setup ----------------------------------------------------------------------------

    def prepare(self, retry_rule: str | None = None) -> EximSender:
        self.dir.mkdir(parents=True, exist_ok=True)
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        self.uid = _free_id({int(line.split(":")[2]) for line in passwd.splitlines() if line.count(":") >= 6})
        self.gid = _free_id({int(line.split(":")[2]) for line in group.splitlines() if line.count(":") >= 3})
        (self.dir / "passwd").write_text(
            passwd.rstrip("\n") + f"\n{EXIM_USER}:x:{self.uid}:{self.gid}::{self.spool}:/usr/sbin/nologin\n"
        )
        (self.dir / "group").write_text(group.rstrip("\n") + f"\n{EXIM_USER}:x:{self.gid}:\n")
        (self.dir / "resolv.conf").write_text(f"nameserver {A.DNS_V4}\noptions timeout:1 attempts:2\n")
        for d in (self.spool, self.logdir):
            d.mkdir(mode=0o750, exist_ok=True)
            os.chown(d, self.uid, self.gid)
        rule = retry_rule or debian_retry_rule(self.root)
        self.config.write_text(self._config_text(rule))
        os.chmod(self.config, 0o644)  # Exim refuses a group- or world-writable config
        self.dir.chmod(0o755)
        return self

    def _config_text(self, retry_rule: str) -> str:
        return f"""# Written by tests/lab/exim.py for one lab run: a sender only (no daemon, no listener).
primary_hostname = sender.{A.ZONE}
qualify_domain = sender.{A.ZONE}
exim_path = {self.binary}
spool_directory = {self.spool}
log_file_path = {self.logdir}/%slog
log_selector = +outgoing_interface +outgoing_port +retry_defer +deliver_time
disable_ipv6 = true
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment =
# One delivery per connection, nothing parked for later: each test step is one attempt.
remote_max_parallel = 1

begin routers

dnslookup:
  driver = dnslookup
  domains = {A.ZONE}
  transport = remote_smtp
  no_more

begin transports

remote_smtp:
  driver = smtp
  interface = {self.interface}
  hosts_avoid_tls = *
  connect_timeout = 5s

begin retry

# Debian's default rule (exim4-config, conf.d/retry/30_exim4-config):
{retry_rule}
"""

    # --- commands -------------------------------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the sender namespace in a private mount namespace (see module doc)."""
        mounts = {
            "/etc/passwd": self.dir / "passwd",
            "/etc/group": self.dir / "group",
            "/etc/resolv.conf": self.dir / "resolv.conf",
        }
        script = " && ".join(f"mount --bind {shlex.quote(str(src))} {dst}" for dst, src in mounts.items())
        return in_ns(
            self.ns,
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{script} && exec "$@"', "sh", *argv],
        )

    def exim(self, *args: str, input: str | None = None, timeout: float = 60.0, check: bool = True) -> str:
        proc = run(
            self.argv([str(self.binary), "-C", str(self.config), *args]), input=input, timeout=timeout, check=check
        )
        return proc.stdout + proc.stderr

    def version(self) -> str:
        return self.exim("-bV").splitlines()[0]

    def send(self, subject: str, to: str = f"user@{A.ZONE}", *, sender: str = f"probe@sender.{A.ZONE}") -> str:
        """Submit one message and attempt its delivery in the foreground (-odi); returns
        Exim's message id once the attempt is over (delivered or deferred)."""
        message_id = f"<{uuid.uuid4().hex}@sender.{A.ZONE}>"
        message = (
            f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
            f"Date: {email.utils.formatdate()}\nMessage-ID: {message_id}\n\nexim lab test\n"
        )
        self.exim("-odi", "-f", sender, "--", to, input=message)
        for line in self.log():
            if " <= " in line and f"id={message_id[1:-1]}" in line:
                return line.split()[2]
        raise LabError(f"exim logged no arrival for {message_id}:\n{self.log_text()[-2000:]}")

    def queue_run(self, *message_ids: str) -> None:
        """A forced queue run (-qff), or a forced delivery of some messages (-M), in the foreground."""
        if message_ids:
            self.exim("-M", *message_ids)
        else:
            self.exim("-qff")

    def queue(self) -> list[str]:
        """Ids of the messages still in the queue (`exim -bp`)."""
        ids = []
        for line in self.exim("-bp").splitlines():
            match = re.match(r"^\s*\S+\s+\S+\s+(\S{16,23})\s", line)
            if match:
                ids.append(match[1])
        return ids

    def retry_records(self) -> str:
        """The retry hints database (`exim_dumpdb <spool> retry`), as text."""
        proc = run(self.argv([str(self.root / DUMPDB_BINARY), str(self.spool), "retry"]), check=False)
        return (proc.stdout + proc.stderr).strip()

    def log_text(self) -> str:
        try:
            return self.mainlog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> list[str]:
        return self.log_text().splitlines()

    def log_for(self, message_id: str) -> list[str]:
        return [line for line in self.log() if message_id in line]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["fetch"]:
        print("usage: python -m tests.lab.exim fetch [CACHE_DIR]", file=sys.stderr)
        return 2
    try:
        root = fetch(Path(args[1]) if len(args) > 1 else CACHE_DIR)
    except EximUnavailable as exc:
        print(f"exim: {exc}", file=sys.stderr)
        return 1
    print(root / EXIM_BINARY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
