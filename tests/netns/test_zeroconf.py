"""Zero configuration on a LAN with multicast (swift.mdns), on separate hosts in network namespaces.

``python3 discovery.py`` on one host and ``python3 node.py`` on another is
the whole set-up: the node finds its pool's discovery by mDNS, joins, and
``peers`` lists it; discoveries of another pool (another name, or the same
name with another secret) on the same LAN are never picked. Where
multicast does not get through (a switch that drops it, a host with no
interface but loopback) the node says so in one line and ``--discovery``
works as before.

mDNS goes to 224.0.0.251 on the lab's bridge only: every process here runs
inside the lab's namespaces, whose only interfaces are the lab's veths and
their own loopback. The tests' session turns mDNS off
(``SWIFT_NO_ZEROCONF``, tests/conftest.py); the children here get it back
on. Root only (skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swiftlab import netlab
from swiftlab.cluster import ROOT, Cluster, Process, program, wait_until

from tests.helpers import sha256_file

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not netlab.available(), reason=netlab.unavailable_reason() or "no netns")]

#: Every child: mDNS on (the session turned it off), no discovery named by the environment.
MDNS_ON = {"SWIFT_NO_ZEROCONF": "", "SWIFT_DISCOVERY": "", "SWIFT_POOL": ""}


def secret_file(tmp_path: Path, name: str, secret: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(secret)
    path.chmod(0o600)
    return str(path)


def discovery(cluster: Cluster, host: netlab.Host, *extra: str) -> Process:
    """``discovery.py`` on ``host`` (all its interfaces, port 5000), announced by mDNS."""
    proc = cluster.start([*program("discovery"), *extra], name=f"discovery@{host.name}",
                         prefix=host.prefix, env=MDNS_ON)
    proc.wait_for(r"listening on", timeout=30)
    return proc


#: A discovery holding another secret that announces *our* fingerprint (it is public: anyone
#: on the LAN can copy it) and the earliest possible start, so it is first in line.
IMPOSTOR = """
import sys
from swift import auth, discovery_server, dnssd, mdns
copied, held, host = sys.argv[1:4]
srv = discovery_server.make_server(host, 5000, secret=auth.load_secret(held))
srv.start()
announcer = mdns.Announcer(host, 5000, "swift", dnssd.fingerprint(auth.load_secret(copied)),
                           machine="impostor", started=1).start()
print("listening on", flush=True)
if announcer.announced.wait(30):
    print("announced by mDNS", flush=True)
sys.stdin.read()
"""


def node_command(host: netlab.Host, *args: str, timeout: float = 30):
    """``node.py ARGS`` on ``host`` to completion, with mDNS on; text output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **MDNS_ON}
    return host.call([*program("node"), *args], timeout=timeout, env=env)


def test_a_node_without_discovery_finds_its_pool_by_mdns_joins_and_is_listed(lab, cluster, tmp_path):
    """Then a ``get`` without --discovery finds it too (while it probes), and the file is right."""
    ours = secret_file(tmp_path, "ours", b"our pool's secret, 32 bytes long")
    theirs = secret_file(tmp_path, "theirs", b"their pool's secret, also random")
    # the strangers come first: an earlier start and a lower address would win if they fitted
    impostor_host, other_name, other_secret = lab.host("impostor"), lab.host("othername"), lab.host("othersecret")
    disc, node_host, origin = lab.host("disc"), lab.host("node"), lab.origin()
    made = cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(tmp_path / "www"),
                          "--host", origin.ip, "--port", "8080", "--make", "f.bin:6M"],
                         name="origin", prefix=origin.prefix, cwd=str(ROOT))
    digest = made.wait_for(r"made f.bin sha256 ([0-9a-f]{64})", timeout=60).group(1)
    strangers = [discovery(cluster, other_name, "--pool", "other", "--secret-file", ours),
                 discovery(cluster, other_secret, "--secret-file", theirs)]
    impostor = cluster.start([sys.executable, "-c", IMPOSTOR, ours, theirs, impostor_host.ip],
                             name="impostor", prefix=impostor_host.prefix, env=MDNS_ON, cwd=str(ROOT),
                             stdin=subprocess.PIPE)
    mine = discovery(cluster, disc, "--secret-file", ours)
    for proc in (impostor, *strangers, mine):
        proc.wait_for(r"announced by mDNS", timeout=20)

    started = time.monotonic()
    node = cluster.start([*program("node"), "--serve-only", "--name", "n1", "--port", "0",
                          "--secret-file", ours, "--dir", str(cluster.workdir), "--allow-private"],
                         name="n1", prefix=node_host.prefix, env=MDNS_ON)
    used = node.wait_for(r"using discovery at (\S+) \(found by mDNS: pool swift(.*)\)", timeout=30)
    print(f"\nfound by mDNS {time.monotonic() - started:.2f} s after the node started{used.group(2)}")
    assert used.group(1) == f"{disc.ip}:5000", node.output()
    assert "passed over 1 that did not answer as a discovery of the pool" in used.group(2)  # the impostor
    node.wait_for(rf"registered with discovery at {disc.ip}:5000", timeout=30)

    listed = node_command(node_host, "--secret-file", ours, "peers")
    assert listed.returncode == 0, listed.stderr
    assert "  n1  " in listed.stdout
    assert f"note: using discovery at {disc.ip}:5000 (found by mDNS" in listed.stderr
    out = tmp_path / "out"
    got = node_command(lab.host("requester"), "--secret-file", ours, "--dir", str(out), "get",
                       f"http://{origin.ip}:8080/f.bin", timeout=60)
    assert got.returncode == 0, got.stderr
    assert f"note: using discovery at {disc.ip}:5000 (found by mDNS" in got.stderr
    assert "no peers known" not in got.stderr and "downloading alone" not in got.stderr, got.stderr
    assert sha256_file(out / "f.bin") == digest
    # the pool of another name (same secret) never saw the node
    other = node_command(node_host, "--secret-file", ours, "--discovery", f"{other_name.ip}:5000", "peers")
    assert other.returncode == 0 and other.stdout == "", other
    # without the secret no discovery fits, and the line says what is missing
    bare = node_command(node_host, "peers")
    assert "(pool swift's discovery has a shared secret; give --secret-file)" in bare.stderr, bare.stderr
    # --pool picks the other one
    named = node_command(node_host, "--secret-file", ours, "--pool", "other", "peers")
    assert f"using discovery at {other_name.ip}:5000 (found by mDNS: pool other" in named.stderr

    # SIGTERM (exit 0) and Ctrl-C (130): the announcement is withdrawn within two seconds
    for proc, sig, code in ((mine, signal.SIGTERM, 0), (strangers[0], signal.SIGINT, 130)):
        stopping = time.monotonic()
        proc.send(sig)
        assert proc.wait(10) == code
        assert time.monotonic() - stopping < 2.0
        assert "mDNS announcement withdrawn" in proc.output()
    for proc in (*strangers, mine, node):
        assert "Traceback" not in proc.output(), proc.output()


