"""A test LAN of separate hosts on one Linux machine, built from network namespaces.

swift's claims are about *machines*: each with its own slow internet link,
all on one fast LAN, any of which may crash or lose its cable. Loopback
with per-address caps in the origin gets close, but every process still
shares one network stack. This module builds the real thing on one machine
(root only, with ``ip`` and ``tc`` from iproute2): every host is its own
network namespace with its own address, routes and TCP stack, plugged
into one bridge, and what the origin sends it squeezes through a ``tc``
rate limit, as through a slow uplink::

                      switch namespace (<prefix>_sw)
      ---------------------------- br0 (bridge) ---------------------------
       | v1              | v2              | v3 [HTB]        | v4 [HTB]      origin -> host capped
       |                 |                 |                 |             (switch-side veth ends)
     eth0              eth0              eth0 [HTB]        eth0 [HTB]      host -> origin capped
    [origin]          [disc]            [node a]          [node b]    ...
    10.213.0.1        10.213.0.2        10.213.0.3        10.213.0.4
    <prefix>-origin   <prefix>-disc     <prefix>-a        <prefix>-b      (a namespace per host)

- **Addresses** come from a private test subnet (10.213.0.0/24 unless told
  otherwise) that exists only inside the lab: each host's only route is
  its own /24 on ``eth0``, whose far end is the bridge, so nothing a lab
  host sends can leave the machine. Two labs side by side (each with its
  own switch) may use the same addresses without seeing each other. The
  machine's own namespace has no part in it: reach lab addresses from a
  host (:attr:`Host.prefix`, :meth:`Host.connect`), never from outside,
  where they would follow the machine's default route.
- **The origin** is a host like the others, at the subnet's first address
  (``Lab.origin_ip``). :meth:`Lab.origin` creates it; the caps of other
  hosts refer to its address, so they work whichever is created first.
- **A host's internet link** (``uplink_rate_mbit``; None: uncapped, as
  for the discovery host above) is modelled where its traffic with the
  origin passes: on the switch-side veth end an HTB class, fed by a u32
  filter on ``ip src <origin>``, caps what the origin sends the host (the
  direction the file data flows); on the host's own ``eth0`` a second
  class caps what the host sends the origin (requests and ACKs;
  symmetric, as most plans are). Everything else, the LAN between hosts,
  bypasses both classes at full speed. Each capped class queues at most
  100 ms of data (a byte FIFO), so a full link delays by a fraction of a
  second, not by seconds. The rate is on the wire: Ethernet, IP and TCP
  headers count against it, so a TCP download's payload gets about 96%.
- **A host's LAN link** (``lan_rate_mbit``; None: uncapped, the default)
  caps the rest of its traffic the same way, both ways: what the other
  hosts send it (a second class on the switch-side end, the HTB default)
  and what it sends them (the default class of its ``eth0``), so a 1 Gbit/s
  LAN port is 1 Gbit/s in each direction, as on a switch. Its queue holds
  20 ms: a switch port buffers far less than a modem.
- **Multicast** (mDNS) crosses the bridge as on a plain switch; a host
  behind a switch that drops it is :meth:`Host.block_multicast`.
- **A pulled cable** (:meth:`Host.cut`) takes the switch-side end down:
  packets in both directions vanish, no FIN and no RST is ever sent, and
  the host's own processes keep running, unaware. :meth:`Host.restore`
  plugs it back in; connections that have not timed out carry on.

Clean-up: ``Lab.close()`` (also at the end of a ``with`` block, on an
exception, or at interpreter exit if forgotten) kills what is still
running in the lab's namespaces, by PID, and deletes every namespace;
deleting the switch takes every veth pair with it, so nothing the lab
made outlives it. Each lab holds an exclusive ``flock`` on a lock file
named after its unique prefix for as long as it lives; a new lab deletes
the namespaces of any prefix whose lock is free (its owner died without
cleaning up) and leaves live labs of parallel runs alone.

Typical use (see tests/netns/test_netns.py and the benchmark's namespace mode)::

    with netlab.Lab() as lab, Cluster(workdir) as cluster:
        origin = lab.origin()
        node = lab.host("a", uplink_rate_mbit=40)
        cluster.start([... "--host", origin.ip ...], name="origin", prefix=origin.prefix)
        cluster.node(f"{disc.ip}:5000", host=node.ip, prefix=node.prefix, ...)
        status, body = origin.http_get(f"http://{origin.ip}:8080/_origin/stats")
        node.cut(); ...; node.restore()
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import http.client
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

DEFAULT_SUBNET = "10.213.0.0/24"
#: every namespace a lab makes is named ``swnl<6 hex digits>`` then ``-host`` or ``_sw``
NAME_BASE = "swnl"
_PREFIX_RE = re.compile(rf"^({NAME_BASE}[0-9a-f]{{6}})[-_]")
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_NETNS_DIR = Path("/var/run/netns")  # where ``ip netns add`` pins namespaces
_CLONE_NEWNET = 0x40000000
_CMD_TIMEOUT = 30.0


def _lock_dir() -> Path:
    """Where the labs' lock files live: /run (gone at reboot, like the namespaces)."""
    base = Path("/run") if Path("/run").is_dir() else Path(tempfile.gettempdir())
    return base / "swift-netlab"


