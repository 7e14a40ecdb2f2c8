"""What several test modules share: sizes, digests, privilege checks, and the
few steps every live test takes (start helper nodes, run one ``get``).

Test modules import from here, never from one another (and conftest.py holds
only fixtures), so moving a test file between tiers breaks no other file.
"""

from __future__ import annotations

import os
from pathlib import Path

from swift.checksums import file_digest
from swift.membership import DiscoveryClient
from swiftlab.cluster import wait_until

MiB = 1 << 20


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def live_keys(port: int) -> set[str]:
    """``host:port`` of every node the discovery on loopback ``port`` lists."""
    client = DiscoveryClient("127.0.0.1", port, name="test", secret=None, timeout=2.0)
    return {f"{p.host}:{p.port}" for p in client.list_peers()}


def start_helpers(cluster, disc, count: int, *, first_ip: int = 2, extra=()):
    """``count`` serve-only helpers, helper i fetching from 127.0.0.(first_ip + i),
    each with its own directory; returns once discovery lists all of them."""
    nodes = []
    for i in range(count):
        d = cluster.workdir / f"helper{i}"
        d.mkdir()
        nodes.append(cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{i}", directory=d,
                                  extra=["--allow-private", "--source-address",
                                         f"127.0.0.{first_ip + i}", *extra]))
    wait_until(lambda: len(live_keys(disc.port)) == count, 10, "helpers registered")
    return nodes


def run_get(cluster, disc_port, url, *args, extra=(), timeout=120):
    """One ``node.py get url *args``; returns (exit status, combined output)."""
    proc = cluster.get(f"127.0.0.1:{disc_port}", url, extra=extra, get_extra=args)
    code = proc.wait(timeout)
    return code, proc.output()
