"""A test LAN of real hosts on one Linux machine, out of network namespaces (root only).

Used by the namespace fault test and the benchmark's ``--netns`` mode::

            switch namespace: one bridge
      +---------------+---------------+---------------+
      | veth          | veth          | veth          |
   [origin]        [host a]        [host b]   ...  [discovery]
   10.213.0.1      10.213.0.2      10.213.0.3

Every host is its own namespace with its own address on a private subnet
that exists only inside the lab (traffic to it never leaves the machine).
A host's "internet link" is modelled on the switch-side end of its veth:
an HTB class caps the traffic *from the origin* to that host at the given
rate, while traffic from the other hosts (the LAN) stays unlimited. ``cut``
takes the switch-side end down: packets vanish with no FIN or RST, as when
a cable is pulled.

Every namespace and link the lab makes is deleted by ``close()`` (also via
``with``), and stale ones from a crashed run with the same prefix are
removed first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.213.0"
PREFIX = "swlab"


def _run(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (``ip ...`` or ``tc ...``), inside namespace ``ns`` if given."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20)


def available() -> bool:
    """Root, iproute2 and working namespaces."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return False
    name = f"{PREFIX}probe{os.getpid()}"
    try:
        ok = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return ok


@dataclass
class Host:
    lab: "Lab"
    name: str
    ns: str
    ip: str
    switch_dev: str
    rate_mbit: float | None = None

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it on this host."""
        return ["ip", "netns", "exec", self.ns]

    def run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, **kw)

    def cut(self) -> None:
        """Pull the cable: no FIN, no RST, packets just vanish."""
        _run("ip", "link", "set", self.switch_dev, "down", ns=self.lab.switch)

    def restore(self) -> None:
        _run("ip", "link", "set", self.switch_dev, "up", ns=self.lab.switch)


@dataclass
class Lab:
    prefix: str = PREFIX
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = secrets.token_hex(2)
        self.switch = f"{self.prefix}{self.id}sw"
        self._cleanup_stale()
        _run("ip", "netns", "add", self.switch)
        _run("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
        _run("ip", "link", "set", "br0", "up", ns=self.switch)
        _run("ip", "link", "set", "lo", "up", ns=self.switch)

    def _cleanup_stale(self) -> None:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.prefix) and not name.startswith(f"{self.prefix}probe"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        ns = f"{self.prefix}{self.id}{name}"
        inner, outer = f"sl{self.id}i{index}", f"sl{self.id}o{index}"
        ip = f"{SUBNET}.{index}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
        _run("ip", "link", "set", inner, "netns", ns)
        _run("ip", "link", "set", outer, "netns", self.switch)
        _run("ip", "link", "set", outer, "master", "br0", ns=self.switch)
        _run("ip", "link", "set", outer, "up", ns=self.switch)
        _run("ip", "link", "set", "lo", "up", ns=ns)
        _run("ip", "link", "set", inner, "name", "eth0", ns=ns)
        _run("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        _run("ip", "link", "set", "eth0", "up", ns=ns)
        host = Host(self, name, ns, ip, outer)
        self.hosts.append(host)
        return host

    def cap(self, host: Host, origin: Host, mbit: float) -> None:
        """Cap what ``origin`` sends to ``host`` at ``mbit``; the rest of the LAN stays fast."""
        dev, sw = host.switch_dev, self.switch
        _run("tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "20", ns=sw)
        _run("tc", "class", "replace", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
            "rate", f"{mbit}mbit", "ceil", f"{mbit}mbit", "burst", "32k", ns=sw)
        _run("tc", "class", "replace", "dev", dev, "parent", "1:", "classid", "1:20", "htb",
            "rate", "10gbit", ns=sw)
        _run("tc", "filter", "replace", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
            "u32", "match", "ip", "src", f"{origin.ip}/32", "flowid", "1:10", ns=sw)
        host.rate_mbit = mbit

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)
        self.hosts.clear()
