"""The lab DNS: dnsmasq as a plain process in the dns namespace, serving only example.test."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import addresses as A
from .netns import in_ns
from .procs import wait_listening


def dnsmasq_argv(mx: Sequence[A.MxHost], log_file: Path) -> list[str]:
    """A dnsmasq that reads no system file and answers only from its command line."""
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        f"--listen-address={A.DNS_V4}",
        f"--listen-address={A.DNS_V6}",
        "--except-interface=lo",
        "--pid-file=",  # none: we track the process ourselves
        "--user=nobody",
        f"--local=/{A.ZONE}/",  # authoritative-ish: unknown names are NXDOMAIN, never forwarded
        "--log-queries",
        f"--log-facility={log_file}",
    ]
    for host in mx:
        argv.append(f"--mx-host={A.ZONE},{host.name},{host.preference}")
        argv.append(f"--host-record={host.name},{','.join(host.addresses)}")
    return argv


def start_dnsmasq(ns: str, mx: Sequence[A.MxHost], workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "dnsmasq.log"
    log_file.touch()
    log_file.chmod(0o666)  # dnsmasq drops to nobody before it opens the log again
    out = open(workdir / "dnsmasq.out", "wb")
    with out:
        proc = subprocess.Popen(
            in_ns(ns, dnsmasq_argv(mx, log_file)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc


def wait_dnsmasq(proc: subprocess.Popen[bytes], workdir: Path, timeout: float = 5.0) -> None:
    # `ip netns exec` execs dnsmasq, so proc.pid is dnsmasq and /proc/<pid>/net is its netns.
    log = workdir / "dnsmasq.out"
    wait_listening(proc, 53, "udp", count=2, timeout=timeout, what="dnsmasq", log=log)
