"""The benchmark's namespace mode: real hosts, tc-capped uplinks, nginx as the origin.

Each machine is its own network namespace (see swiftlab/netlab.py); what nginx
sends to each machine is capped with tc, the LAN between machines is not.
Measured: N = 1, 2, 4, 8 at equal caps, and one of four machines killed
half-way (when the requester's resume record shows half the file written).
The physical limit counts payload bytes against the tc rate, so TCP/IP
headers (about 3% at a 1500-byte MTU) count against swift here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from swiftlab import netlab
from swiftlab.cluster import Cluster, program, wait_until
from swiftlab.origin import make_file
from swift.storage import ResumeRecord

MiB = 1 << 20
RATE_MBIT = 40
RATE = RATE_MBIT * 1e6 / 8

#: nginx as a neutral origin: static files, sendfile, no logs unless asked; ``{listens}`` is
#: one ``listen ADDRESS:PORT;`` line per address, ``{access_log}`` an ``access_log`` line
#: (every bench that starts nginx uses this text).
NGINX_CONF = """daemon off;
user root;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    log_format body_bytes '$request_uri $status $body_bytes_sent';
    {access_log}
    sendfile on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
{listens}
        root {root};
    }}
}}
"""


def nginx_conf(prefix, root, listens: list[str], workers: int = 1, access_log=None) -> str:
    """nginx's configuration text serving ``root`` on every ``HOST:PORT`` of ``listens``.

    With ``access_log`` (a path) nginx writes one line per request there:
    ``URI STATUS BODY_BYTES_SENT`` (:func:`body_bytes_by_uri` sums them), so a
    bench counts what the origin really sent, aborted responses included.
    """
    lines = "\n".join(f"        listen {where};" for where in listens)
    log = f"access_log {access_log} body_bytes;" if access_log else "access_log off;"
    return NGINX_CONF.format(prefix=prefix, root=root, listens=lines, workers=workers, access_log=log)


def body_bytes_by_uri(access_log, after: int = 0) -> dict[str, int]:
    """Body bytes nginx sent per URI, from an ``access_log`` written by :func:`nginx_conf`
    (from its byte ``after`` on: what was logged since the log had that size). nginx counts
    what it handed to the kernel: a response the client aborted counts what sat in the
    socket buffers too."""
    out: dict[str, int] = {}
    try:
        with open(access_log, "rb") as f:
            f.seek(after)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[2])
    return out


def ensure_nginx() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        print("installing nginx (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        path = shutil.which("nginx") or "/usr/sbin/nginx"
    return path


def run(work: Path, quick: bool = False):
    from bench.run import Row, say  # the runner's row type and printer

    if not netlab.available():
        say("  skipped: network namespaces need root and iproute2")
        return []
    nginx = ensure_nginx()
    seconds = 3 if quick else 8
    counts = [1, 2, 4] if quick else [1, 2, 4, 8]
    base = work / "netns"
    www = base / "www"
    www.mkdir(parents=True)
    rows = []
    with netlab.Lab() as net, Cluster(base) as cluster:
        origin = net.origin()
        disc_host = net.host("disc")
        machines = [net.host(f"m{i}", uplink_rate_mbit=RATE_MBIT) for i in range(max(counts))]
        conf = base / "nginx.conf"
        conf.write_text(nginx_conf(base, www, [f"{origin.ip}:8080"]))
        cluster.start([nginx, "-c", str(conf), "-p", str(base)], name="nginx", prefix=origin.prefix)
        cluster.discovery(host=disc_host.ip, port=5000, prefix=disc_host.prefix, extra=["-q"])
        dsc = f"{disc_host.ip}:5000"

        def one_run(n: int, name: str, size: int, kill_half_way: bool = False) -> dict:
            helpers = []
            for i, m in enumerate(machines[1:n]):
                d = base / f"{name}-h{i}"
                d.mkdir()
                helpers.append(cluster.node(dsc, host=m.ip, port=6000, directory=d, prefix=m.prefix,
                                            extra=["-q", "--allow-private"], name=f"{name}-h{i}"))
            wait_until(lambda: machines[0].call([*program("node"), "--discovery", dsc, "peers"],
                                                timeout=20).stdout.count(f"{name}-h") == n - 1,
                       30, "helpers registered", interval=0.2)
            out = base / f"{name}-out"
            out.mkdir()
            report = base / f"{name}.json"
            get = cluster.start([*program("node"), "-q", "--discovery", dsc, "--dir", str(out),
                                 "--peer-timeout", "5", "get", f"http://{origin.ip}:8080/{name}.bin",
                                 "--report", str(report)], name="get", prefix=machines[0].prefix)
            if kill_half_way:
                record = out / f"{name}.bin.part.swift"

                def half_written() -> bool:
                    rec = ResumeRecord.load(record)
                    return rec is not None and sum(e - s for s, e in rec.done) >= size // 2

                wait_until(half_written, seconds * 6, "half the file", interval=0.1)
                helpers[-1].kill()
            if get.wait(seconds * 20) != 0:
                raise RuntimeError(f"netns get failed:\n{get.output()[-1500:]}")
            for h in helpers:
                h.kill()
            import json
            data = json.loads(report.read_text())
            shutil.rmtree(out)
            return data

        baseline = None
        for n in counts:
            size = int(n * RATE * seconds) // MiB * MiB
            make_file(www / f"n{n}.bin", size, seed=100 + n)
            data = one_run(n, f"n{n}", size)
            (www / f"n{n}.bin").unlink()
            row = Row("netns, tc-capped uplinks", n, size, data["seconds"], limit=n * RATE,
                      target="efficiency >= 0.90")
            baseline = baseline or row.throughput
            row.baseline = baseline
            row.passed = row.efficiency >= 0.90
            rows.append(row)
            say(f"  netns N={n}: {row.seconds:.2f} s, {row.throughput / MiB:.1f} MiB/s, "
                f"speed-up {row.throughput / baseline:.2f}, efficiency {row.efficiency:.3f}")
        n = 4
        size = int(n * RATE * seconds) // MiB * MiB
        make_file(www / "kill.bin", size, seed=200)
        data = one_run(n, "kill", size, kill_half_way=True)
        ideal = (size / 2) / (n * RATE) + (size / 2) / ((n - 1) * RATE)
        row = Row("netns, one of 4 killed half-way", n, size, data["seconds"], limit=size / ideal,
                  target="time <= 1.15 x ideal")
        row.extra["ideal_seconds"] = ideal
        row.extra["lost"] = data["seconds"] / ideal - 1
        row.passed = data["seconds"] <= 1.15 * ideal
        rows.append(row)
        say(f"  netns, one of 4 killed half-way: {row.seconds:.2f} s against an ideal {ideal:.2f} s "
            f"({100 * row.extra['lost']:+.1f}%)")
    return rows


if __name__ == "__main__":  # pragma: no cover - run through bench/run.py --netns
    sys.exit("run: python3 bench/run.py --netns")
