"""A node never fetches into its own network, not even one packet: a real node in a
network namespace with only ``lo`` up asked for private and metadata addresses (root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from swiftlab.cluster import ROOT, Cluster
from tests.helpers import is_root


NETNS_SCRIPT = r"""
import json, sys, time
from swift import protocol, wire
port = int(sys.argv[1])
with wire.client_connect("127.0.0.1", port, name="probe", secret=None, timeout=10) as conn:
    for job, url in enumerate(sys.argv[2:], 1):
        started = time.monotonic()
        conn.send(protocol.Fetch(job, url, 0, 1000, 1000, None, None))
        reply = conn.recv(timeout=30)
        print(json.dumps({"url": url, "seconds": time.monotonic() - started,
                          "kind": type(reply).__name__, "code": getattr(reply, "code", None),
                          "message": getattr(reply, "message", None)}), flush=True)
    conn.send(protocol.Ping())
    print(json.dumps({"pong": isinstance(conn.recv(timeout=10), protocol.Pong)}), flush=True)
"""


@pytest.fixture
def isolated_netns():
    """A network namespace with only ``lo`` up: nothing sent inside it can leave the machine."""
    if not is_root() or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    ns = f"swsec{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode:
        pytest.skip("cannot create a network namespace here")
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.root
def test_private_and_metadata_addresses_are_refused_before_any_packet(tmp_path, isolated_netns):
    """10/8, 169.254.169.254 and friends, asked of a real node.

    The node runs in a namespace where every non-loopback connect fails at once
    with "network unreachable": if the node tried to connect, its answer would
    say so. It must instead answer with the policy's own refusal, at once.
    """
    work = tmp_path / "w"
    work.mkdir()
    urls = ["http://10.0.0.1/x.bin", "http://169.254.169.254/latest/meta-data",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://192.168.1.1/", "http://172.16.0.1:8080/", "http://100.64.0.1/",
            "http://[fd00::1]/x", "http://[fe80::1]/x", "http://[::ffff:10.0.0.1]/x",
            "http://[::ffff:169.254.169.254]/x", "http://[2002:a9fe:a9fe::1]/x",
            "http://[64:ff9b::a9fe:a9fe]/x", "http://0xa9fea9fe/latest/meta-data",
            "http://2852039166/latest/meta-data", "http://224.0.0.1/", "http://255.255.255.255/"]
    with Cluster(work, prefix=["ip", "netns", "exec", isolated_netns]) as lab:
        node = lab.node("127.0.0.1:9", name="isolated")  # no discovery in there: it says so, works on
        out = subprocess.run(["ip", "netns", "exec", isolated_netns, sys.executable, "-c", NETNS_SCRIPT,
                              str(node.port), *urls], capture_output=True, text=True, timeout=120,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        print(json.dumps(rows, indent=1))
        assert rows[-1] == {"pong": True}
        for row in rows[:-1]:
            assert row["kind"] == "Error" and row["code"] == "refused", row
            assert "refusing to fetch" in row["message"], row
            assert "unreachable" not in row["message"].lower(), row  # no connect was tried
            assert row["seconds"] < 2.0, row
        job_lines = [line for line in node.output().splitlines() if " job " in line]
        assert len(job_lines) == len(urls), node.output()
        assert all("refusing to fetch" in line and "unreachable" not in line for line in job_lines)