def test_without_multicast_the_node_says_so_in_one_line_and_discovery_flag_still_works(lab, cluster):
    if shutil.which("bridge") is None:
        pytest.skip("needs bridge (iproute2) to make the lab's switch drop multicast")
    disc, node_host, lone = lab.host("disc"), lab.host("node"), lab.host("lone")
    d = discovery(cluster, disc)
    d.wait_for(r"announced by mDNS", timeout=20)
    disc.block_multicast()       # its switch drops multicast both ways between the two
    node_host.block_multicast()

    started = time.monotonic()
    alone = node_command(node_host, "peers")
    waited = time.monotonic() - started
    notes = [line for line in alone.stderr.splitlines() if "mDNS" in line]
    assert notes == ["note: no discovery of pool swift answered mDNS within 2.5 s: using discovery at "
                     "127.0.0.1:5000; on a network without multicast, give --discovery HOST:PORT"], alone.stderr
    assert alone.returncode == 1 and "127.0.0.1:5000 is unreachable" in alone.stderr
    assert "Traceback" not in alone.stderr
    print(f"\nno answer: fell back after {waited:.2f} s (the program's whole run)")

    node = cluster.start([*program("node"), "--serve-only", "--name", "n2", "--port", "0",
                          "--discovery", f"{disc.ip}:5000", "--dir", str(cluster.workdir)],
                         name="n2", prefix=node_host.prefix, env=MDNS_ON)
    node.wait_for(rf"using discovery at {disc.ip}:5000 \(from --discovery\)", timeout=30)
    wait_until(lambda: "  n2  " in node_command(node_host, "--discovery", f"{disc.ip}:5000", "peers").stdout,
               20, "n2 listed", interval=0.2)

    # a host with no interface but loopback: one line, at once, and the default
    netlab._cmd(["ip", "-n", lone.ns, "addr", "flush", "dev", "eth0"])
    nowhere = node_command(lone, "peers")
    notes = [line for line in nowhere.stderr.splitlines() if "mDNS" in line]
    assert notes == ["note: mDNS is unavailable here (no network interface besides loopback): using "
                     "discovery at 127.0.0.1:5000; on a network without multicast, give --discovery "
                     "HOST:PORT"], nowhere.stderr
    assert "Traceback" not in nowhere.stderr
    assert "Traceback" not in d.output() + node.output()


def test_a_node_started_before_its_discovery_finds_it_when_it_comes(lab, cluster):
    """The start order does not matter: a node that found nothing looks again by mDNS
    once its heartbeats fail (membership.REDISCOVER_AFTER), and follows the discovery
    that has come up since."""
    disc, node_host = lab.host("disc"), lab.host("node")
    node = cluster.start([*program("node"), "--serve-only", "--name", "early", "--port", "0",
                          "--dir", str(cluster.workdir)], name="early", prefix=node_host.prefix, env=MDNS_ON)
    node.port = int(node.wait_for(r"listening on \S+:(\d+)", timeout=30).group(1))
    node.wait_for(r"no discovery of pool swift answered mDNS", timeout=30)
    d = discovery(cluster, disc)
    d.wait_for(r"announced by mDNS", timeout=20)
    node.wait_for(rf"using discovery at {disc.ip}:5000 \(found by mDNS\)", timeout=40)
    node.wait_for(rf"registered with discovery at {disc.ip}:5000", timeout=20)
    listed = node_command(node_host, "--discovery", f"{disc.ip}:5000", "peers")
    assert f"{node_host.ip}:{node.port}  early  " in listed.stdout, listed  # reachable, not loopback
    assert "Traceback" not in node.output() + d.output()