class LabError(RuntimeError):
    """An ``ip``/``tc`` command failed while building or changing the lab."""


def _cmd(args: Sequence[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one iproute2 command (``batch`` lines on stdin if given); LabError on failure."""
    try:
        done = subprocess.run(list(args), input=stdin, capture_output=True, text=True,
                              timeout=_CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(args)}: {exc}") from exc
    if check and done.returncode != 0:
        what = " ".join(args) + (f" <<{stdin.strip()!r}" if stdin else "")
        raise LabError(f"{what}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _batch(tool: str, ns: str | None, lines: Sequence[str]) -> None:
    """Run many ``ip``/``tc`` commands in one process, inside namespace ``ns``: fast set-up."""
    _cmd([tool, *(["-n", ns] if ns else []), "-batch", "-"], stdin="\n".join(lines) + "\n")


def list_namespaces() -> list[str]:
    """Names of every network namespace ``ip netns`` knows on this machine."""
    out = _cmd(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    out = _cmd(["ip", "netns", "pids", ns], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _delete_namespaces(names: Sequence[str]) -> None:
    if names:
        _cmd(["ip", "-force", "-batch", "-"], stdin="".join(f"netns del {n}\n" for n in names),
             check=False)


def cleanup_stale() -> list[str]:
    """Delete the namespaces of labs whose owner died without closing them; returns their names.

    A lab is stale when nobody holds the lock on its lock file (a living
    lab always does, from before it creates its first namespace until after
    it deleted its last), or when the lock file is gone altogether.
    """
    by_prefix: dict[str, list[str]] = {}
    for name in list_namespaces():
        m = _PREFIX_RE.match(name)
        if m:
            by_prefix.setdefault(m.group(1), []).append(name)
    removed: list[str] = []
    lock_dir = _lock_dir()
    for prefix, names in by_prefix.items():
        path = lock_dir / f"{prefix}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        continue  # a live lab
                    raise
            log.info("netlab: removing stale namespaces %s", ", ".join(names))
            _delete_namespaces(names)
            removed += names
            if fd is not None:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        finally:
            if fd is not None:
                os.close(fd)
    # lock files of labs that died after deleting their namespaces
    if lock_dir.is_dir():
        for path in lock_dir.glob(f"{NAME_BASE}*.lock"):
            m = re.match(rf"^({NAME_BASE}[0-9a-f]{{6}})\.lock$", path.name)
            if not m or m.group(1) in by_prefix:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
            except OSError:
                pass
            finally:
                os.close(fd)
    return removed


# -- a socket inside a namespace ---------------------------------------------------------------
@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _socket_in_netns(ns: str, family: int, kind: int) -> socket.socket:
    """A socket created inside namespace ``ns``; it stays there whichever thread uses it.

    The network namespace is per thread in Linux: a short-lived thread
    enters ``ns`` with ``setns(2)``, creates the socket and ends, leaving
    every other thread of this process where it was.
    """
    result: dict[str, object] = {}

    def enter_and_create() -> None:
        try:
            fd = os.open(_NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, kind)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=enter_and_create, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(_CMD_TIMEOUT)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    if "sock" not in result:
        raise LabError(f"could not create a socket in {ns}")
    return result["sock"]  # type: ignore[return-value]


# -- hosts ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Traffic:
    """Bytes a host sent and received over its cable (see :meth:`Host.traffic`)."""

    sent: int
    received: int


@dataclass(eq=False)
class Host:
    """One machine of the lab: a namespace with ``lo`` and ``eth0`` on the bridge.

    ``switch_dev`` is the name of its cable's far end in the switch
    namespace. ``uplink_rate_mbit`` is its internet link (None: uncapped).
    """

    lab: "Lab" = field(repr=False)
    name: str
    ns: str
    ip: str
    switch_dev: str
    uplink_rate_mbit: float | None = None
    lan_rate_mbit: float | None = None
    is_cut: bool = False

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command line to run it on this host (e.g. ``Cluster.start(prefix=...)``)."""
        return ["ip", "netns", "exec", self.ns]

    def run(self, args: Sequence[str], **popen_kw) -> subprocess.Popen:
        """Start ``args`` on this host; the lab kills it at close if it is still running.

        Keyword arguments go to ``subprocess.Popen``; the process gets its own
        session (its PID is its process group) unless told otherwise.
        """
        popen_kw.setdefault("start_new_session", True)
        proc = subprocess.Popen([*self.prefix, *args], **popen_kw)
        self.lab._state.processes.append(proc)
        return proc

    def call(self, args: Sequence[str], *, timeout: float = 30.0, check: bool = False,
             **kw) -> subprocess.CompletedProcess:
        """Run ``args`` on this host to completion; text output captured."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run([*self.prefix, *args], timeout=timeout, check=check, **kw)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket that lives on this host (this process, no subprocess)."""
        return _socket_in_netns(self.ns, family, kind)

    def connect(self, address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
        """A TCP connection from this host to ``address``."""
        sock = self.socket()
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def http_get(self, url: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET a plain ``http://IP:PORT/path`` URL from this host; returns (status, body)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"http_get takes http://IP:PORT/path, not {url!r}")
        port = parts.port or 80
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
        try:
            conn.sock = self.connect((parts.hostname, port), timeout)
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/")
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def traffic(self) -> Traffic:
        """Bytes that crossed this host's cable so far, both ways, frame headers included.

        Counted at the switch-side end, so it is what really left or reached
        the host (a process's own counters may include bytes still queued).
        """
        out = _cmd(["ip", "-n", self.lab.switch_ns, "-j", "-s", "link", "show", "dev", self.switch_dev]).stdout
        stats = json.loads(out)[0]["stats64"]
        return Traffic(sent=stats["rx"]["bytes"], received=stats["tx"]["bytes"])

    def shaped(self) -> dict[str, Traffic]:
        """Bytes each capped class of this host passed so far (``uplink``, ``lan``): ``sent``
        by the host (its ``eth0``), ``received`` (the switch-side end). Uncapped: absent."""
        out: dict[str, Traffic] = {}
        sides = [_class_bytes(["tc", "-n", self.ns, "-s", "class", "show", "dev", "eth0"]),
                 _class_bytes(["tc", "-n", self.lab.switch_ns, "-s", "class", "show", "dev",
                               self.switch_dev])]
        for name, classid in (("uplink", UPLINK_CLASS), ("lan", LAN_CLASS)):
            if classid in sides[0] or classid in sides[1]:
                out[name] = Traffic(sent=sides[0].get(classid, 0), received=sides[1].get(classid, 0))
        return out

    def cut(self) -> None:
        """Pull the cable: both directions dropped at the switch, no FIN or RST sent."""
        _cmd(["ip", "-n", self.lab.switch_ns, "link", "set", self.switch_dev, "down"])
        self.is_cut = True

    def restore(self) -> None:
        """Plug the cable back in (the caps are kept)."""
        _cmd(["ip", "-n", self.lab.switch_ns, "link", "set", self.switch_dev, "up"])
        self.is_cut = False

    def block_multicast(self) -> None:
        """Multicast from the other hosts no longer reaches this one (as on a LAN whose
        switch drops it): its switch port stops flooding multicast (``mcast_flood off``,
        which covers link-local groups such as mDNS's 224.0.0.251). Unicast is untouched.
        Block both ends of a conversation to stop it both ways."""
        _cmd(["bridge", "-n", self.lab.switch_ns, "link", "set", "dev", self.switch_dev,
              "mcast_flood", "off"])

    def set_uplink(self, rate_mbit: float | None) -> None:
        """Change this host's internet link (None removes the cap); uncapped for a few ms meanwhile."""
        self.lab._set_cap(self, rate_mbit, self.lan_rate_mbit)

    def set_lan(self, rate_mbit: float | None) -> None:
        """Change this host's LAN link (None removes the cap), both ways; the uplink cap stays."""
        self.lab._set_cap(self, self.uplink_rate_mbit, rate_mbit)


@dataclass
class _State:
    """What a lab owns, apart from the Lab object, so a finalizer can clean it up."""

    prefix: str
    lock_path: Path
    lock_fd: int | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    _kill_pid(proc.pid)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us this
                log.warning("netlab: process %d did not die", proc.pid)
        self.processes.clear()
        mine = [n for n in list_namespaces() if n.startswith(self.prefix)]
        # whatever still runs on a host was started there through this lab
        for ns in mine:
            for pid in _netns_pids(ns):
                if pid != os.getpid():
                    _kill_pid(pid)
        _delete_namespaces(mine)
        left = [n for n in list_namespaces() if n.startswith(self.prefix)]
        if left:
            log.warning("netlab: could not delete namespaces %s", ", ".join(left))
        if self.lock_fd is not None:
            if not left:
                try:
                    self.lock_path.unlink()
                except FileNotFoundError:
                    pass
            os.close(self.lock_fd)  # releases the lock: a later lab may clean up what is left
            self.lock_fd = None


class Lab:
    """A LAN of hosts in network namespaces around one bridge; see the module docstring.

    Every instance has its own name prefix (``Lab.prefix``) and its own
    switch, so parallel labs never clash. Creating one first removes stale
    namespaces of labs that died without closing.
    """

    def __init__(self, subnet: str = DEFAULT_SUBNET):
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4 or self.subnet.num_addresses < 8:
            raise ValueError(f"need an IPv4 subnet of at least 8 addresses, not {subnet}")
        self.origin_ip = str(self.subnet.network_address + 1)
        self.hosts: dict[str, Host] = {}
        self._next_address = 2
        self._next_port = 1
        lock_dir = _lock_dir()
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state = self._take_prefix(lock_dir)
        self.prefix = self._state.prefix
        self.switch_ns = f"{self.prefix}_sw"
        self._finalizer = weakref.finalize(self, _State.close, self._state)
        try:
            cleanup_stale()
            _cmd(["ip", "netns", "add", self.switch_ns])
            _batch("ip", self.switch_ns, [
                "link set lo up",
                "link add br0 type bridge stp_state 0 forward_delay 0",
                "link set br0 up",
            ])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _take_prefix(lock_dir: Path) -> _State:
        """A fresh prefix whose lock file is ours, locked before it is visible under its name."""
        for _ in range(100):
            prefix = f"{NAME_BASE}{secrets.token_hex(3)}"
            path = lock_dir / f"{prefix}.lock"
            if path.exists() or any(n.startswith(prefix) for n in list_namespaces()):
                continue
            fd, tmp = tempfile.mkstemp(dir=lock_dir, prefix=f".{prefix}.", suffix=".tmp")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.link(tmp, path)  # unlike rename, never replaces a lock another lab just made
            except FileExistsError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            finally:
                Path(tmp).unlink(missing_ok=True)
            return _State(prefix, path, fd)
        raise LabError("no free lab prefix")  # pragma: no cover - 16M names

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kill what runs on the lab's hosts (by PID) and delete every namespace. Idempotent."""
        self._finalizer()
        self.hosts.clear()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def namespaces(self) -> list[str]:
        """This lab's namespaces that exist right now (empty after ``close``)."""
        return [n for n in list_namespaces() if n.startswith(self.prefix)]

    # -- hosts -------------------------------------------------------------------------------
    def origin(self, name: str = "origin") -> Host:
        """The origin server's host, at ``origin_ip``: never capped, the far end of every uplink."""
        if any(h.ip == self.origin_ip for h in self.hosts.values()):
            raise ValueError("this lab has its origin already")
        return self._add_host(name, self.origin_ip, None)

    def host(self, name: str, *, uplink_rate_mbit: float | None = None,
             lan_rate_mbit: float | None = None) -> Host:
        """A new host on the LAN; its traffic with the origin is capped at ``uplink_rate_mbit``,
        the rest of its traffic (the LAN), each way, at ``lan_rate_mbit`` (None: no cap)."""
        last = self.subnet.num_addresses - 2
        if self._next_address > last:
            raise LabError(f"subnet {self.subnet} is full")
        ip = str(self.subnet.network_address + self._next_address)
        self._next_address += 1
        return self._add_host(name, ip, uplink_rate_mbit, lan_rate_mbit)

    def _add_host(self, name: str, ip: str, rate_mbit: float | None,
                  lan_rate_mbit: float | None = None) -> Host:
        if self.closed:
            raise LabError("the lab is closed")
        if not _HOST_NAME_RE.match(name):
            raise ValueError(f"host names are letters, digits, '_', '.', '-' (at most 40): {name!r}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists already")
        ns = f"{self.prefix}-{name}"
        dev = f"v{self._next_port}"
        self._next_port += 1
        _cmd(["ip", "netns", "add", ns])
        host = Host(self, name, ns, ip, dev)
        self.hosts[name] = host
        _batch("ip", self.switch_ns, [
            f"link add {dev} type veth peer name eth0 netns {ns}",
            f"link set {dev} master br0",
            f"link set {dev} up",
        ])
        _batch("ip", ns, [
            "link set lo up",
            f"addr add {ip}/{self.subnet.prefixlen} dev eth0",
            "link set eth0 up",
        ])
        if rate_mbit is not None or lan_rate_mbit is not None:
            self._set_cap(host, rate_mbit, lan_rate_mbit)
        return host

    def _set_cap(self, host: Host, rate_mbit: float | None, lan_rate_mbit: float | None = None) -> None:
        """Cap ``host``'s traffic with the origin, both ways, at ``rate_mbit``, and the rest of
        its traffic at ``lan_rate_mbit`` (None: no cap)."""
        if host.ip == self.origin_ip:
            raise ValueError("the origin's own link is not capped: cap the hosts it serves")
        for what, rate in (("uplink_rate_mbit", rate_mbit), ("lan_rate_mbit", lan_rate_mbit)):
            if rate is not None and not rate > 0:
                raise ValueError(f"{what} must be > 0, not {rate}")
        if host.uplink_rate_mbit is not None or host.lan_rate_mbit is not None:
            # HTB cannot be changed in place: start afresh
            _cmd(["tc", "-n", self.switch_ns, "qdisc", "del", "dev", host.switch_dev, "root"], check=False)
            _cmd(["tc", "-n", host.ns, "qdisc", "del", "dev", "eth0", "root"], check=False)
            host.uplink_rate_mbit = host.lan_rate_mbit = None
        if rate_mbit is None and lan_rate_mbit is None:
            return
        _batch("tc", self.switch_ns, _cap_commands(host.switch_dev, rate_mbit, f"src {self.origin_ip}/32",
                                                   lan_rate_mbit))
        _batch("tc", host.ns, _cap_commands("eth0", rate_mbit, f"dst {self.origin_ip}/32", lan_rate_mbit))
        host.uplink_rate_mbit, host.lan_rate_mbit = rate_mbit, lan_rate_mbit


#: The HTB class of a host's traffic with the origin, and of the rest (the LAN).
UPLINK_CLASS, LAN_CLASS = "1:10", "1:20"


def _class_bytes(args: Sequence[str]) -> dict[str, int]:
    """Bytes sent by each HTB class that ``tc -s class show`` lists (its text: this
    iproute2 prints no JSON for classes)."""
    out: dict[str, int] = {}
    handle = None
    for line in _cmd(args, check=False).stdout.splitlines():
        m = re.match(r"class htb (\S+)", line)
        if m:
            handle = m.group(1)
            continue
        m = re.match(r"\s*Sent (\d+) bytes", line)
        if m and handle:
            out[handle] = int(m.group(1))
            handle = None
    return out


def _class_commands(dev: str, classid: str, rate_mbit: float, queue_seconds: float) -> list[str]:
    """tc lines of one HTB class at ``rate_mbit`` under root ``1:``, with a byte FIFO
    holding ``queue_seconds`` at the rate (at least 256 KiB)."""
    kbit = max(1, round(rate_mbit * 1000))
    rate_bytes = rate_mbit * 1e6 / 8
    burst = max(64 * 1024 + 1600, int(rate_bytes * 0.005))
    queue = max(256 * 1024, int(rate_bytes * queue_seconds))
    minor = classid.split(":")[1]
    return [
        f"class add dev {dev} parent 1: classid {classid} htb rate {kbit}kbit ceil {kbit}kbit "
        f"burst {burst} cburst {burst} quantum 65536",
        f"qdisc add dev {dev} parent {classid} handle {minor}: bfifo limit {queue}",
    ]


def _cap_commands(dev: str, rate_mbit: float | None, match: str,
                  lan_rate_mbit: float | None = None) -> list[str]:
    """tc lines: packets matching ``ip <match>`` leave ``dev`` at ``rate_mbit``; the rest at
    ``lan_rate_mbit`` (either None: unshaped).

    HTB without a default class sends unclassified packets (the LAN)
    straight through; with a LAN cap its class is the default. The uplink
    class queues in a byte FIFO holding 100 ms at the rate (at least 256 KiB),
    like a modest modem buffer: TCP fills the link without seconds of
    queueing delay (bfifo is in every kernel that has HTB; fq_codel or netem
    often are not); the LAN class holds 20 ms, as a switch port buffers
    less. The burst is at least one 64 KiB GSO packet, or 5 ms at the rate,
    so the cap holds without starving a large segment.
    """
    lines = [f"qdisc add dev {dev} root handle 1: htb"
             + (f" default {LAN_CLASS.split(':')[1]}" if lan_rate_mbit is not None else "")]
    if rate_mbit is not None:
        lines += _class_commands(dev, UPLINK_CLASS, rate_mbit, 0.1)
        lines.append(f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {match} "
                     f"flowid {UPLINK_CLASS}")
    if lan_rate_mbit is not None:
        lines += _class_commands(dev, LAN_CLASS, lan_rate_mbit, 0.02)
    return lines


_unavailable_reason: str | None = None


@functools.cache
def available() -> bool:
    """Can a lab be built here? Root, ``ip`` and ``tc``, and a trial lab with a capped host.

    The answer is cached; :func:`unavailable_reason` says why not.
    """
    global _unavailable_reason
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable_reason = "network namespaces need root"
    elif not shutil.which("ip") or not shutil.which("tc"):
        _unavailable_reason = "needs ip and tc (iproute2)"
    elif not _NETNS_DIR.parent.is_dir():
        _unavailable_reason = f"no {_NETNS_DIR.parent}"
    else:
        try:
            with Lab() as lab:
                lab.origin()
                lab.host("probe", uplink_rate_mbit=1)
        except (OSError, LabError, ValueError) as exc:
            _unavailable_reason = f"cannot build a lab: {exc}"
    return _unavailable_reason is None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    available()
    return _unavailable_reason or ""
