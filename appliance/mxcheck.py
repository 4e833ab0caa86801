"""Does a domain's DNS send mail through mx1 first and mx2 second? (`mxknock check-mx`)

Unlisting has no room for error: a domain whose most preferred MX is mx2, or whose mx1
lacks an AAAA record that mx2 has, loses mail silently. `assess` is pure (records in,
findings out); `lookup` asks DNS with dnspython.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .config import Config, IPAddress

ERROR, WARNING, OK = "error", "warning", "ok"


@dataclass(frozen=True)
class MxRecord:
    preference: int
    host: str
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Finding:
    level: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "message": self.message}


def assess(domain: str, config: Config, records: list[MxRecord]) -> list[Finding]:
    if not records:
        return [Finding(ERROR, f"{domain} has no MX records: senders use its A/AAAA records and never knock on mx1")]
    mx1, mx2 = set(config.mx1), set(config.mx2)
    by_preference = sorted(records, key=lambda r: r.preference)
    findings: list[Finding] = []
    first_preference = by_preference[0].preference
    first = {a for r in by_preference if r.preference == first_preference for a in r.addresses}
    later = [r for r in by_preference if r.preference > first_preference]

    if first & mx2:
        findings.append(
            Finding(
                ERROR,
                f"mx2 ({_addrs(first & mx2)}) is among the most preferred MX: senders try it first and are refused",
            )
        )
    if not first & mx1:
        findings.append(Finding(ERROR, f"the most preferred MX of {domain} is not mx1 ({_addrs(mx1)})"))
    if not any(set(r.addresses) & mx2 for r in later):
        findings.append(
            Finding(ERROR, f"no less preferred MX of {domain} points to mx2 ({_addrs(mx2)}): mail never gets in")
        )
    for family in (4, 6):
        in_first = any(a.version == family for a in first & mx1)
        in_later = any(a.version == family for r in later for a in r.addresses if a in mx2)
        if in_first != in_later:
            has, lacks = ("mx1", "mx2") if in_first else ("mx2", "mx1")
            findings.append(
                Finding(
                    ERROR,
                    f"{has}'s name has an IPv{family} address and {lacks}'s has none: IPv{family} senders "
                    f"{'knock and find no open door' if in_first else 'reach mx2 without a knock and are refused'}",
                )
            )
    for record in by_preference:
        unknown = set(record.addresses) - mx1 - mx2
        if unknown:
            findings.append(
                Finding(
                    WARNING,
                    f"MX {record.preference} {record.host} also points to {_addrs(unknown)}, not behind this bridge",
                )
            )
        if not record.addresses:
            findings.append(Finding(WARNING, f"MX {record.preference} {record.host} has no A or AAAA record"))
    if not findings:
        findings.append(Finding(OK, f"{domain}: MX {first_preference} is mx1 and a later MX is mx2, in every family"))
    return findings


def _addrs(addresses: set[IPAddress]) -> str:
    return ", ".join(str(a) for a in sorted(addresses, key=lambda a: (a.version, a)))


def lookup(domain: str, nameserver: str | None = None, timeout: float = 5.0) -> list[MxRecord]:
    """The domain's MX records with the A and AAAA addresses of each host."""
    import dns.resolver  # only this command needs DNS; keep the daemon's imports lean

    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver:
        resolver.nameservers = [nameserver]
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(domain, "MX")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    records = []
    for rdata in answer:
        host = str(rdata.exchange).rstrip(".")
        addresses: list[IPAddress] = []
        for rdtype in ("A", "AAAA"):
            try:
                addresses += [ipaddress.ip_address(r.to_text()) for r in resolver.resolve(host, rdtype)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                pass
        records.append(MxRecord(rdata.preference, host, tuple(addresses)))
    return records
