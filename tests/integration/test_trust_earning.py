"""Issue 6: who becomes a proven sender, and what cannot take that away.

Trust is earned only by a connection let through after a knock (or, in backup-mx mode,
to mx1) whose handshake completes: a spoofed source never completes one. A knock flood
that evicts every live knock from the kernel list leaves proven senders alone.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time

from tests.lab import Lab
from tests.lab import addresses as A
from tests.lab.appliance import Appliance, config_text
from tests.lab.netns import in_ns, run

# Raw TCP segments with a forged IPv4 source, sent from the bot namespace (no scapy).
# stdin: a JSON list of steps {"src","dst","sport","dport","seq","ack","flags"} or {"sleep"}.
RAW_TCP = r"""
import json, random, socket, struct, sys, time

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def segment(src, dst, sport, dport, seq, ack, flags):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(65536), 0x4000, 64,
                     socket.IPPROTO_TCP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp

FLAGS = {"S": 0x02, "A": 0x10}
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
for step in json.load(sys.stdin):
    if "sleep" in step:
        time.sleep(step["sleep"])
        continue
    flags = sum(FLAGS[c] for c in step["flags"])
    packet = segment(step["src"], step["dst"], step["sport"], step["dport"], step["seq"], step.get("ack", 0), flags)
    sock.sendto(packet, (step["dst"], 0))
"""

SPOOFED = "198.51.100.99"  # nobody in the lab owns it


def send_raw(lab: Lab, steps: list[dict[str, object]]) -> None:
    # lab.exec takes no stdin: run the script the same way, through `ip netns exec`.
    run(in_ns(lab.ns("bot"), [sys.executable, "-c", RAW_TCP]), input=json.dumps(steps))


def trusted(appliance: Appliance) -> dict[str, float]:
    """Proven senders -> seconds left (the control API behind `mxknock trusted list`)."""
    return {e["address"]: e["time_left"] for e in appliance.client.call("trusted_list")["trusted"]}


def knocked(appliance: Appliance) -> set[str]:
    """Addresses in the knock lists (`mxknock knocks`), canonical: xt_recent prints IPv6
    addresses uncompressed (2001:0db8:0000:...)."""
    lists = appliance.client.call("knocks")["knock_lists"]
    return {str(ipaddress.ip_address(k["address"])) for kl in lists for k in kl["knocks"]}


def cli_trusted(appliance: Appliance) -> set[str]:
    """The addresses `mxknock --json trusted list` shows (the real CLI, as an admin runs it)."""
    out = appliance.cli("--json", "trusted", "list")
    assert out.returncode == 0, out.stderr
    return {e["address"] for e in json.loads(out.stdout)["trusted"]}


def counter(appliance: Appliance, name: str) -> int:
    return appliance.status()["counters"][name]["total"]


def test_spoofed_syns_do_not_earn_trust(lab: Lab, appliance: Appliance) -> None:
    appliance.start(config_text(window=60))

    # A knock from a forged source, then a SYN to mx2 that the knock lets through (and
    # marks). The SYN-ACK goes to the forged address: no handshake ever completes.
    def syn(dst: str, sport: int, seq: int) -> dict[str, object]:
        return {"src": SPOOFED, "dst": dst, "sport": sport, "dport": 25, "seq": seq, "flags": "S"}

    send_raw(lab, [syn(A.MX1_V4, 40001, 1000), {"sleep": 0.2}, syn(A.MX2_V4, 40002, 2000)])
    time.sleep(0.3)
    assert SPOOFED in knocked(appliance)
    assert counter(appliance, "after_knock") >= 1  # the forged SYN did pass the knock check
    assert SPOOFED not in trusted(appliance)

    # Harder: let the mail server's SYN-ACK really cross the bridge (as it would toward a
    # real, silent owner of the address), so conntrack has seen a reply. Then a repeated SYN
    # and a blind ACK (the spoofer cannot know the server's sequence number).
    bot_mac = lab.exec("bot", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    lab.exec("mail", ["ip", "neigh", "replace", SPOOFED, "lladdr", bot_mac, "dev", "eth0", "nud", "permanent"])
    blind_ack = {"src": SPOOFED, "dst": A.MX2_V4, "sport": 40003, "dport": 25, "seq": 3001, "ack": 12345}
    send_raw(
        lab,
        [
            syn(A.MX2_V4, 40003, 3000),
            {"sleep": 0.3},
            syn(A.MX2_V4, 40003, 3000),
            {"sleep": 0.2},
            {**blind_ack, "flags": "A"},
            {"sleep": 0.2},
            {**blind_ack, "flags": "A"},
        ],
    )
    time.sleep(0.3)
    conntrack = lab.exec("fw", ["cat", "/proc/net/nf_conntrack"], check=False).stdout
    print(conntrack)
    assert f"src={A.MX2_V4} dst={SPOOFED} sport=25 dport=40003" in conntrack  # the reply was seen
    assert SPOOFED not in cli_trusted(appliance)
    assert counter(appliance, "trust_earned") == 0

    # Positive control: a real client completes its handshake after its knock.
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "reset"
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert A.BOT_V4 in trusted(appliance)
    assert counter(appliance, "trust_earned") == 1
    assert cli_trusted(appliance) == {A.BOT_V4}


def test_knock_flood_does_not_remove_a_proven_sender(lab: Lab, appliance: Appliance) -> None:
    window = 3
    appliance.start(config_text(window=window))
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "reset"
    knock_time = time.monotonic()
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"
    assert A.BOT_V4 in trusted(appliance)

    flood = lab.add_bot_addresses(320, 4)  # 3.2 times the kernel list (100 entries)
    results = lab.connect_many("bot", [(src, A.MX1_V4, 25) for src in flood], concurrency=20, timeout=2.0)
    assert results == ["reset"] * len(flood)
    status = appliance.status()
    (v4_list,) = [kl for kl in status["knock_lists"] if kl["name"] == "mxknock4-32"]
    assert v4_list["entries"] == v4_list["capacity"] == 100
    assert A.BOT_V4 not in knocked(appliance)  # its knock was evicted by the flood
    assert set(trusted(appliance)) == {A.BOT_V4}  # knocking alone earns nothing

    time.sleep(max(0.0, knock_time + window + 1.0 - time.monotonic()))
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"  # straight to mx2
    assert lab.connect("bot", flood[0], A.MX2_V4, 25) == "reset"  # its knock was evicted too
    assert counter(appliance, "trusted") == 1


def test_backup_mx_handshake_to_mx1_earns_trust(lab: Lab, appliance: Appliance) -> None:
    window = 3
    appliance.start(config_text(mode="backup-mx", window=window))
    assert lab.connect("bot", A.BOT_V4, A.MX1_V4, 25) == "accepted"  # mx1 is open in backup-mx
    assert lab.connect("bot", A.BOT_V6, A.MX1_V6, 25) == "accepted"
    assert set(trusted(appliance)) == {A.BOT_V4, A.BOT_V6}
    assert counter(appliance, "trust_earned") == 2

    time.sleep(window + 1.0)
    assert lab.connect("bot", A.BOT_V4, A.MX2_V4, 25) == "accepted"  # proven, no knock needed
    assert lab.connect("bot", A.BOT_V6, A.MX2_V6, 25) == "accepted"
    assert lab.connect("sender", A.SENDER_V4, A.MX2_V4, 25) == "reset"  # never came to mx1
    counters = appliance.status()["counters"]
    assert counters["trusted"]["total"] == 2
