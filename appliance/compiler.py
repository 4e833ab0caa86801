"""Config -> Ruleset: where the techniques live. Pure: no kernel, no files.

Per family, one chain (MXKNOCK) reached by one jump from FORWARD for packets that
enter the bridge on its outside port. Its order is the design:

  0. trust: a connection we let through after a knock (connmark) that completes its
     handshake (its first ACK is the 2nd or 3rd packet from the client) makes its
     source a proven sender (ipset with timeouts). Spoofed SYNs never get that far.
     A prefix earns at most TRUST_CAP_PER_HOUR new proven senders an hour (MXKNOCK-EARN).
  1. established/related: accept, so no session is cut when its window expires
  2. whitelist (ipset): accept to mx1 and mx2 without knocking
  3. extra knock ports on the mail server: record the knock, fall through
  4. mx1: record the knock; reset (or accept, in backup-mx mode)
  5. mx2: per mode, accept after a knock inside the window, or for everybody;
     then proven senders
  6. mx2: reset the rest

Accepting "after a knock" jumps to MXKNOCK-PASS, which marks the connection (for 0)
and accepts.

With a management address, INPUT on the bridge jumps to MXKNOCK-INPUT: replies,
ICMP (IPv6 needs it for neighbour discovery), SSH if keys are set and metrics if on,
from the allowed networks only; everything else addressed to the box is dropped.

The raw table keeps what we do not filter out of connection tracking: PREROUTING on the
bridge jumps to MXKNOCK-RAW, which lets TCP to and from mx1/mx2 on the SMTP and knock
ports, and traffic to the box's own management address, be tracked (RETURN) and marks
everything else NOTRACK. A full conntrack table drops new flows of every kind, and
completed-then-abandoned handshakes keep their entries for days: untracked, a flood aimed
at anything but the mail ports costs no entry at all. Untracked packets still cross
MXKNOCK, but every rule there judges only tracked mail traffic, so they fall through to
FORWARD as before. ICMP is untracked too, errors included: our rules judge TCP only, so an
error about a mail connection is bridged whether or not conntrack calls it RELATED, and
tracked echo requests would each take an entry.
"""

from __future__ import annotations

import ipaddress

from .config import METRICS_PORT, SSH_PORT, Config, Management
from .ruleset import (
    BASE_CHAINS,
    CHAIN,
    EARN_CHAIN,
    INPUT_CHAIN,
    PASS_CHAIN,
    RAW_CHAIN,
    FamilyRuleset,
    IPSet,
    Match,
    Options,
    Rule,
    Ruleset,
)

RESET: Options = (("reject-with", "tcp-reset"),)

# Roles name what a rule's counters mean (see status.py).
ROLE_JUMP = "jump"
ROLE_ESTABLISHED = "established"
ROLE_WHITELIST = "whitelist"
ROLE_KNOCK_PORT = "knock-port"
ROLE_KNOCK = "knock"
ROLE_AFTER_KNOCK = "after-knock"
ROLE_OPEN = "open"
ROLE_REFUSED = "refused"
ROLE_TRUSTED = "trusted"
ROLE_TRUST_EARNED = "trust-earned"
ROLE_TRUST_CAPPED = "trust-capped"
ROLE_PASS = "pass"
ROLE_SSH = "management-ssh"
ROLE_METRICS = "management-metrics"
ROLE_MANAGEMENT_DROPPED = "management-dropped"
ROLE_UNTRACKED = "untracked"

# The connmark bit of connections let through after a knock; one bit, so it leaves the
# rest of the mark to anyone else on the box.
EARNED_MARK = "0x10000000/0x10000000"
CLEAR_MARK = "0x0/0x10000000"
# ipset keeps a timeout of at most 2147483 s (~24.8 days); the daemon extends entries
# whose configured lifetime is longer (state.py).
IPSET_MAX_TIMEOUT = 2147483
TRUST_SET_SIZE = 262144
MULTIPORT_MAX = 15

# How many new proven senders one prefix can earn an hour (burst: all of them at once).
# Whoever owns a prefix can complete handshakes from every address in it: one owner of an
# IPv6 /64 made 4,987 addresses proven in 5 s. A connection over the cap is still let
# through (it knocked) but earns nothing, so the cap costs a legitimate sender only a
# knock next time; it stops one owner from filling the set (262,144) in minutes.
# IPv4: /24, the smallest prefix routed on the Internet. IPv6: /48, not /64: a /64 is
# what one host or LAN gets, but sites are delegated a /56 or /48 (RIPE-690), so a /64
# cap would still hand the owner of one /48 65,536 caps an hour.
# Big senders' pools (e.g. 250 MTAs in a /24) become proven over a few hours; refreshes
# of senders already proven do not count against the cap.
TRUST_CAP_PER_HOUR = 32
TRUST_CAP_PREFIX = {4: 24, 6: 48}
# The kernel's per-prefix table: idle entries leave after an hour (a full refill), and it
# holds this many prefixes; a full table drops the packet (hashlimit's hotdrop), so it is
# sized well above the prefixes that complete handshakes within an hour.
TRUST_CAP_TABLE_MAX = 65536


