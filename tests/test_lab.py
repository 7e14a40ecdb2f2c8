"""End-to-end faults on separate hosts: network namespaces, tc-capped uplinks (root only)."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from swift import lab
from swift.cluster import ROOT, Cluster, program, wait_until

from .conftest import MiB, sha256_file

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not lab.available(), reason="needs root, iproute2 and netns")]

RATE_MBIT = 40  # 5 MB/s per machine's internet link


def start_origin(cluster: Cluster, host: lab.Host, root, make: str) -> tuple[int, str]:
    proc = cluster.start([sys.executable, "-m", "swift.origin", "--root", str(root), "--host", host.ip,
                          "--port", "8080", "--make", make], name="origin", prefix=host.prefix,
                         cwd=str(ROOT))
    digest = proc.wait_for(r"made \S+ sha256 ([0-9a-f]{64})", timeout=60).group(1)
    proc.wait_for(r"origin listening", timeout=20)
    return 8080, digest


def origin_stats(host: lab.Host) -> dict:
    out = host.run(["curl", "-s", "--max-time", "5", f"http://{host.ip}:8080/_origin/stats"], timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}


def test_a_capped_host_gets_its_cap(tmp_path):
    with lab.Lab() as net, Cluster(tmp_path) as cluster:
        origin, client = net.host("origin"), net.host("client")
        net.cap(client, origin, RATE_MBIT)
        root = tmp_path / "origin"
        root.mkdir()
        start_origin(cluster, origin, root, "c.bin:10M")
        started = time.monotonic()
        out = client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                          f"http://{origin.ip}:8080/c.bin"], timeout=60)
        elapsed = time.monotonic() - started
        assert out.returncode == 0 and int(out.stdout) == 10 * MiB
        rate = 10 * MiB / elapsed
        expected = RATE_MBIT * 1e6 / 8
        print(f"capped host: {rate / 1e6:.2f} MB/s against a cap of {expected / 1e6:.2f} MB/s")
        assert abs(rate - expected) / expected < 0.15


def test_cut_link_and_killed_node_in_namespaces(tmp_path):
    """Discovery, an origin and four nodes as separate hosts; one link cut, one node killed."""
    size = 48 * MiB
    with lab.Lab() as net, Cluster(tmp_path) as cluster:
        origin = net.host("origin")
        disc_host = net.host("disc")
        nodes = [net.host(f"n{i}") for i in range(4)]
        for n in nodes:
            net.cap(n, origin, RATE_MBIT)
        root = tmp_path / "origin"
        root.mkdir()
        _, digest = start_origin(cluster, origin, root, "f.bin:48M")
        cluster.discovery(host=disc_host.ip, port=5000, prefix=disc_host.prefix)
        dsc = f"{disc_host.ip}:5000"
        helpers = []
        for i, n in enumerate(nodes[1:]):
            d = tmp_path / f"h{i}"
            d.mkdir()
            helpers.append(cluster.node(dsc, host=n.ip, port=6000, directory=d, prefix=n.prefix,
                                        extra=["--allow-private"], name=f"helper{i}"))
        requester = nodes[0]
        wait_until(lambda: len(re.findall(r"helper\d", requester.run(
            [*program("node"), "--discovery", dsc, "peers"], timeout=20).stdout)) == 3, 20,
            "helpers registered")
        out = tmp_path / "out"
        out.mkdir()
        report = tmp_path / "report.json"
        get = cluster.start([*program("node"), "--discovery", dsc, "--dir", str(out), "--peer-timeout", "3",
                             "get", f"http://{origin.ip}:8080/f.bin", "--report", str(report)],
                            name="get", prefix=requester.prefix)
        started = time.monotonic()

        def every_helper_busy() -> bool:
            by_client = origin_stats(origin).get("bytes_by_client", {})
            return all(by_client.get(n.ip, 0) > 2 * MiB for n in nodes[1:])

        wait_until(every_helper_busy, 30, "every helper mid-transfer", interval=0.2)
        nodes[1].cut()           # a pulled cable: no FIN, no RST
        helpers[1].kill()        # and a crash
        try:
            assert get.wait(120) == 0, get.output()
        finally:
            nodes[1].restore()
        elapsed = time.monotonic() - started
        assert sha256_file(out / "f.bin") == digest
        data = json.loads(report.read_text())
        sent = origin_stats(origin)["bytes_by_path"]["/f.bin"]
        ideal_all = size / (4 * RATE_MBIT * 1e6 / 8)
        print(f"namespaces: {elapsed:.1f} s (ideal with all four {ideal_all:.1f} s), "
              f"{sent - size} bytes fetched twice, by machine {data['bytes_by_source']}")
        assert sent <= size + 2 * 16 * MiB  # at most the two failed peers' pieces again
