"""Separate hosts in network namespaces (swiftlab/netlab.py): the lab itself, then crash resistance.

The lab is only worth its numbers if its links behave like links: a host's
internet link gives about its cap and no more, the LAN between hosts does
not go through that cap, a pulled cable is silent (no FIN, no RST) and
plugging it back in lets a connection carry on, and a crashed run leaves
nothing that a later run does not clean up. The last test is the fault
test of the design on that footing: discovery, an origin and four
machines, each behind a 40 Mbit/s uplink; mid-download one helper's cable
is pulled and another helper is SIGKILLed, and the file still comes out
right.

Root only (skipped otherwise). Every process started here is killed by PID
(``Cluster``), every namespace is deleted (checked after each test).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swiftlab import netlab
from swiftlab.cluster import ROOT, Cluster, Process, program, wait_until

from tests.helpers import MiB, sha256_file

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not netlab.available(), reason=netlab.unavailable_reason() or "no netns")]

RATE_MBIT = 40.0
RATE = RATE_MBIT * 1e6 / 8  # bytes/s on the wire
ORIGIN_PORT = 8080
PEER_TIMEOUT = 3


def start_origin(cluster: Cluster, host: netlab.Host, root: Path, *make: str) -> dict[str, str]:
    """``python3 -m swiftlab.origin`` on ``host``; returns the sha256 of every file it made."""
    proc = cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--host", host.ip,
                          "--port", str(ORIGIN_PORT), *(a for spec in make for a in ("--make", spec))],
                         name=f"origin@{host.name}", prefix=host.prefix, cwd=str(ROOT))
    proc.wait_for(r"origin listening", timeout=60)
    return {m.group(1): m.group(2) for line in proc.lines
            if (m := re.match(r"made (\S+) sha256 ([0-9a-f]{64})", line))}


def origin_stats(origin: netlab.Host) -> dict:
    status, body = origin.http_get(f"http://{origin.ip}:{ORIGIN_PORT}/_origin/stats", timeout=5)
    assert status == 200, body
    return json.loads(body)


def timed_download(host: netlab.Host, server_ip: str, path: str) -> tuple[int, float]:
    """GET ``path`` from ``server_ip`` on ``host``, in this process; (bytes, seconds)."""
    conn = http.client.HTTPConnection(server_ip, ORIGIN_PORT, timeout=20)
    conn.sock = host.connect((server_ip, ORIGIN_PORT), timeout=20)
    try:
        started = time.monotonic()
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        got = 0
        while chunk := resp.read(256 * 1024):
            got += len(chunk)
        return got, time.monotonic() - started
    finally:
        conn.close()


# -- the lab ---------------------------------------------------------------------------------------
def test_caps_hold_per_host_and_the_lan_stays_fast(lab, cluster, tmp_path):
    """Two capped hosts download from the origin at once: each gets its own cap, within 15%."""
    origin = lab.origin()
    a = lab.host("a", uplink_rate_mbit=RATE_MBIT)
    b = lab.host("b", uplink_rate_mbit=RATE_MBIT)
    start_origin(cluster, origin, tmp_path / "www", "c.bin:12M")
    start_origin(cluster, b, tmp_path / "www-b", "lan.bin:64M")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {h.name: pool.submit(timed_download, h, origin.ip, "/c.bin") for h in (a, b)}
        results = {name: f.result(timeout=60) for name, f in futures.items()}
    for name, (got, seconds) in results.items():
        assert got == 12 * MiB
        rate = got / seconds
        print(f"host {name} from the origin: {rate / 1e6:.2f} MB/s, cap {RATE / 1e6:.2f} MB/s "
              f"({rate / RATE:.3f} of it)")
        assert abs(rate - RATE) / RATE < 0.15, (name, rate)

    got, seconds = timed_download(a, b.ip, "/lan.bin")  # host to host: not through any cap
    assert got == 64 * MiB
    print(f"host a from host b (LAN): {got / seconds / 1e6:.0f} MB/s")
    assert got / seconds > 5 * RATE


def _send_between(sender: netlab.Host, receiver: netlab.Host, nbytes: int) -> None:
    """``nbytes`` from ``sender`` to ``receiver`` over one TCP connection, in this process."""
    with receiver.socket() as listener:
        listener.bind((receiver.ip, 0))
        listener.listen()
        with sender.connect(listener.getsockname(), timeout=10) as client:
            server, _ = listener.accept()
            with server, concurrent.futures.ThreadPoolExecutor(1) as pool:
                server.settimeout(20)
                client.settimeout(20)
                sent = pool.submit(lambda: (client.sendall(bytes(nbytes)), client.shutdown(socket.SHUT_WR)))
                got = 0
                while chunk := server.recv(1 << 20):
                    got += len(chunk)
                sent.result(20)
                assert got == nbytes


def test_a_lan_cap_shapes_the_lan_both_ways_and_leaves_the_uplink_class_to_the_origin(lab):
    """What a host sends to and gets from other hosts passes its LAN class; its traffic
    with the origin passes the uplink class only."""
    origin = lab.origin()
    a = lab.host("a", uplink_rate_mbit=RATE_MBIT, lan_rate_mbit=1000)
    b = lab.host("b")
    _send_between(a, b, 2 * MiB)
    _send_between(b, a, 3 * MiB)
    shaped = a.shaped()
    assert 2 * MiB <= shaped["lan"].sent < 2.2 * MiB, shaped  # headers: a few % more
    assert 3 * MiB <= shaped["lan"].received < 3.3 * MiB, shaped
    assert shaped["uplink"].sent < 64 * 1024 and shaped["uplink"].received < 64 * 1024, shaped
    _send_between(origin, a, MiB)
    after = a.shaped()
    assert after["uplink"].received >= MiB and after["lan"].received - shaped["lan"].received < 64 * 1024
    a.set_uplink(None)  # the LAN cap stays when the uplink changes
    assert set(a.shaped()) == {"lan"} and a.lan_rate_mbit == 1000 and b.shaped() == {}


def test_a_cut_cable_is_silent_and_restore_resumes(lab):
    """No FIN, no RST while cut: the peer just hears nothing; afterwards the connection carries on."""
    server_host, client_host = lab.origin(), lab.host("a", uplink_rate_mbit=RATE_MBIT)
    with server_host.socket() as listener:
        listener.bind((server_host.ip, 0))
        listener.listen()
        with client_host.connect(listener.getsockname(), timeout=5) as client:
            server, _ = listener.accept()
            with server:
                server.settimeout(5)
                client.sendall(b"before")
                assert server.recv(100) == b"before"
                client_host.cut()
                client.sendall(b"during")
                server.sendall(b"reply")
                client.settimeout(1.0)
                with pytest.raises(socket.timeout):  # not ConnectionResetError, not b"" (FIN)
                    client.recv(100)
                server.settimeout(0.2)
                with pytest.raises(socket.timeout):
                    server.recv(100)
                # a new connection to the cut host is not refused either: it just gets no answer
                with pytest.raises(socket.timeout):
                    server_host.connect((client_host.ip, 9), timeout=0.5)
                client_host.restore()
                server.settimeout(15)  # TCP's retransmission backoff decides when
                client.settimeout(15)
                assert server.recv(100) == b"during"
                assert client.recv(100) == b"reply"


def test_a_crashed_run_is_cleaned_up_and_live_labs_are_not(lab, cluster):
    """A lab whose process was SIGKILLed is removed by the next lab; a live one is left alone."""
    crashing = cluster.start(
        [sys.executable, "-c",
         "import sys; from swiftlab import netlab; lab = netlab.Lab(); lab.origin(); "
         "lab.host('x', uplink_rate_mbit=10); print('lab', lab.prefix, flush=True); sys.stdin.read()"],
        name="crashing-lab", cwd=str(ROOT), stdin=subprocess.PIPE)
    prefix = crashing.wait_for(r"lab (\S+)", timeout=20).group(1)
    crashing.kill()
    assert crashing.popen.returncode == -9
    stale = [n for n in netlab.list_namespaces() if n.startswith(prefix)]
    assert len(stale) == 3, stale  # switch, origin, x: the dead process could not clean up
    lab.host("mine")
    mine = sorted(lab.namespaces())
    with netlab.Lab() as other:
        assert other.prefix != lab.prefix
        assert not [n for n in netlab.list_namespaces() if n.startswith(prefix)]
        assert sorted(lab.namespaces()) == mine  # the live lab is untouched
        other.host("mine")  # the same host name in another lab does not clash
        assert other.hosts["mine"].ip == lab.hosts["mine"].ip
    assert other.namespaces() == []


def test_close_kills_what_runs_on_the_hosts_and_the_machine_is_untouched(tmp_path):
    """close() ends every process on the lab's hosts and deletes its namespaces; nothing else changes."""
    def root_links() -> list[str]:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        return sorted(line.split(":")[1].strip() for line in out.splitlines())

    before = root_links()
    untracked = None
    try:
        with netlab.Lab() as net:
            a = net.host("a", uplink_rate_mbit=RATE_MBIT)
            net.origin()
            tracked = a.run(["cat"], stdin=subprocess.PIPE)
            untracked = subprocess.Popen([*a.prefix, "cat"], stdin=subprocess.PIPE)  # as Cluster starts them
            assert len(net.namespaces()) == 3
            assert root_links() == before  # every link of the lab lives inside its namespaces
        assert tracked.wait(5) == -9
        assert untracked.wait(5) == -9
        assert net.namespaces() == []
        assert root_links() == before
    finally:
        if untracked is not None and untracked.poll() is None:
            untracked.kill()
            untracked.wait(5)