def knock_list_name(family: int, prefix: int) -> str:
    """The xt_recent list for a family. The mask is fixed when a list is created, so a
    change of knock granularity must use a new list rather than silently keep the old mask."""
    return f"mxknock{family}-{prefix}"


def refused_list_name(family: int) -> str:
    """Sources refused at mx2, newest last: rejected connections never reach the MTA's
    log, so this list is where an admin sees who was turned away (`mxknock refused`)."""
    return f"mxknock{family}-refused"


def set_name(kind: str, family: int) -> str:
    return f"mxknock-{kind}{family}"


# Sets whose entries come from the config: when a config no longer names one (the
# management address removed, a family dropped), it goes. Trust sets stay: what was
# learned outlives a change of mode.
CONFIG_SET_KINDS = ("allow", "select", "manage")


def config_set_names() -> tuple[str, ...]:
    return tuple(set_name(kind, family) for kind in CONFIG_SET_KINDS for family in (4, 6))


def compile_config(config: Config) -> Ruleset:
    return Ruleset(tuple(_compile_family(config, family) for family in (4, 6)))


def _compile_family(config: Config, family: int) -> FamilyRuleset:
    rules: list[Rule] = []
    sets: list[IPSet] = []
    knock_list = None
    if family in config.families():
        mail = _compile_mail(config, family)
        rules += mail.rules
        sets += mail.sets
        knock_list = mail.knock_list
    if config.management is not None and family in config.management.families():
        management_rules, management_set = _compile_management(config.bridge.name, config.management, family)
        rules += management_rules
        sets.append(management_set)
    # The kernel lists built-in chains first, then ours by name (netfilter.read_family).
    rules.sort(key=_kernel_order)
    return FamilyRuleset(
        family=family,
        rules=tuple(rules),
        sets=tuple(sets),
        knock_list=knock_list,
        raw_rules=_compile_raw(config, family),
    )


def _kernel_order(rule: Rule) -> tuple[int, str]:
    return (BASE_CHAINS.index(rule.chain), "") if rule.chain in BASE_CHAINS else (len(BASE_CHAINS), rule.chain)


def _compile_raw(config: Config, family: int) -> tuple[Rule, ...]:
    """The raw table: only mail traffic and the box's own is tracked (see the module doc).

    Every family gets it, even one without MX addresses: conntrack's table is shared by
    both families, so untracked IPv6 matters to IPv4 mail too.
    """
    rules = [Rule(chain="PREROUTING", in_interface=config.bridge.name, target=RAW_CHAIN)]
    if family in config.families():
        ports = (config.smtp_port, *config.knock_ports)
        # multiport takes at most 15 ports; the SMTP port and 15 knock ports make 16.
        groups = [",".join(str(p) for p in ports[i : i + MULTIPORT_MAX]) for i in range(0, len(ports), MULTIPORT_MAX)]
        hosts = tuple(dict.fromkeys(_host(config.mx(which, family)) for which in ("mx1", "mx2")))
        for host in hosts:  # the client's side: to the server's mail ports
            rules += [_mail_flow(host, None, group, "dports") for group in groups]
        for host in hosts:  # the server's replies: from its mail ports
            rules += [_mail_flow(None, host, group, "sports") for group in groups]
    address = config.management.address(family) if config.management else None
    if address is not None:
        # Replies to the box's own connections need conntrack (MXKNOCK-INPUT accepts
        # RELATED,ESTABLISHED); so does the link-local address IPv6 management brings.
        rules.append(Rule(chain=RAW_CHAIN, dst=_host(address.ip), target="RETURN"))
        if family == 6:
            rules.append(Rule(chain=RAW_CHAIN, dst="fe80::/10", target="RETURN"))
    rules.append(Rule(chain=RAW_CHAIN, target="CT", target_options=(("notrack", None),), role=ROLE_UNTRACKED))
    return tuple(rules)


def _mail_flow(dst: str | None, src: str | None, ports: str, direction: str) -> Rule:
    return Rule(
        chain=RAW_CHAIN,
        src=src,
        dst=dst,
        protocol="tcp",
        matches=(Match("multiport", ((direction, ports),)),),
        target="RETURN",
    )


