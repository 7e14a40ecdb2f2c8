#!/usr/bin/env python3
"""One file on 2 mirrors x 3 machines, each machine's link to each mirror capped (root only).

    python3 bench/mirrors_perf.py                 # 96 MiB at 24 Mbit/s per link, about a minute
    python3 bench/mirrors_perf.py --size 32 --cap 16

The lab (swiftlab/netlab.py): an origin host with two addresses, each
served by the same nginx (two mirrors of one file), a discovery host, and
machines m0 (the requester), m1 and m2 (helpers). Every machine's traffic
with *each* mirror address passes its own tc HTB class at ``--cap`` Mbit/s
(netlab caps the first address; this script adds the class for the second),
so the usable capacity is 3 machines x 2 mirrors x cap. One Metalink (both
URLs, the sha-256, 1 MiB sha-256 pieces) drives ``node.py get -M`` on m0
with two helpers, then ``aria2c -x4 -M`` on m0 alone, in the same run.

Goal (from the feature's statement): swift's payload rate >= 0.9 of the sum
of the usable caps (on the wire; a TCP payload gets about 96% of it), timed
from spawn to exit. aria2c on one machine can reach at most 2 caps. Every
file is checked against its sha256. Results: bench/results/mirrors.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlab import netlab  # noqa: E402
from swiftlab.cluster import Cluster, program, wait_until  # noqa: E402
from swiftlab.origin import make_file  # noqa: E402
from bench.timing import sha256, timed_run  # noqa: E402

MiB = 1 << 20
PORT = 8080
#: The second mirror's address on the origin host: far above the hosts the lab hands out.
SECOND = 200
PIECE = MiB
RESULTS = ROOT / "bench" / "results"


def cap_second_mirror(lab: netlab.Lab, host: netlab.Host, ip2: str, rate_mbit: float) -> None:
    """Give ``host`` a second capped class, for traffic with ``ip2`` (both ways), beside netlab's."""
    kbit = max(1, round(rate_mbit * 1000))
    rate_bytes = rate_mbit * 1e6 / 8
    burst = max(64 * 1024 + 1600, int(rate_bytes * 0.005))
    queue = max(256 * 1024, int(rate_bytes * 0.1))
    for ns, dev, match in ((lab.switch_ns, host.switch_dev, f"src {ip2}/32"),
                           (host.ns, "eth0", f"dst {ip2}/32")):
        for line in (f"class add dev {dev} parent 1: classid 1:20 htb rate {kbit}kbit ceil {kbit}kbit "
                     f"burst {burst} cburst {burst} quantum 65536",
                     f"qdisc add dev {dev} parent 1:20 handle 20: bfifo limit {queue}",
                     f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {match} flowid 1:20"):
            subprocess.run(["tc", "-n", ns, *line.split()], check=True, capture_output=True, text=True)


def metalink(name: str, data_path: Path, urls: list[str]) -> tuple[bytes, str]:
    digest = hashlib.sha256()
    pieces = []
    with open(data_path, "rb") as f:
        while block := f.read(PIECE):
            digest.update(block)
            pieces.append(hashlib.sha256(block).hexdigest())
    size = data_path.stat().st_size
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<metalink xmlns="urn:ietf:params:xml:ns:metalink">'
            f'<file name="{name}"><size>{size}</size><hash type="sha-256">{digest.hexdigest()}</hash>'
            f'<pieces length="{PIECE}" type="sha-256">'
            + "".join(f"<hash>{p}</hash>" for p in pieces) + "</pieces>"
            + "".join(f'<url priority="{i + 1}">{u}</url>' for i, u in enumerate(urls))
            + "</file></metalink>\n").encode(), digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=96, help="MiB (default 96)")
    ap.add_argument("--cap", type=float, default=24.0, help="Mbit/s per machine per mirror (default 24)")
    args = ap.parse_args()
    if not netlab.available():
        print(f"skipped: {netlab.unavailable_reason()}")
        return 0
    from bench.netns_mode import ensure_nginx, nginx_conf
    size = args.size * MiB
    work = Path(tempfile.mkdtemp(prefix="swift-mirrors-"))
    rows: dict = {"size_mib": args.size, "cap_mbit": args.cap, "load_before": os.getloadavg()}
    try:
        with netlab.Lab() as lab, Cluster(work) as cluster:
            origin = lab.origin()
            ip2 = str(lab.subnet.network_address + SECOND)
            subprocess.run(["ip", "-n", origin.ns, "addr", "add", f"{ip2}/{lab.subnet.prefixlen}",
                            "dev", "eth0"], check=True)
            disc = lab.host("disc")
            machines = [lab.host(f"m{i}", uplink_rate_mbit=args.cap) for i in range(3)]
            for m in machines:
                cap_second_mirror(lab, m, ip2, args.cap)
            www = work / "www"
            www.mkdir()
            make_file(www / "big.bin", size, seed="mirrors")
            urls = [f"http://{origin.ip}:{PORT}/big.bin", f"http://{ip2}:{PORT}/big.bin"]
            doc, digest = metalink("big.bin", www / "big.bin", urls)
            meta4 = work / "big.meta4"
            meta4.write_bytes(doc)
            conf = work / "nginx.conf"
            conf.write_text(nginx_conf(work, www, [f"{origin.ip}:{PORT}", f"{ip2}:{PORT}"], workers=2))
            cluster.start([ensure_nginx(), "-c", str(conf), "-p", str(work)], name="nginx",
                          prefix=origin.prefix)
            def nginx_up() -> bool:
                try:
                    return origin.http_get(f"http://{ip2}:{PORT}/none")[0] == 404
                except OSError:
                    return False

            wait_until(nginx_up, 20, "nginx", interval=0.1)
            cluster.discovery(host=disc.ip, port=5000, prefix=disc.prefix, extra=["-q"])
            dsc = f"{disc.ip}:5000"
            for i, m in enumerate(machines[1:], 1):
                d = work / f"h{i}"
                d.mkdir()
                cluster.node(dsc, host=m.ip, port=6000, directory=d, prefix=m.prefix, name=f"h{i}",
                             extra=["-q", "--allow-private"])
            wait_until(lambda: machines[0].call([*program("node"), "--discovery", dsc, "peers"],
                                                timeout=30).stdout.count(":6000") == 2, 60, "helpers")
            out = work / "swift"
            out.mkdir()
            report = work / "r.json"
            wall, _ = timed_run([*program("node"), "-q", "--discovery", dsc, "get", "-M", str(meta4),
                                 "-d", str(out), "--report", str(report)],
                                prefix=machines[0].prefix, timeout=600)
            if sha256(out / "big.bin") != digest:
                raise RuntimeError("swift wrote a WRONG FILE")
            data = json.loads(report.read_text())
            data = data[0] if isinstance(data, list) else data
            ideal_rate = 6 * args.cap * 1e6 / 8  # bytes/s on the wire, all usable links
            rows["swift"] = {"wall_s": round(wall, 2), "inside_s": round(data["seconds"], 2),
                             "of_caps": round(size / wall / ideal_rate, 3),
                             "of_caps_inside": round(size / data["seconds"] / ideal_rate, 3),
                             "bytes_by_source": data["bytes_by_source"],
                             "mirrors": [{k: m[k] for k in ("url", "bytes", "left_out")}
                                         for m in data["mirrors"]]}
            shutil.rmtree(out)
            aria_out = work / "aria"
            aria_out.mkdir()
            wall, _ = timed_run(["aria2c", "-x4", "-q", "--allow-overwrite=true", "-d", str(aria_out),
                                 "-M", str(meta4)], prefix=machines[0].prefix, timeout=600)
            if sha256(aria_out / "big.bin") != digest:
                raise RuntimeError("aria2c wrote a wrong file")
            rows["aria2c_x4_one_machine"] = {"wall_s": round(wall, 2),
                                             "of_its_2_caps": round(size / wall / (ideal_rate / 3), 3)}
            rows["swift_speedup_over_aria2c"] = round(rows["aria2c_x4_one_machine"]["wall_s"]
                                                      / rows["swift"]["wall_s"], 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows["load_after"] = os.getloadavg()
    print(json.dumps(rows, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mirrors.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