# -- crash resistance on separate hosts ------------------------------------------------------------
def test_cut_cable_and_killed_node_mid_download(lab, cluster, tmp_path):
    """Four capped machines; one helper's cable pulled and another SIGKILLed mid-download."""
    size = 64 * MiB
    origin = lab.origin()
    disc = lab.host("disc")
    machines = [lab.host(f"m{i}", uplink_rate_mbit=RATE_MBIT) for i in range(4)]
    requester, helper_hosts = machines[0], machines[1:]
    digest = start_origin(cluster, origin, tmp_path / "www", "f.bin:64M")["f.bin"]
    cluster.discovery(host=disc.ip, port=5000, prefix=disc.prefix)
    dsc = f"{disc.ip}:5000"
    helpers: list[Process] = []
    for i, h in enumerate(helper_hosts):
        d = tmp_path / f"helper{i}"
        d.mkdir()
        helpers.append(cluster.node(dsc, host=h.ip, port=6000, name=f"helper{i}", directory=d,
                                    prefix=h.prefix,
                                    extra=["--allow-private", "--peer-timeout", str(PEER_TIMEOUT)]))

    def registered() -> bool:
        out = requester.call([*program("node"), "--discovery", dsc, "peers"], timeout=20).stdout
        return all(f"helper{i}" in out for i in range(len(helpers)))

    wait_until(registered, 30, "helpers registered", interval=0.2)

    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "report.json"
    started = time.monotonic()
    get = cluster.start([*program("node"), "--discovery", dsc, "--dir", str(out),
                         "--peer-timeout", str(PEER_TIMEOUT), "get",
                         f"http://{origin.ip}:{ORIGIN_PORT}/f.bin", "--report", str(report)],
                        name="get", prefix=requester.prefix)

    def every_helper_busy() -> dict | None:
        """Each helper got > 6 MiB from the origin and sent > 4 MiB on over its cable."""
        stats = origin_stats(origin)
        by_client = stats["bytes_by_client"]
        if all(by_client.get(h.ip, 0) > 6 * MiB and h.traffic().sent > 4 * MiB for h in helper_hosts):
            return stats
        return None

    at_fault = wait_until(every_helper_busy, 30, "every helper mid-transfer", interval=0.1)
    cut_host, killed = helper_hosts[0], helpers[1]
    cut_host.cut()   # a pulled cable: no FIN, no RST, the node runs on
    killed.kill()    # a crash: SIGKILL
    fault_at = time.monotonic() - started
    delivered_at_fault = requester.traffic().received  # what had reached the requester by then
    sent_at_fault = at_fault["bytes_by_path"]["/f.bin"]
    assert sent_at_fault < size * 0.75, "the faults came too late to matter"
    try:
        code = get.wait(90)
    finally:
        cut_host.restore()
    elapsed = time.monotonic() - started
    assert code == 0, get.output()[-3000:]
    assert sha256_file(out / "f.bin") == digest
    assert sorted(p.name for p in out.iterdir()) == ["f.bin"]  # no .part, no resume record

    data = json.loads(report.read_text())
    by_source = data["bytes_by_source"]
    assert sum(by_source.values()) == size
    sent = origin_stats(origin)["bytes_by_path"]["/f.bin"]
    extra = sent - size
    # the lost pieces of the two failed helpers are fetched again, and nothing else is:
    # at most what two helpers had in flight (4 slots each, pieces of size / (2 x 16 workers))
    piece = size // 32
    print(f"\nnamespaces, 4 machines at {RATE_MBIT:g} Mbit/s, {size // MiB} MiB: faults at "
          f"{fault_at:.1f} s ({sent_at_fault / MiB:.1f} MiB sent by the origin), done in "
          f"{elapsed:.1f} s (report {data['seconds']:.1f} s); {extra} bytes fetched twice "
          f"({100 * extra / size:.1f}%); by machine {by_source}; notices {data['notices']}")
    assert 0 <= extra <= 2 * 4 * piece
    # the two failed helpers had delivered before the faults, and that work was kept
    for host in (cut_host, helper_hosts[1]):
        assert any(k.startswith(f"{host.ip}:") and v > 0 for k, v in by_source.items()), by_source
    # no faster than the caps allow; and after the faults about as fast as the two machines left
    # can go (at the wire rate: a lower bound), give or take one peer timeout for the cut helper
    floor = size / (4 * RATE)
    ideal = fault_at + max(0, size - delivered_at_fault) / (2 * RATE)
    print(f"ideal with two machines left after the faults: {ideal:.1f} s; took {elapsed / ideal:.2f}x that")
    assert floor < elapsed < ideal * 1.15 + PEER_TIMEOUT + 2, (floor, elapsed, ideal)
