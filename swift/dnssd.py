"""Discovery announced by DNS-SD (RFC 6763) over multicast DNS (RFC 6762): the pure part.

A discovery announces itself as an instance of ``_swift._tcp`` on the LAN;
a node started without ``--discovery`` browses for it and takes the one of
its own *pool*. What the announcement says, and how a node picks one, is
decided here, with no sockets and no clock (``swift.mdns`` is the I/O shell
around it, on the ``zeroconf`` library).

The TXT record (RFC 6763 section 6: ``key=value`` strings, keys compared
without case) of a discovery::

    txtvers=1            this layout; a record of another version is ignored
    pool=NAME            the pool's name (--pool, default "swift")
    fp=HEX               only with a shared secret: its fingerprint (below)
    started=SECONDS      when this discovery started (Unix time, whole seconds)

Rules:

* **Two pools on one LAN stay apart.** A node takes only an announcement
  whose pool name is its own and whose fingerprint is its own: none
  without a secret, ``fingerprint(secret)`` with one. Either difference
  alone keeps it out, so two groups that both kept the default name but
  hold different secrets never meet.
* **The secret never leaves the machine.** The fingerprint is the first 64
  bits of ``HMAC-SHA256(secret, "swift pool fingerprint v1")``: it says
  "the same secret as mine" and nothing more. HMAC is a PRF, so the value
  reveals nothing usable about the key; the one attack left is guessing a
  weak secret offline, which a 32-byte random secret file (the README's
  advice) makes hopeless. 64 bits make a chance match of two different
  secrets negligible for a LAN's handful of pools, and a match would only
  lead to a refused handshake, never to a wrong member.
* **Every node of a pool picks the same discovery.** Among the fitting
  announcements the one that started first wins (the one most nodes are
  already registered with), then the lowest address and port, so the
  choice is the same whichever node makes it and in whatever order the
  answers came.
* **An announcement is a claim, not a proof.** The fingerprint is public:
  anyone on the LAN can copy it into an announcement of their own, with an
  earlier start. So a node tries the candidates in :func:`rank`'s order and
  takes the first that answers as a discovery, which with a secret means it
  passed the mutual proof of the secret (``swift.mdns`` does the asking).
* **An address the node can reach.** A discovery with several interfaces
  announces every address it has; the node prefers one inside a network it
  is itself on (:func:`pick_address`), IPv4 before IPv6.

A malformed announcement (an unknown ``txtvers``, a missing pool, a
fingerprint that is not 16 hex digits, no usable address) is skipped,
never an error: anyone on the LAN may announce anything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["SERVICE_TYPE", "DEFAULT_POOL", "Announcement", "parse_pool", "fingerprint",
           "txt_record", "parse_announcement", "fits", "rank", "choose", "explain_miss", "pick_address",
           "instance_name"]

#: The DNS-SD service type (RFC 6763 section 7: ``_name._tcp``), fully qualified.
SERVICE_TYPE = "_swift._tcp.local."
#: The pool a discovery and a node belong to unless told otherwise.
DEFAULT_POOL = "swift"
#: The TXT layout written and understood (RFC 6763 section 6.7's ``txtvers``).
TXT_VERSION = "1"
#: What the fingerprint's HMAC covers: fixed, so every member computes the same.
FINGERPRINT_LABEL = b"swift pool fingerprint v1"
#: Hex digits of the fingerprint kept: 64 bits (see the module docstring).
FINGERPRINT_HEX = 16
#: A DNS label, and so an instance name, is at most 63 bytes (RFC 6763 section 4.1.1).
MAX_INSTANCE = 63
# a pool name: short, printable, no spaces or '=' (it goes into a TXT value and a label)
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", re.ASCII)
_HEX = re.compile(rf"^[0-9a-f]{{{FINGERPRINT_HEX}}}$", re.ASCII)


@dataclass(frozen=True)
class Announcement:
    """One discovery seen on the LAN: its instance name, pool, fingerprint (None
    without a secret), start time (Unix seconds) and the address to reach it."""

    name: str
    pool: str
    fingerprint: str | None
    started: int
    host: str
    port: int


def parse_pool(text: str) -> str:
    """A pool name: 1-32 letters, digits, ``_``, ``.``, ``-``, starting with a letter or
    digit; ValueError (one line for the user) otherwise."""
    name = (text or "").strip()
    if not _POOL.match(name):
        raise ValueError(f"not a pool name: {text!r} (1-32 letters, digits, '_', '.', '-')")
    return name


def fingerprint(secret: bytes | None) -> str | None:
    """The secret's public fingerprint: 16 lowercase hex digits; None without a secret."""
    if secret is None:
        return None
    return hmac.new(secret, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def txt_record(pool: str, fp: str | None, started: float) -> dict[str, str]:
    """The TXT properties a discovery announces (``started`` in Unix seconds)."""
    record = {"txtvers": TXT_VERSION, "pool": parse_pool(pool), "started": str(int(started))}
    if fp is not None:
        if not _HEX.match(fp):
            raise ValueError(f"not a fingerprint: {fp!r}")
        record["fp"] = fp
    return record


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)


