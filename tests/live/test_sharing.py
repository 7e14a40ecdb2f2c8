"""LAN sharing between real processes on loopback: a file fetched once serves the next member.

Each "machine" is a node with its own state directory (``SWIFT_STATE_DIR``)
and download directory; a ``get`` run with a machine's state directory hands
its file to that machine's node. The origin's byte counters say what the
internet paid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests.helpers import MiB, live_keys, sha256_file

SIZE = 64 * MiB


class Machine:
    """A node and the directories that make it one machine."""

    def __init__(self, cluster, disc, name: str, *, extra=()):
        self.cluster = cluster
        self.name = name
        root = cluster.workdir / name
        self.state, self.dir = root / "state", root / "files"
        self.state.mkdir(parents=True)
        self.dir.mkdir()
        self.env = {"SWIFT_STATE_DIR": str(self.state)}
        self.discovery = f"127.0.0.1:{disc.port}"
        self.node = cluster.node(self.discovery, name=name, directory=self.dir, env=self.env,
                                 extra=["--allow-private", *extra])

    def get(self, url: str, *args: str, timeout: float = 120) -> tuple[int, str, dict]:
        report = self.dir / f"report-{len(list(self.dir.glob('report-*')))}.json"
        proc = self.cluster.start(
            [*_node_program(), "--discovery", self.discovery, "--dir", str(self.dir), "get", url,
             "--report", str(report), *args], name=f"get-{self.name}", env=self.env)
        code = proc.wait(timeout)
        data = json.loads(report.read_text()) if report.exists() else {}
        return code, proc.output(), data


def _node_program() -> list[str]:
    from swiftlab.cluster import program
    return program("node")


def origin_bytes(origin, path: str) -> int:
    return origin.stats()["bytes_by_path"].get(path, 0)


@pytest.fixture
def two_machines(cluster):
    disc = cluster.discovery()
    machines = [Machine(cluster, disc, "alpha"), Machine(cluster, disc, "beta")]
    wait_until(lambda: len(live_keys(disc.port)) == 2, 10, "both nodes registered")
    return machines


def test_a_second_members_download_of_a_finished_file_comes_from_the_lan(two_machines, origin,
                                                                          origin_root):
    alpha, beta = two_machines
    digest = make_file(origin_root / "disk.iso", SIZE, seed=16)
    code, out, _ = alpha.get(origin.url("/disk.iso"), "--no-peers")
    assert code == 0, out
    origin.reset_stats()
    code, out, report = beta.get(origin.url("/disk.iso"))
    assert code == 0, out
    assert sha256_file(beta.dir / "disk.iso") == digest
    paid = origin_bytes(origin, "/disk.iso")
    assert paid <= 0.02 * SIZE, (paid, out)
    assert sum(report["lan_bytes"].values()) >= 0.98 * SIZE, report
    assert "from LAN copies" in out and "alpha" in out, out
