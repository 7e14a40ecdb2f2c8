#!/usr/bin/env python3
"""One fast, uncapped link: swift ``get --no-peers`` against curl and aria2c, in one run.

    python3 bench/uncapped.py                  # 1 GiB, best of 5, both origins, tmpfs and disk
    python3 bench/uncapped.py --quick          # 256 MiB, best of 2: a smoke run
    python3 bench/uncapped.py --dest DIR ...   # write the downloads into DIR (repeatable)

Where the pool cannot help, a single machine on a single link, swift should
move as fast as curl: at least 0.9 of curl's rate, start-up counted (the
wall time of the whole process, from exec to exit). Measured against the same
local origin serving one file over loopback with no cap, once with the lab
origin (``swiftlab.origin``, Python threads and ``sendfile``) and once with
nginx (a neutral server):

* ``swift``: ``node.py get --no-peers`` (its own link, several connections);
* ``curl``: ``curl -o`` (one connection);
* ``aria2c -x1`` and ``aria2c -x4 -s4`` (one and four connections).

Runs are interleaved (one of each tool per round, the order rotating), and
each tool's best of N counts: on a shared machine the best run is the one
least disturbed by others. Every download is checked (its size every run,
its sha256 once per tool and origin).

Each destination is measured on its own: a tmpfs (``/dev/shm``), where the
link and the CPU are the limit, and a directory on disk, where the disk may
be. swift flushes its file before it renames it (a crash never leaves a
complete-looking file with missing data), and so does aria2c (``fsync``);
curl does not. So on disk each run is followed by an ``fdatasync`` of the
output, timed apart: ``flush_s`` is what was still unwritten, and "flush
counted" compares the tools at the same durability; on disk the goal is
judged so. The machine's dirty pages are written out (``sync``) before
every run.

swift runs as an installed copy would: with its bytecode cached
(``PYTHONPYCACHEPREFIX`` in the work directory, written by an untimed first
run), even where the environment sets ``PYTHONDONTWRITEBYTECODE``.

Results: bench/results/uncapped.md (the table) and uncapped.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlab.cluster import Cluster, program, wait_until  # noqa: E402
from swiftlab.origin import make_file  # noqa: E402
from bench.netns_mode import nginx_conf  # noqa: E402
from bench.timing import Timed, sha256, timed_run  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
RESULTS = ROOT / "bench" / "results"
#: The goal: swift's rate at least this fraction of curl's (wall time, start-up counted).
GOAL = 0.9
#: Timed beside the tools: what any Python downloader that fetches with requests
#: pays before its first request (the interpreter and ``import requests``).
IMPORT = "import requests"
#: Seconds one download may take before the bench gives up on it: a 1 GiB file at
#: curl's loopback rate takes a few seconds; a hung tool must not hang the bench.
RUN_TIMEOUT = 600.0


@dataclass
class Runs:
    """Every timed run of one tool against one origin into one destination."""
    tool: str
    origin: str
    dest: str
    size: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    flush: list[float] = field(default_factory=list)
    #: peak resident memory, bytes: an upper bound (wait4 counts the forked bench before exec)
    rss: list[int] = field(default_factory=list)

    def best(self) -> int:
        """Index of the fastest run (wall time)."""
        return min(range(len(self.wall)), key=self.wall.__getitem__)


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(out: Path, url: str) -> dict[str, list[str]]:
    """The command of each tool, writing ``url`` to ``out``."""
    aria = ["aria2c", "-q", "--allow-overwrite=true", "--auto-file-renaming=false",
            "-d", str(out.parent), "-o", out.name]
    return {
        "swift": [*program("node"), "-q", "get", "--no-peers", "--force", "-o", str(out), url],
        "curl": ["curl", "-s", "-f", "-o", str(out), url],
        "aria2c -x1": [*aria, "-x1", "-s1", url],
        "aria2c -x4 -s4": [*aria, "-x4", "-s4", url],
    }


def start_lab_origin(cluster: Cluster, root: Path, work: Path) -> str:
    port_file = work / "lab-port"
    cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--port", "0",
                   "--port-file", str(port_file)], name="origin", cwd=ROOT)
    wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 20, "the lab origin")
    return f"http://127.0.0.1:{port_file.read_text().strip()}/f.bin"


def start_nginx(cluster: Cluster, root: Path, work: Path) -> str | None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        say("  nginx is not installed: its rows are left out (apt-get install nginx)")
        return None
    prefix = work / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, [f"127.0.0.1:{port}"]))
    proc = cluster.start([nginx, "-c", str(conf), "-p", str(prefix)], name="nginx")

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"nginx exited: {proc.output()[-1500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_until(up, 20, "nginx", interval=0.1)
    return f"http://127.0.0.1:{port}/f.bin"


def run_once(cmd: list[str], out: Path, size: int, env: dict,
             flush: bool) -> tuple[float, float, float, int]:
    """(wall s, CPU s, flush s, peak RSS bytes) of one download into ``out``; checks its size."""
    run = Timed(cmd, env=env)
    try:
        wall = run.wait(RUN_TIMEOUT)
        cpu, rss = run.cpu, run.max_rss
    finally:
        run.close()
    if out.stat().st_size != size:
        raise RuntimeError(f"{cmd} wrote {out.stat().st_size} bytes, expected {size}")
    synced = 0.0
    if flush:
        t = time.monotonic()
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        synced = time.monotonic() - t
    return wall, cpu, synced, rss


def clean(dest: Path) -> None:
    for p in dest.iterdir():
        if p.is_file():
            p.unlink()


def measure(url: str, origin: str, dest: Path, label: str, size: int, digest: str, n: int,
            env: dict) -> list[Runs]:
    """Best of ``n`` interleaved runs of every tool; the first run of each (untimed) is checked."""
    out = dest / "out.bin"
    cmds = commands(out, url)
    flush = label != "tmpfs"
    for tool, cmd in cmds.items():  # warm-up: bytecode, the origin's page cache; and the check
        clean(dest)
        run_once(cmd, out, size, env, flush=False)
        if sha256(out) != digest:
            raise RuntimeError(f"{tool} wrote a wrong file")
    clean(dest)
    runs = {tool: Runs(tool, origin, label, size) for tool in cmds}
    imports = Runs(IMPORT, origin, label, 0)
    tools = list(cmds)
    for i in range(n):
        imports.wall.append(timed_run([sys.executable, "-c", "import requests"], env=env)[0])
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            os.sync()
            wall, cpu, synced, rss = run_once(cmds[tool], out, size, env, flush)
            r = runs[tool]
            r.wall.append(wall)
            r.cpu.append(cpu)
            r.flush.append(synced)
            r.rss.append(rss)
            clean(dest)
    curl = runs["curl"]
    cb = curl.best()
    for r in runs.values():
        b = r.best()
        text = (f"  {origin:5} {label:6} {r.tool:15} best {r.wall[b]:.3f} s "
                f"({size / r.wall[b] / MiB:.0f} MiB/s, {curl.wall[cb] / r.wall[b]:.2f} x curl's rate), "
                f"CPU {r.cpu[b]:.2f} s")
        if flush:
            text += (f", then {r.flush[b]:.2f} s to flush: "
                     f"{(curl.wall[cb] + curl.flush[cb]) / (r.wall[b] + r.flush[b]):.2f} x curl's")
        say(text)
    say(f"  {origin:5} {label:6} {IMPORT:15} best {min(imports.wall):.3f} s")
    return [*runs.values(), imports]


def destinations(args: argparse.Namespace, work: Path, size: int) -> list[tuple[str, Path]]:
    if args.dest:
        return [(f"dest{i}", Path(d)) for i, d in enumerate(args.dest)]
    out = []
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 3 * size:
        out.append(("tmpfs", Path(tempfile.mkdtemp(prefix="swift-uncapped-", dir=shm))))
    disk = work / "disk"
    disk.mkdir()
    out.append(("disk", disk))
    return out


def write_results(rows: list[Runs], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    best_curl = {(r.origin, r.dest): r.wall[r.best()] for r in rows if r.tool == "curl"}
    flush_curl = {(r.origin, r.dest): r.flush[r.best()] for r in rows if r.tool == "curl"}
    imports = {(r.origin, r.dest): min(r.wall) for r in rows if r.tool == IMPORT}
    with open(out / "uncapped.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["origin", "dest", "tool", "size_bytes", "run", "wall_s", "cpu_s", "flush_s",
                    "maxrss_bytes"])
        for r in rows:
            if r.tool == IMPORT:
                for i, wall in enumerate(r.wall):
                    w.writerow([r.origin, r.dest, r.tool, 0, i, f"{wall:.3f}", "", "", ""])
                continue
            for i, (wall, cpu, fl, rss) in enumerate(zip(r.wall, r.cpu, r.flush, r.rss)):
                w.writerow([r.origin, r.dest, r.tool, r.size, i, f"{wall:.3f}", f"{cpu:.3f}",
                            f"{fl:.3f}", rss])
    lines = [header, "",
             "| origin | dest | tool | best s | median s | MiB/s | x curl's rate | CPU s | flush s "
             "| x curl's rate, flush counted | max RSS MiB, at most | goal | ceiling |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r.tool == IMPORT:
            continue
        b = r.best()
        curl = best_curl[(r.origin, r.dest)]
        ratio = curl / r.wall[b]
        flushed = (curl + flush_curl[(r.origin, r.dest)]) / (r.wall[b] + r.flush[b])
        goal = ceiling = "–"
        if r.tool == "swift":  # on disk at the same durability: there the disk is the limit
            judged = ratio if r.dest == "tmpfs" else flushed
            goal = (f">= {GOAL}{'' if r.dest == 'tmpfs' else ', flush counted'}: "
                    f"{'met' if judged >= GOAL else 'missed'}")
            # a program that moved the bytes as fast as curl after ``import requests``
            base = curl if r.dest == "tmpfs" else curl + flush_curl[(r.origin, r.dest)]
            ceiling = f"{base / (base + imports[(r.origin, r.dest)]):.2f}"
        lines.append(f"| {r.origin} | {r.dest} | {r.tool} | {r.wall[b]:.3f} | "
                     f"{sorted(r.wall)[len(r.wall) // 2]:.3f} | {r.size / r.wall[b] / MiB:.0f} | "
                     f"{ratio:.2f} | {r.cpu[b]:.2f} | {r.flush[b]:.2f} | "
                     f"{flushed:.2f} | {max(r.rss) / MiB:.0f} | {goal} | {ceiling} |")
    (out / "uncapped.md").write_text("\n".join(lines) + "\n")
    say("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 MiB, best of 2")
    parser.add_argument("--runs", type=int, help="timed runs of each tool (default 5; 2 with --quick)")
    parser.add_argument("--size-mib", type=int, help="file size in MiB (default 1024; 256 with --quick)")
    parser.add_argument("--origin", choices=["lab", "nginx", "both"], default="both")
    parser.add_argument("--dest", action="append", help="download into this directory (repeatable; "
                        "default: a tmpfs under /dev/shm and a directory on disk)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * MiB
    n = args.runs or (2 if args.quick else 5)
    for tool in ("curl", "aria2c"):
        if not shutil.which(tool):
            say(f"{tool} is not installed: it is the yardstick here (apt-get install {tool})")
            return 1
    work = Path(tempfile.mkdtemp(prefix="swift-uncapped-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    rows: list[Runs] = []
    started = time.monotonic()
    load = os.getloadavg()
    dests = []
    try:
        root = work / "origin"
        root.mkdir()
        digest = make_file(root / "f.bin", size, seed=17)
        dests = destinations(args, work, size)
        say(f"uncapped loopback, {size // MiB} MiB, best of {n}; working in {work}")
        with Cluster(work) as cluster:
            origins = []
            if args.origin in ("lab", "both"):
                origins.append(("lab", start_lab_origin(cluster, root, work)))
            if args.origin in ("nginx", "both"):
                url = start_nginx(cluster, root, work)
                if url:
                    origins.append(("nginx", url))
            for label, dest in dests:
                for origin, url in origins:
                    rows += measure(url, origin, dest, label, size, digest, n, env)
    finally:
        for label, dest in dests:
            if label == "tmpfs":
                shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    imported = min((min(r.wall) for r in rows if r.tool == IMPORT), default=0.0)
    header = (f"swift against curl and aria2c on one uncapped loopback link, "
              f"{time.strftime('%Y-%m-%d %H:%M')}: {size // MiB} MiB, best of {n} interleaved runs, "
              f"{os.cpu_count()} CPUs, load {load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} "
              f"at the end, {time.monotonic() - started:.0f} s in all. Wall time of the whole "
              f"process (start-up counted); x curl's rate = curl's best time / the tool's best "
              f"time; flush = an fdatasync of the output after the run (swift has flushed "
              f"already; only timed on disk); ceiling = the best ratio a program that fetches "
              f"with requests could reach, were it as fast as curl once `python3 -c \"import "
              f"requests\"` (best {imported:.2f} s here) is done.")
    write_results(rows, args.out, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
