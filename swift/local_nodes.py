"""Which members are this machine: a ``get`` never uses its own machine's node as a helper.

A node on the machine that runs a ``get`` fetches over the same link as the
``get``'s own connections: as a helper it would only compete with them for
that uplink, and the summary would show one machine twice (``local`` and the
node's name). It is recognised by one of two proofs, never by a name:

1. **Its advertised address is one of this machine's own.** Binding a socket
   to an address succeeds only where the address is assigned, so that is the
   test (no interface list to read, works for IPv4 and IPv6 alike). Loopback
   addresses prove nothing: every machine has them, and the test lab runs its
   "machines" on 127.0.0.x of one host.
2. **It left its mark in this user's state directory.** A running node writes
   ``running-node-PORT.json`` (its pid, advertised ``HOST:PORT`` and network
   namespace) into ``identity.state_dir()`` at start and removes it at stop.
   A mark counts only while its process lives and in this network namespace
   (hosts made of namespaces share one file system), so a stale mark from a
   killed node, or a node on another namespace "host", never counts.

Either suffices; a node run as another user (a system service with its own
state directory) is found by the first, as it advertises a LAN address.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterable

from . import identity
from .addresses import format_hostport

log = logging.getLogger(__name__)

#: The mark's file name; the port keeps two nodes of one user apart.
MARK = "running-node-{port}.json"


def _namespace() -> str | None:
    """This process's network namespace (``net:[4026531840]``), or None where there is none."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def mark_running(host: str, port: int, directory: Path | None = None) -> Path | None:
    """Say in the state directory that a node advertised as ``HOST:PORT`` runs here.

    Returns the mark's path (for :func:`clear_mark`), or None when it cannot
    be written (logged: the node works on; a ``get`` here may then use it).
    """
    directory = directory or identity.state_dir()
    path = directory / MARK.format(port=port)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "key": format_hostport(host, port),
                                   "namespace": _namespace()}))
        os.replace(tmp, path)
        return path
    except OSError as exc:
        log.info("cannot mark this node as running in %s: %s", directory, exc.strerror or exc)
        return None


def clear_mark(path: Path | None) -> None:
    """Remove a mark :func:`mark_running` wrote (if it is still this process's)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def marked_keys(directory: Path | None = None) -> set[str]:
    """``HOST:PORT`` of the nodes whose live mark is in the state directory (proof 2)."""
    directory = directory or identity.state_dir()
    here = _namespace()
    keys = set()
    try:
        marks = list(directory.glob(MARK.format(port="*")))
    except OSError:
        return keys
    for path in marks:
        try:
            mark = json.loads(path.read_text())
            pid, key = int(mark["pid"]), str(mark["key"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written or damaged: proves nothing
        if _alive(pid) and mark.get("namespace") == here:
            keys.add(key)
    return keys


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:  # someone else's process: alive
        return True
    except (OSError, ValueError, OverflowError):
        return False


def is_own_address(host: str) -> bool:
    """True if ``host`` (an IP literal) is assigned to this machine and is not loopback (proof 1)."""
    import ipaddress
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def this_machine(peers: Iterable, directory: Path | None = None) -> set[str]:
    """The keys of ``peers`` (``membership.Peer``) that are nodes of this machine."""
    peers = list(peers)
    if not peers:
        return set()
    marked = marked_keys(directory)
    return {p.key for p in peers if p.key in marked or is_own_address(p.host)}