def _compile_management(bridge_name: str, management: Management, family: int) -> tuple[list[Rule], IPSet]:
    allow_set = set_name("manage", family)
    allowed = (Match("set", (("match-set", f"{allow_set} src"),)),) if management.allow else ()
    icmp = "icmp" if family == 4 else "icmpv6"

    def service(port: int, role: str) -> Rule:
        matches = (Match("tcp", (("dport", str(port)),)), *allowed)
        return Rule(chain=INPUT_CHAIN, protocol="tcp", matches=matches, target="ACCEPT", role=role)

    rules = [
        # Only what reaches the box through the bridge; other interfaces are not ours.
        Rule(chain="INPUT", target=INPUT_CHAIN, in_interface=bridge_name),
        Rule(
            chain=INPUT_CHAIN,
            matches=(Match("conntrack", (("ctstate", "RELATED,ESTABLISHED"),)),),
            target="ACCEPT",
        ),
        # Neighbour discovery, ping and path-MTU messages; ICMP opens nothing.
        Rule(chain=INPUT_CHAIN, protocol=icmp, target="ACCEPT"),
    ]
    if management.ssh_keys:
        rules.append(service(SSH_PORT, ROLE_SSH))
    if management.metrics:
        rules.append(service(METRICS_PORT, ROLE_METRICS))
    rules.append(Rule(chain=INPUT_CHAIN, target="DROP", role=ROLE_MANAGEMENT_DROPPED))
    entries = tuple(_entry(n) for n in management.allow if n.version == family)
    return rules, IPSet(allow_set, family, entries)