def parse_announcement(name: str, properties: Mapping[object, object], addresses: Iterable[str],
                       port: int | None, local_networks: Iterable[str] = ()) -> Announcement:
    """An announcement from what DNS-SD resolved: the TXT ``properties`` (bytes or str
    keys and values, as ``zeroconf`` gives them), the addresses of its host and its
    port. ``local_networks`` (``"10.0.0.0/24"``, ...) steer :func:`pick_address`.

    ValueError saying what is wrong if it is not a swift discovery this
    version understands.
    """
    txt: dict[str, str | None] = {}
    for key, value in properties.items():
        k = _text(key)
        if k is not None:
            txt.setdefault(k.strip().lower(), _text(value))
    if txt.get("txtvers") != TXT_VERSION:
        raise ValueError(f"{name}: txtvers {txt.get('txtvers')!r}, not {TXT_VERSION}")
    pool = parse_pool(txt.get("pool") or "")
    fp = txt.get("fp")
    if fp is not None and not _HEX.match(fp):
        raise ValueError(f"{name}: fingerprint {fp!r} is not {FINGERPRINT_HEX} hex digits")
    started = txt.get("started") or ""
    if not started.isascii() or not started.isdigit():
        raise ValueError(f"{name}: started {started!r} is not whole seconds")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{name}: port {port!r} out of range")
    host = pick_address(addresses, local_networks)
    if host is None:
        raise ValueError(f"{name}: no usable address")
    return Announcement(name, pool, fp, int(started), host, port)


def _usable(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return None
    if addr.version == 6 and addr.is_link_local:
        return None  # needs a zone (fe80::1%eth0) that an announcement cannot carry
    return addr


def pick_address(addresses: Iterable[str], local_networks: Iterable[str] = ()) -> str | None:
    """The address to reach a discovery by: one inside a network this machine is on
    first, then IPv4 before IPv6, then the lowest; loopback, multicast, unspecified
    and IPv6 link-local ones never. None if none is left."""
    nets = []
    for text in local_networks:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    usable = [a for a in (_usable(t) for t in addresses) if a is not None]
    if not usable:
        return None
    best = min(usable, key=lambda a: (not any(a.version == n.version and a in n for n in nets),
                                      a.version, int(a)))
    return str(best)


def fits(announcement: Announcement, pool: str, fp: str | None) -> bool:
    """Is this announcement of our pool: the same name and the same fingerprint (both
    None without a secret)? The fingerprints are compared in constant time."""
    if announcement.pool != pool:
        return False
    if fp is None or announcement.fingerprint is None:
        return fp is None and announcement.fingerprint is None
    return hmac.compare_digest(announcement.fingerprint, fp)


def rank(announcements: Iterable[Announcement], pool: str, fp: str | None) -> list[Announcement]:
    """The fitting announcements in the order a node of ``pool`` (with fingerprint ``fp``)
    tries them: the earliest started first, then the lowest address and port."""
    def order(a: Announcement) -> tuple:
        addr = ipaddress.ip_address(a.host)
        return (a.started, addr.version, int(addr), a.port, a.name)

    return sorted((a for a in announcements if fits(a, pool, fp)), key=order)


def choose(announcements: Iterable[Announcement], pool: str,
           fp: str | None) -> Announcement | None:
    """The discovery a node takes when every candidate answers: the first of :func:`rank`;
    None if none fits."""
    ranked = rank(announcements, pool, fp)
    return ranked[0] if ranked else None


def explain_miss(announcements: Iterable[Announcement], pool: str, fp: str | None) -> str:
    """Why none of ``announcements`` fits (:func:`fits`), and what to do, in a few words;
    "" if there were none. Pool names are safe to print: :func:`parse_pool` checked them."""
    seen = list(announcements)
    if not seen:
        return ""
    same = [a for a in seen if a.pool == pool]
    if not same:
        names = ", ".join(sorted({a.pool for a in seen})[:5])
        return f"only pool {names} answered; --pool NAME picks one"
    if fp is None:
        return f"pool {pool}'s discovery has a shared secret; give --secret-file"
    if all(a.fingerprint is None for a in same):
        return f"pool {pool}'s discovery has no shared secret, and this node has one"
    return f"pool {pool}'s discovery has another shared secret"


def instance_name(pool: str, machine: str, port: int) -> str:
    """A readable DNS-SD instance name, ``swift POOL on MACHINE:PORT``, cut to 63 bytes
    (RFC 6763 section 4.1.1) without splitting a character; a ``.`` in the pool's or
    the machine's name becomes ``-`` (a dot would read as a label boundary)."""
    tail = f":{port}"
    head = f"swift {pool} on {machine or 'discovery'}".replace(".", "-")
    room = MAX_INSTANCE - len(tail.encode())
    cut = head.encode("utf-8")[:room].decode("utf-8", "ignore")
    return cut + tail
