"""`make image-test`: boot the built image under qemu + OVMF and push real traffic through it.

Three boots, each with the guest's serial console in a file and its two NICs in the namespace
lab of vmlab.py (every wait bounded; the namespaces, and with them the taps, removed after):

configured: the config image/test/test-config.yaml handed over as the systemd credential
  mxknock.yaml (SMBIOS type 11; the shipped image has none). Checks:
  - the readiness line on the serial line (mxknock-announce.service): health ok, filtering
    verified, the knock list at the image's default size
  - IPv4 and IPv6: mx2 refused (reset) before a knock; the knock on mx1 refused (reset);
    mx2 accepted after it; another address that did not knock still refused at mx2
  - a real mail (swaks) delivered through mx2
  - the console drawn on the serial line with the daemon's health (the Textual console, or its
    text fallback: the result says which)
  - the box stays invisible: no frame on the outside wire from the box itself (a warning unless
    --strict-invisible)
  - a clean power-off (ACPI, through QMP)
managed: the same config plus a management address (192.0.2.5/24, 2001:db8::5/64) with an
  SSH key made for the run, SSH and metrics allowed from one lab address only. Checks: root
  logs in over SSH with the key (IPv4 and IPv6) and `mxknock status` answers there; sshd's host
  keys were made on the box; the metrics endpoint serves Prometheus text with the daemon's
  counters; an address outside management.allow gets no answer on 22 or 9425.
unconfigured: the image as shipped. Checks: ready with health critical and no filtering, nothing
  forwarded (no bridge exists), the console's first-start setup on the serial line listing both
  NICs with a link (the box brings unused NICs up, without addresses, so the admin can tell
  the ports apart), nothing sent on the outside wire all the same, power-off.

Results, serial captures (serial.log, serial.txt, and screen.txt: the console's last screen as
a terminal showed it) and timings go to build/image/test/ (figures.json).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyte  # Debian's python3-pyte: the serial line rendered as the terminal showed it

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmlab

HERE = Path(__file__).resolve().parent
ANSI = re.compile(rb"\x1b(\[[0-9;?=>]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])")
READY = re.compile(rb"mxknock: (NOT READY|READY)([^\r\n]*)")
ALT_SCREEN = b"\x1b[?1049h"
GUEST_NICS = (("eth0", vmlab.GUEST_MACS["outside"]), ("eth1", vmlab.GUEST_MACS["inside"]))
CONSOLE_SIZE = (80, 24)  # the console unit's terminal on ttyS0 (columns, lines)
FALLBACK = b"mxknock console (text fallback"


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def check(self, name: str, ok: bool, detail: str = "", warn_only: bool = False) -> bool:
        """A failed warn_only check is reported (WARN) but does not fail the test."""
        if warn_only and not ok:
            self.warnings.append((name, detail))
            print(f"   WARN  {name}{'  -- ' + detail if detail else ''}", flush=True)
            return ok
        self.results.append((name, ok, detail))
        print(f"   {'PASS' if ok else 'FAIL'}  {name}{'  -- ' + detail if detail else ''}", flush=True)
        return ok

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)


def wait_for(predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def plain(data: bytes) -> str:
    return ANSI.sub(b"", data).replace(b"\r", b"").decode(errors="replace")


def rendered(data: bytes) -> str:
    """What the console's terminal shows after `data`: Textual redraws only the cells that
    change, so the stream's text alone need not read as the screen does."""
    screen = pyte.Screen(*CONSOLE_SIZE)
    pyte.ByteStream(screen).feed(data)
    return "\n".join(line.rstrip() for line in screen.display)


def probe(ns: str, source: str, dest: str, timeout: float = 10, port: int = 25) -> dict:
    out = subprocess.run(
        vmlab.in_ns(ns, sys.executable, str(HERE / "probe.py"), source, dest, str(port), "--timeout", str(timeout)),
        capture_output=True,
        text=True,
        timeout=timeout + 20,
    )
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"result": "error", "error": out.stderr.strip()}