def _compile_mail(config: Config, family: int) -> FamilyRuleset:
    prefix = config.knock_prefix[family]
    knock_list = knock_list_name(family, prefix)
    network_type = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    mask = str(network_type((0, prefix)).netmask)
    mx1 = _host(config.mx("mx1", family))
    mx2 = _host(config.mx("mx2", family))
    allow_set = set_name("allow", family)
    select_set = set_name("select", family)

    def recent(action: str, *extra: tuple[str, str | None]) -> Match:
        return Match("recent", ((action, None), *extra, ("name", knock_list), ("mask", mask), ("rsource", None)))

    def smtp(dst: str, *matches: Match, target: str, role: str, target_options: Options = ()) -> Rule:
        return Rule(
            chain=CHAIN,
            dst=dst,
            protocol="tcp",
            matches=(Match("tcp", (("dport", str(config.smtp_port)),)), *matches),
            target=target,
            target_options=target_options,
            role=role,
        )

    record_knock = recent("set")
    full_mask = str(network_type((0, network_type(0).max_prefixlen)).netmask)
    record_refusal = Match(
        "recent", (("set", None), ("name", refused_list_name(family)), ("mask", full_mask), ("rsource", None))
    )
    knock_valid = recent("rcheck", ("seconds", str(config.window)))
    whitelisted = Match("set", (("match-set", f"{allow_set} src"),))
    selected = Match("set", (("match-set", f"{select_set} src"),))
    trust_on = config.trust.enabled and config.mode != "nolisting"
    trust_set = set_name("trust", family)
    trust_timeout = min(config.trust.lifetime, IPSET_MAX_TIMEOUT)
    # Accepting after a knock (or as a proven sender) marks the connection when trust is on.
    let_through = PASS_CHAIN if trust_on else "ACCEPT"

    rules: list[Rule] = [
        Rule(
            chain="FORWARD",
            matches=(Match("physdev", (("physdev-in", config.bridge.outside), ("physdev-is-bridged", None))),),
            target=CHAIN,
            role=ROLE_JUMP,
        )
    ]
    if trust_on:
        rules.append(
            Rule(
                chain=CHAIN,
                protocol="tcp",
                matches=(
                    Match("connmark", (("mark", EARNED_MARK),)),
                    Match("conntrack", (("ctstate", "ESTABLISHED"), ("ctdir", "ORIGINAL"))),
                    # Packet 2 is the handshake's ACK (3 if the SYN was sent twice).
                    Match(
                        "connbytes",
                        (("connbytes", "2:3"), ("connbytes-mode", "packets"), ("connbytes-dir", "original")),
                    ),
                ),
                target=EARN_CHAIN,
            )
        )
    rules += [
        Rule(
            chain=CHAIN,
            matches=(Match("conntrack", (("ctstate", "RELATED,ESTABLISHED"),)),),
            target="ACCEPT",
            role=ROLE_ESTABLISHED,
        ),
        smtp(mx1, whitelisted, target="ACCEPT", role=ROLE_WHITELIST),
        smtp(mx2, whitelisted, target="ACCEPT", role=ROLE_WHITELIST),
    ]
    if config.knock_ports:
        ports = ",".join(str(p) for p in config.knock_ports)
        for dst in (mx1, mx2):
            # Record the knock and leave our chain: the connection goes on to the server.
            rules.append(
                Rule(
                    chain=CHAIN,
                    dst=dst,
                    protocol="tcp",
                    matches=(Match("multiport", (("dports", ports),)), record_knock),
                    target="RETURN",
                    role=ROLE_KNOCK_PORT,
                )
            )

    if config.mode == "backup-mx":
        rules.append(smtp(mx1, record_knock, target=let_through, role=ROLE_KNOCK))
    else:
        # Nolisting records knocks too: switching back to Unlisting (e.g. after falling
        # back to Nolisting during a flood) then finds a warm list, not an empty one.
        rules.append(smtp(mx1, record_knock, target="REJECT", target_options=RESET, role=ROLE_KNOCK))

    trusted = Match("set", (("match-set", f"{trust_set} src"),))
    if config.mode == "nolisting":
        rules.append(smtp(mx2, target="ACCEPT", role=ROLE_OPEN))
    elif config.mode == "selective":
        rules.append(smtp(mx2, selected, knock_valid, target=let_through, role=ROLE_AFTER_KNOCK))
        if trust_on:
            rules.append(smtp(mx2, selected, trusted, target=let_through, role=ROLE_TRUSTED))
        rules.append(smtp(mx2, selected, record_refusal, target="REJECT", target_options=RESET, role=ROLE_REFUSED))
        rules.append(smtp(mx2, target="ACCEPT", role=ROLE_OPEN))
    else:  # unlisting, backup-mx
        rules.append(smtp(mx2, knock_valid, target=let_through, role=ROLE_AFTER_KNOCK))
        if trust_on:
            rules.append(smtp(mx2, trusted, target=let_through, role=ROLE_TRUSTED))
        rules.append(smtp(mx2, record_refusal, target="REJECT", target_options=RESET, role=ROLE_REFUSED))

    if trust_on:
        rules += [
            # Over the cap: clear the mark, so the next rule adds nothing. Only sources not yet
            # proven take from the cap (the set match comes first and stops the evaluation).
            Rule(
                chain=EARN_CHAIN,
                matches=(Match("set", (("match-set", f"! {trust_set} src"),)), _trust_cap(family)),
                target="CONNMARK",
                target_options=(("set-xmark", CLEAR_MARK),),
                role=ROLE_TRUST_CAPPED,
            ),
            Rule(
                chain=EARN_CHAIN,
                matches=(Match("connmark", (("mark", EARNED_MARK),)),),
                target="SET",
                target_options=(("add-set", f"{trust_set} src"), ("exist", None), ("timeout", str(trust_timeout))),
                role=ROLE_TRUST_EARNED,
            ),
            # Clear the mark: one connection earns (and counts) once, the next refreshes.
            Rule(chain=EARN_CHAIN, target="CONNMARK", target_options=(("set-xmark", CLEAR_MARK),)),
            Rule(chain=PASS_CHAIN, target="CONNMARK", target_options=(("set-xmark", EARNED_MARK),)),
            Rule(chain=PASS_CHAIN, target="ACCEPT", role=ROLE_PASS),
        ]
    sets = (
        IPSet(allow_set, family, tuple(_entry(n) for n in config.networks("whitelist", family))),
        IPSet(select_set, family, tuple(_entry(n) for n in config.networks("selective", family))),
        # Created even with trust off, so turning it on again finds what was learned.
        IPSet(trust_set, family, (), kind="hash:ip", maxelem=TRUST_SET_SIZE, keep=True, timeout=trust_timeout),
    )
    return FamilyRuleset(family=family, rules=tuple(rules), sets=sets, knock_list=knock_list)


def _trust_cap(family: int) -> Match:
    """Matches once the source's prefix has earned its TRUST_CAP_PER_HOUR this hour."""
    # In iptables-save's order, so `mxknock rules` prints what the kernel shows. Idle entries
    # expire after hashlimit's default for a /hour rate, one hour (netfilter.to_iptc sets it).
    return Match(
        "hashlimit",
        (
            ("hashlimit-above", f"{TRUST_CAP_PER_HOUR}/hour"),
            ("hashlimit-burst", str(TRUST_CAP_PER_HOUR)),
            ("hashlimit-mode", "srcip"),
            ("hashlimit-name", f"mxknock-earn{family}"),  # 15 characters at most
            ("hashlimit-htable-max", str(TRUST_CAP_TABLE_MAX)),
            ("hashlimit-srcmask", str(TRUST_CAP_PREFIX[family])),
        ),
    )


def _host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{address}/{address.max_prefixlen}"


def _entry(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(net)
