"""The image's lab: two host-side network namespaces wired to the guest's two NICs, and qemu.

    outside                           the appliance (qemu, UEFI)                  inside
 <prefix>-client: br0 ── tap0 ══ eth0 ─[ br0 ]─ eth1 ══ tap0 ── br0 :<prefix>-mail
 192.0.2.100, .101                                                mx1 192.0.2.10, 2001:db8::10
 2001:db8::100, ::101                                             mx2 192.0.2.20, 2001:db8::20

Each tap is created inside its namespace (setns + TUNSETIFF) and its file descriptor handed to
qemu (-netdev tap,fd=N), so no tap ever exists in the host's own namespace and deleting the
namespaces removes everything. Documentation addresses only. Standard library only.

    python3 image/test/vmlab.py vm --disk mkosi.output/mxknock.img [--config FILE]   # make vm
    python3 image/test/vmlab.py down [--prefix P]                                      # clean up
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The guest's NICs: eth0 (outside) and eth1 (inside), in this PCI order (net.ifnames=0).
GUEST_MACS = {"outside": "52:54:00:6d:78:01", "inside": "52:54:00:6d:78:02"}

CLIENT_V4 = ["192.0.2.100", "192.0.2.101"]
CLIENT_V6 = ["2001:db8::100", "2001:db8::101"]
MX1 = ["192.0.2.10", "2001:db8::10"]
MX2 = ["192.0.2.20", "2001:db8::20"]


def sh(*cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, timeout=timeout, text=True, **kw)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_tap(ns: str, name: str) -> int:
    """Create tap `name` inside namespace `ns`; return its fd (for qemu's -netdev tap,fd=)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return fd


class Lab:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.client = f"{prefix}-client"
        self.mail = f"{prefix}-mail"
        self.fds: dict[str, int] = {}

    def namespaces(self) -> list[str]:
        return [self.client, self.mail]

    def up(self) -> dict[str, int]:
        self.down(quiet=True)
        for ns, role, v4, v6 in (
            (self.client, "outside", CLIENT_V4, CLIENT_V6),
            (self.mail, "inside", [MX1[0], MX2[0]], [MX1[1], MX2[1]]),
        ):
            sh("ip", "netns", "add", ns)

            def run(*c: str, ns: str = ns) -> None:
                sh(*in_ns(ns, *c))

            run("ip", "link", "set", "lo", "up")
            run("sysctl", "-qw", "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")
            run("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.fds[role] = open_tap(ns, "tap0")
            run("ip", "link", "set", "tap0", "master", "br0", "up")
            run("ip", "link", "set", "br0", "up")
            for a in v4:
                run("ip", "addr", "add", f"{a}/24", "dev", "br0")
            for a in v6:
                run("ip", "addr", "add", f"{a}/64", "dev", "br0", "nodad")
        return self.fds

    def close_fds(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = {}

    def down(self, quiet: bool = False) -> None:
        self.close_fds()
        for ns in self.namespaces():
            if Path(f"/run/netns/{ns}").exists():
                # Our own processes only: whatever still runs in the namespace (sink, tcpdump).
                pids = sh("ip", "netns", "pids", ns, check=False, capture_output=True).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), 15)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "del", ns, check=False)
                if not quiet:
                    print(f"lab: removed namespace {ns}")


def credential_arg(config: Path) -> list[str]:
    """The config as the systemd credential mxknock.yaml, through SMBIOS type 11."""
    value = base64.b64encode(config.read_bytes()).decode()
    return ["-smbios", f"type=11,value=io.systemd.credential.binary:mxknock.yaml={value}"]


def qemu_command(
    disk: Path,
    vars_file: Path,
    fds: dict[str, int],
    *,
    mem: int,
    accel: str,
    serial: list[str],
    qmp: Path | None,
    config: Path | None,
) -> list[str]:
    # fmt: off
    cmd = [
        "qemu-system-x86_64",
        "-machine", f"q35,accel={accel}",
        "-cpu", "max",
        "-smp", "2",
        "-m", str(mem),
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}",
        # No default devices (CD-ROM, NIC, VGA): the firmware boots the disk and nothing else.
        # With the disk the only boot entry, OVMF leaves the NICs alone (its own IPv6 stack
        # would otherwise announce itself on the wire before Linux starts).
        "-nodefaults",
        # snapshot=on: the guest's writes go to a temporary file, the image stays as built.
        "-drive", f"if=none,id=disk0,format=raw,file={disk},snapshot=on",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
        # romfile="": no iPXE option ROM on the NICs (no network boot, a faster firmware).
        "-netdev", f"tap,id=outside,fd={fds['outside']}",
        "-device", f"virtio-net-pci,netdev=outside,mac={GUEST_MACS['outside']},addr=0x3,romfile=",
        "-netdev", f"tap,id=inside,fd={fds['inside']}",
        "-device", f"virtio-net-pci,netdev=inside,mac={GUEST_MACS['inside']},addr=0x4,romfile=",
        "-display", "none",
        "-no-reboot",
        *serial,
    ]
    # fmt: on
    if qmp is not None:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if config is not None:
        cmd += credential_arg(config)
    return cmd