def lab_macs(lab: vmlab.Lab) -> set[str]:
    """The MACs of the lab's own interfaces (its bridges and taps), in both namespaces."""
    macs = set()
    for ns in lab.namespaces():
        out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True, timeout=10)
        for link in json.loads(out.stdout or "[]"):
            if link.get("address"):
                macs.add(link["address"].lower())
    return macs


class Boot:
    """One boot of the image in its lab: start, wait for the readiness line, power off, clean up."""

    def __init__(self, args: argparse.Namespace, name: str, config: Path | None, checks: Checks, figures: dict):
        self.args, self.name, self.config, self.checks = args, name, config, checks
        self.figures = figures.setdefault(name, {})
        self.out = Path(args.out) / name
        self.out.mkdir(parents=True)
        (self.out / "mail").mkdir()
        self.serial_log, self.qmp, self.pcap = self.out / "serial.log", self.out / "qmp.sock", self.out / "outside.pcap"
        self.lab = vmlab.Lab(args.prefix)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ready_at = 0

    def __enter__(self) -> Boot:
        vars_file = self.out / "OVMF_VARS.fd"
        shutil.copy(vmlab.OVMF_VARS, vars_file)
        print(
            f"== image-test [{self.name}]: lab {self.lab.client} / {self.lab.mail}, config "
            f"{self.config or 'none (as shipped)'}",
            flush=True,
        )
        fds = self.lab.up()
        self.procs["sink"] = subprocess.Popen(
            vmlab.in_ns(
                self.lab.mail,
                sys.executable,
                str(HERE / "smtp_sink.py"),
                "--spool",
                str(self.out / "mail"),
                "--max-seconds",
                "1200",
            ),
            stdout=subprocess.DEVNULL,
        )
        self.procs["tcpdump"] = subprocess.Popen(
            vmlab.in_ns(
                self.lab.client, "timeout", "1200", "tcpdump", "-i", "tap0", "-n", "-e", "-U", "-w", str(self.pcap)
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cmd = vmlab.qemu_command(
            Path(self.args.disk),
            vars_file,
            fds,
            mem=self.args.mem,
            accel=self.args.accel,
            serial=["-chardev", f"file,id=ser0,path={self.serial_log}", "-serial", "chardev:ser0"],
            qmp=self.qmp,
            config=self.config,
        )
        self.t0 = time.monotonic()
        self.procs["qemu"] = subprocess.Popen(
            cmd, pass_fds=list(fds.values()), stdout=(self.out / "qemu.log").open("w"), stderr=subprocess.STDOUT
        )
        self.lab.close_fds()
        return self

    def serial(self) -> bytes:
        return self.serial_log.read_bytes() if self.serial_log.exists() else b""

    def wait_ready(self) -> re.Match | None:
        print(
            f"== image-test [{self.name}]: booting (up to {self.args.boot_timeout:.0f} s for the readiness line)",
            flush=True,
        )

        def ready():
            if self.procs["qemu"].poll() is not None:
                return "qemu-exited"
            return READY.search(self.serial())

        found = wait_for(ready, self.args.boot_timeout)
        self.figures["boot_to_ready_s"] = round(time.monotonic() - self.t0, 1)
        if found is None or found == "qemu-exited":
            self.checks.check(
                f"[{self.name}] the guest announces readiness on the serial line",
                False,
                "qemu exited" if found else f"nothing after {self.args.boot_timeout:.0f} s",
            )
            return None
        self.figures["ready_line"] = found.group(0).decode(errors="replace")
        self.ready_at = found.end()
        return found

    def console_screen(self) -> str | None:
        """The serial console's screen now, drawn by the console started after the
        readiness line (None until it switched to the alternate screen)."""
        tail = self.serial()[self.ready_at :]
        pos = tail.rfind(ALT_SCREEN)  # Textual switches to the alternate screen, then draws
        return rendered(tail[pos:]) if pos >= 0 else None

    def wait_console(self, live_text: str, timeout: float = 180) -> str | None:
        """The console drawn after the readiness line, showing `live_text` (or the fallback)."""

        def drawn():
            tail = self.serial()[self.ready_at :]
            fallback = tail.find(FALLBACK)
            if fallback >= 0 and b"health:" in tail[fallback:]:  # its header, then `mxknock status`
                return "fallback"
            screen = self.console_screen()
            if screen is not None and live_text in screen.lower():
                return "textual"
            return None

        start = time.monotonic()
        kind = wait_for(drawn, timeout)
        self.figures["console_after_ready_s"] = round(time.monotonic() - start, 1)
        self.figures["console"] = kind or "none"
        return kind

    def power_off(self) -> None:
        print(f"== image-test [{self.name}]: power off", flush=True)
        screen = self.console_screen()
        if screen is not None:  # the last screen the serial console showed, for the record
            (self.out / "screen.txt").write_text(screen + "\n")
        t_off = time.monotonic()
        vmlab.qmp_command(self.qmp, "system_powerdown")
        try:
            self.procs["qemu"].wait(timeout=120)
            self.figures["poweroff_s"] = round(time.monotonic() - t_off, 1)
            self.checks.check(f"[{self.name}] clean power-off (ACPI)", True, f"{self.figures['poweroff_s']} s")
        except subprocess.TimeoutExpired:
            self.checks.check(f"[{self.name}] clean power-off (ACPI)", False, "still running after 120 s")

    def stop_capture(self) -> list[str]:
        self.procs["tcpdump"].terminate()
        self.procs["tcpdump"].wait(timeout=10)
        dump = subprocess.run(["tcpdump", "-r", str(self.pcap), "-n", "-e"], capture_output=True, text=True, timeout=60)
        return dump.stdout.splitlines()

    def check_invisible(self) -> None:
        """Stop the capture on the outside wire and check that no frame came from the box."""
        frames = self.stop_capture()
        guest = {m.lower() for m in vmlab.GUEST_MACS.values()}
        known = lab_macs(self.lab)
        # Frames the box sent itself: from its NICs' MACs, or from any MAC that is not the lab's
        # (its bridge's MAC is random until a port joins). Reported, not failed, unless
        # --strict-invisible: the fixes belong to appliance/bridge.py (see image/README.md).
        own = [f for f in frames if f.split(" ")[1:2] and f.split(" ")[1].lower() in guest]
        unknown = [f for f in frames if f.split(" ")[1:2] and f.split(" ")[1].lower() not in known | guest]
        self.figures["outside_frames_from_guest"] = len(own) + len(unknown)
        self.checks.check(
            f"[{self.name}] invisible: no frame on the outside wire comes from the box itself",
            not own and not unknown,
            f"{len(frames)} frames captured; from the guest's NICs: {len(own)}, from other MACs than the "
            f"lab's: {len(unknown)}" + "".join(f"\n         {f[:200]}" for f in (own + unknown)[:4]),
            warn_only=not self.args.strict_invisible,
        )

    def __exit__(self, *exc) -> None:
        qemu = self.procs.get("qemu")
        if qemu is not None and qemu.poll() is None:
            vmlab.qmp_command(self.qmp, "quit")
            try:
                qemu.wait(timeout=15)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait(timeout=15)
        for name in ("tcpdump", "sink"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.lab.down()
        leftovers = [ns for ns in self.lab.namespaces() if Path(f"/run/netns/{ns}").exists()]
        if leftovers:
            print(f"image-test: WARNING: namespaces left behind: {leftovers}", file=sys.stderr)
        if self.serial_log.exists():
            (self.out / "serial.txt").write_text(plain(self.serial_log.read_bytes()))


def configured(args: argparse.Namespace, checks: Checks, figures: dict) -> None:
    with Boot(args, "configured", Path(args.config), checks, figures) as boot:
        found = boot.wait_ready()
        if found is None:
            return
        line = found.group(0)
        checks.check(
            "readiness line: daemon ready, health ok, filtering verified",
            b"READY health=ok filtering=verified" in line,
            line.decode(errors="replace"),
        )
        size = re.search(rb"knock_list_size=([0-9,]+)", line)
        checks.check(
            "the knock list has the image's default size (modprobe.d: ip_list_tot=10000)",
            bool(size) and set(size.group(1).split(b",")) == {b"10000"},
            size.group(0).decode() if size else "no knock_list_size in the readiness line",
        )

        print("== image-test [configured]: traffic through the guest's bridge", flush=True)
        lab = boot.lab
        for family, sources, mx1, mx2 in (
            ("IPv4", vmlab.CLIENT_V4, vmlab.MX1[0], vmlab.MX2[0]),
            ("IPv6", vmlab.CLIENT_V6, vmlab.MX1[1], vmlab.MX2[1]),
        ):
            r = probe(lab.client, sources[0], mx2)
            checks.check(f"{family}: mx2 {mx2} refused before a knock (reset)", r["result"] == "reset", json.dumps(r))
            r = probe(lab.client, sources[0], mx1)
            checks.check(f"{family}: the knock on mx1 {mx1} refused (reset)", r["result"] == "reset", json.dumps(r))
            r = probe(lab.client, sources[0], mx2)
            checks.check(f"{family}: mx2 accepted after the knock", r["result"] == "accepted", json.dumps(r))
            r = probe(lab.client, sources[1], mx2)
            checks.check(
                f"{family}: mx2 still refused for {sources[1]}, which did not knock",
                r["result"] == "reset",
                json.dumps(r),
            )

        swaks = subprocess.run(
            vmlab.in_ns(
                lab.client,
                "swaks",
                "--silent",
                "2",
                "--timeout",
                "20",
                "--local-interface",
                vmlab.CLIENT_V4[0],
                "--server",
                vmlab.MX2[0],
                "--from",
                "sender@example.test",
                "--to",
                "postmaster@example.test",
                "--header",
                "Subject: mxknock image-test",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        delivered = wait_for(lambda: [p for p in (boot.out / "mail").glob("*.eml") if vmlab.MX2[0] in p.name], 10)
        checks.check(
            "a real mail (swaks) delivered through mx2",
            swaks.returncode == 0 and bool(delivered),
            f"swaks exit {swaks.returncode}{': ' + swaks.stderr.strip()[-200:] if swaks.returncode else ''}",
        )

        print("== image-test [configured]: the console on the serial line", flush=True)
        kind = boot.wait_console("health")
        checks.check(
            "the console is drawn on the serial line, with the daemon's health",
            kind is not None,
            {
                "textual": "the Textual console",
                "fallback": "the text FALLBACK: `mxknock console` did not start in this build",
                None: "no console with the daemon's health after the readiness line",
            }[kind],
        )

        boot.check_invisible()
        boot.power_off()


BOX = ["192.0.2.5", "2001:db8::5"]
SSH_OPTIONS = [
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=15",
]  # fmt: skip
FETCH = (
    "import socket,sys\n"
    "src,dst=sys.argv[1],sys.argv[2]\n"
    "s=socket.create_connection((dst,9425),timeout=20,source_address=(src,0))\n"
    "s.sendall(b'GET /metrics HTTP/1.0\\r\\nHost: mxknock\\r\\n\\r\\n')\n"
    "data=b''\n"
    "while chunk:=s.recv(65536): data+=chunk\n"
    "sys.stdout.write(data.decode())\n"
)


def managed_config(out: Path, base: Path, public_key: str) -> Path:
    management = {
        "address": [f"{BOX[0]}/24", f"{BOX[1]}/64"],
        "ssh_keys": [public_key],
        "allow": [f"{vmlab.CLIENT_V4[0]}/32", f"{vmlab.CLIENT_V6[0]}/128"],
        "metrics": True,
    }
    path = out / "managed-config.yaml"
    # JSON is YAML: no YAML library needed on the host.
    path.write_text(base.read_text().rstrip("\n") + f"\nmanagement: {json.dumps(management)}\n")
    return path


def managed(args: argparse.Namespace, checks: Checks, figures: dict) -> None:
    out = Path(args.out)
    key = out / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)], check=True)
    config = managed_config(out, Path(args.config), (out / "id_ed25519.pub").read_text().strip())
    with Boot(args, "managed", config, checks, figures) as boot:
        found = boot.wait_ready()
        if found is None:
            return
        checks.check(
            "[managed] ready with a management address: health ok, filtering verified",
            b"READY health=ok filtering=verified" in found.group(0),
            found.group(0).decode(errors="replace"),
        )
        lab = boot.lab

        def ssh(source: str, box: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
            argv = ["ssh", *SSH_OPTIONS, "-i", str(key), "-b", source, f"root@{box}", *command]
            return subprocess.run(vmlab.in_ns(lab.client, *argv), capture_output=True, text=True, timeout=timeout)

        print("== image-test [managed]: SSH to the management address", flush=True)
        start = time.monotonic()
        # sshd starts once mxknockd wrote the keys, and makes its host keys first (slow under TCG).
        attempts: list[subprocess.CompletedProcess] = []

        def log_in() -> subprocess.CompletedProcess | None:
            attempts.append(ssh(vmlab.CLIENT_V4[0], BOX[0], "mxknock", "status", "--json"))
            return attempts[-1] if attempts[-1].returncode in (0, 4, 5) else None  # status' own exit codes

        login = wait_for(log_in, 180, step=3)
        figures["managed"]["ssh_after_ready_s"] = round(time.monotonic() - start, 1)
        status = {}
        if login:
            try:
                status = json.loads(login.stdout)
            except ValueError:
                status = {}
        checks.check(
            "[managed] root logs in over SSH (IPv4) with the key and `mxknock status` answers",
            status.get("health") == "ok",
            f"after {figures['managed']['ssh_after_ready_s']} s: "
            + (
                f"health {status.get('health')}, problems {status.get('problems')}"
                if login
                else f"no login in {len(attempts)} attempts; the last: exit {attempts[-1].returncode}, "
                f"{attempts[-1].stderr.strip()[-300:]!r}"
                if attempts
                else "no attempt"
            ),
        )
        addresses = {a["address"] for a in (status.get("management") or {}).get("addresses", [])}
        checks.check(
            "[managed] status shows the management addresses on the bridge",
            {f"{BOX[0]}/24", f"{BOX[1]}/64"} <= addresses,
            ", ".join(sorted(addresses)) or "none",
        )
        v6 = ssh(vmlab.CLIENT_V6[0], BOX[1], "sh", "-c", "'ls /etc/ssh/ssh_host_*_key.pub; systemctl is-active ssh'")
        checks.check(
            "[managed] SSH over IPv6 too; sshd's host keys were made on the box",
            v6.returncode == 0 and "ssh_host_ed25519_key.pub" in v6.stdout and "active" in v6.stdout,
            (v6.stdout + v6.stderr).strip().replace("\n", " ")[:200],
        )

        print("== image-test [managed]: metrics", flush=True)
        for source, mx1, mx2 in ((vmlab.CLIENT_V4[0], vmlab.MX1[0], vmlab.MX2[0]),):
            probe(lab.client, source, mx1)  # a knock, so the counters have something to show
            probe(lab.client, source, mx2)
        for source, box in ((vmlab.CLIENT_V4[0], BOX[0]), (vmlab.CLIENT_V6[0], BOX[1])):
            fetch = subprocess.run(
                vmlab.in_ns(lab.client, sys.executable, "-c", FETCH, source, box),
                capture_output=True,
                text=True,
                timeout=60,
            )
            text = fetch.stdout
            knocks = re.search(
                r'^mxknock_connections_total\{[^}]*kind="knocks"[^}]*family="ipv4"[^}]*\} (\d+)', text, re.M
            )
            checks.check(
                f"[managed] metrics at http://{box}:9425/metrics: Prometheus text with the daemon's counters",
                fetch.returncode == 0
                and " 200 " in text.split("\n", 1)[0]
                and re.search(r"^mxknock_up 1$", text, re.M) is not None
                and bool(knocks)
                and int(knocks.group(1)) >= 1,
                text.split("\n", 1)[0].strip()
                + (f", knocks ipv4 {knocks.group(1)}" if knocks else ", no knock counter")
                + (f" {fetch.stderr.strip()[-200:]}" if fetch.returncode else ""),
            )

        stranger = vmlab.CLIENT_V4[1]
        results = {port: probe(lab.client, stranger, BOX[0], timeout=4, port=port)["result"] for port in (22, 9425)}
        checks.check(
            f"[managed] {stranger} (not in management.allow) gets no answer on 22 or 9425",
            set(results.values()) == {"timeout"},
            json.dumps(results),
        )
        boot.stop_capture()
        boot.power_off()


def unconfigured(args: argparse.Namespace, checks: Checks, figures: dict) -> None:
    with Boot(args, "unconfigured", None, checks, figures) as boot:
        found = boot.wait_ready()
        if found is None:
            return
        line = found.group(0)
        checks.check(
            "[unconfigured] daemon ready without a config: health critical, no filtering, no bridge",
            b"READY health=critical filtering=none" in line,
            line.decode(errors="replace"),
        )
        print("== image-test [unconfigured]: nothing may pass", flush=True)
        for source, dest in ((vmlab.CLIENT_V4[0], vmlab.MX2[0]), (vmlab.CLIENT_V6[0], vmlab.MX2[1])):
            r = probe(boot.lab.client, source, dest, timeout=5)
            checks.check(
                f"[unconfigured] {source} -> mx2 {dest}: not forwarded",
                r["result"] in ("timeout", "error"),
                json.dumps(r),
            )
        kind = boot.wait_console("first start")
        checks.check(
            "[unconfigured] the console's first-start setup on the serial line",
            kind is not None,
            {
                "textual": "the Textual console's setup screen",
                "fallback": "the text FALLBACK: `mxknock console` did not start in this build",
                None: "no setup screen after the readiness line",
            }[kind],
        )
        if kind == "textual":
            # Unused NICs are brought up (no address, no IPv6), so the setup can show which has
            # a cable; both taps are up in the lab, so both ports must read "link".
            rows = [re.compile(rf"^ *{nic} +{re.escape(mac)} +link\b", re.M) for nic, mac in GUEST_NICS]

            def links_shown():
                screen = boot.console_screen() or ""
                return all(row.search(screen) for row in rows)

            shown = wait_for(links_shown, 30)
            table = [line for line in (boot.console_screen() or "").splitlines() if re.match(r" *eth\d", line)]
            checks.check(
                "[unconfigured] the setup shows both NICs with their link (cables in)",
                bool(shown),
                " | ".join(line.strip() for line in table) or "no interface rows on the screen",
            )
        boot.check_invisible()
        boot.power_off()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk", default="mkosi.output/mxknock.img")
    parser.add_argument("--config", default=str(HERE / "test-config.yaml"))
    parser.add_argument("--prefix", default="mxkt")
    parser.add_argument("--mem", type=int, default=1024)
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--boot-timeout", type=float, default=420)
    parser.add_argument("--out", default="build/image/test")
    parser.add_argument("--scenarios", default="configured,managed,unconfigured")
    parser.add_argument(
        "--strict-invisible",
        action="store_true",
        help="fail (not only warn) when the box sends frames of its own on the outside wire",
    )
    args = parser.parse_args()
    vmlab.check_host()
    for tool in ("swaks", "tcpdump", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            sys.exit(f"image-test: {tool} is missing: run `make image-host-deps`")
    if not Path(args.disk).exists():
        sys.exit(f"image-test: no image at {args.disk}: run `make image`")
    shutil.rmtree(args.out, ignore_errors=True)
    Path(args.out).mkdir(parents=True)

    checks, figures = Checks(), {}
    start = time.monotonic()
    for name in args.scenarios.split(","):
        {"configured": configured, "managed": managed, "unconfigured": unconfigured}[name](args, checks, figures)
    figures["test_s"] = round(time.monotonic() - start, 1)
    (Path(args.out) / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"== image-test: figures {json.dumps(figures)}")
    print(f"== image-test: serial captures in {args.out}/*/: serial.log, serial.txt (text), screen.txt (the console)")
    for name, detail in checks.warnings:
        print(f"image-test: WARNING: {name}: {detail}")
    passed = len(checks.results) - checks.failed
    print(f"image-test: {passed} passed, {checks.failed} failed")
    return 1 if checks.failed or not checks.results else 0


if __name__ == "__main__":
    sys.exit(main())