def qmp_command(path: Path, command: str, timeout: float = 5) -> dict | None:
    """One QMP command (after the capabilities handshake); None when qemu is gone."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            reader = sock.makefile("r")
            reader.readline()  # greeting
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            reader.readline()
            sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
            return json.loads(reader.readline() or "null")
    except OSError:
        return None


def check_host() -> None:
    for tool in ("qemu-system-x86_64", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"vmlab: {tool} is missing: run `make image-host-deps` (image/REQUIREMENTS.txt)")
    for f in (OVMF_CODE, OVMF_VARS):
        if not f.exists():
            sys.exit(f"vmlab: {f} is missing: apt-get install ovmf")
    if os.geteuid() != 0:
        sys.exit("vmlab: run as root (namespaces, taps)")


def cmd_vm(args: argparse.Namespace) -> int:
    """`make vm`: the guest's serial console on this terminal, the lab around it."""
    check_host()
    lab = Lab(args.prefix)
    sink = None
    with tempfile.TemporaryDirectory(prefix="mxknock-vm-") as tmp:
        vars_file = Path(tmp) / "OVMF_VARS.fd"
        shutil.copy(OVMF_VARS, vars_file)
        try:
            fds = lab.up()
            spool = Path(tmp) / "mail"
            sink = subprocess.Popen(
                in_ns(
                    lab.mail,
                    sys.executable,
                    str(HERE / "smtp_sink.py"),
                    "--spool",
                    str(spool),
                    "--max-seconds",
                    str(args.max_seconds),
                )
            )
            config = Path(args.config) if args.config else None
            cmd = qemu_command(
                Path(args.disk),
                vars_file,
                fds,
                mem=args.mem,
                accel=args.accel,
                serial=["-serial", "mon:stdio"],
                qmp=None,
                config=config,
            )
            print(
                f"""
== mxknock VM ({args.accel}, -smp 2, {args.mem} MiB), disk {args.disk} (snapshot: changes are not kept)
   config: {args.config or "none: the console starts the first-boot setup"}
   outside namespace {lab.client}: 192.0.2.100, 192.0.2.101, 2001:db8::100, 2001:db8::101
   inside  namespace {lab.mail}:   mx1 192.0.2.10 / 2001:db8::10, mx2 192.0.2.20 / 2001:db8::20 (SMTP sink on 25)
   In another terminal, as root:
     ip netns exec {lab.client} python3 image/test/probe.py 192.0.2.100 192.0.2.20 25   # refused (reset)
     ip netns exec {lab.client} python3 image/test/probe.py 192.0.2.100 192.0.2.10 25   # the knock (reset)
     ip netns exec {lab.client} python3 image/test/probe.py 192.0.2.100 192.0.2.20 25   # accepted
     ip netns exec {lab.client} swaks -li 192.0.2.100 -s 192.0.2.20 -f a@example.test -t b@example.test
   Leave the VM: Ctrl-A X (or power it off from the console). The lab is removed afterwards.
""",
                flush=True,
            )
            proc = subprocess.Popen(cmd, pass_fds=list(fds.values()))
            lab.close_fds()
            try:
                proc.wait(timeout=args.max_seconds)
            except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{args.max_seconds} s are up"
                print(f"\nvmlab: {why}: stopping the VM", flush=True)
                proc.terminate()
                proc.wait(timeout=30)
            os.system("stty sane 2>/dev/null")
        finally:
            if sink is not None and sink.poll() is None:
                sink.terminate()
                sink.wait(timeout=10)
            lab.down()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    Lab(args.prefix).down()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("vm", help="boot the image with its lab; serial console on this terminal")
    p.add_argument("--disk", required=True)
    p.add_argument("--prefix", default="mxkvm")
    p.add_argument("--mem", type=int, default=1024)
    p.add_argument("--accel", default="tcg")
    p.add_argument("--config", help="YAML handed to the guest as the credential mxknock.yaml")
    p.add_argument("--max-seconds", type=int, default=4 * 3600, help="stop the VM after this long")
    p.set_defaults(func=cmd_vm)
    p = sub.add_parser("down", help="remove a lab left behind")
    p.add_argument("--prefix", default="mxkvm")
    p.set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
