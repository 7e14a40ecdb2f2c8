#!/usr/bin/env python3
"""swift's benchmark: speed-up, efficiency, fault cost, CPU and memory, in one run.

    python3 bench/run.py            # full run on loopback (about 10 minutes)
    python3 bench/run.py --quick    # a short smoke run
    python3 bench/run.py --netns    # also the namespace mode (root): real hosts,
                                    # tc-capped uplinks, nginx as the origin

Every "machine" is a real ``node.py`` process with its own source address
(127.0.0.K on loopback, its own network namespace with ``--netns``); the
origin caps each machine's link. Everything is measured in this one run and
reported as ratios: against the physical limit (the sum of the machines'
caps; the LAN is loopback and never the bottleneck) and against a plain
single-machine download (``curl`` or swift alone). Results go to
bench/results/: results.csv (raw numbers), results.md (the table) and
speedup.png (speed-up against N, with the ideal line; needs matplotlib:
``pip install -r bench/requirements.txt``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlab.cluster import Cluster, program, wait_until  # noqa: E402
from swift.membership import DiscoveryClient  # noqa: E402
from swiftlab.origin import OriginServer, make_file  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
RESULTS = ROOT / "bench" / "results"


@dataclass
class Row:
    case: str
    machines: int
    size: int
    seconds: float
    limit: float | None = None          # bytes/s the physical limit allows
    baseline: float | None = None       # bytes/s of the plain download it is compared with
    target: str = ""
    passed: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.size / self.seconds

    @property
    def efficiency(self) -> float | None:
        return self.throughput / self.limit if self.limit else None


def say(text: str) -> None:
    print(text, flush=True)


def live(port: int) -> int:
    return len(DiscoveryClient("127.0.0.1", port, name="bench", secret=None, timeout=2).list_peers())


def start_lan(cluster: Cluster, helpers: int, slots: int = 4) -> tuple:
    disc = cluster.discovery(extra=["-q"])
    nodes = []
    for i in range(helpers):
        d = cluster.workdir / f"helper{i}"
        d.mkdir(exist_ok=True)
        nodes.append(cluster.node(f"127.0.0.1:{disc.port}", directory=d,
                                  extra=["-q", "--allow-private", "--slots", str(slots),
                                         "--source-address", f"127.0.0.{i + 2}"]))
    wait_until(lambda: live(disc.port) == helpers, 20, "helpers to register")
    return disc, nodes


def run_get(cluster: Cluster, disc_port: int, url: str, out: Path, *, alone: bool = False,
            slots: int = 4, timeout: float = 900, on_start=None) -> tuple[dict, object]:
    report = out.with_suffix(".json")
    args = [*program("node"), "-q", "--discovery", f"127.0.0.1:{disc_port}", "--slots", str(slots),
            "--source-address", "127.0.0.1", "get", url, "--force", "-o", str(out),
            "--report", str(report)] + (["--no-peers"] if alone else [])
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if on_start:
        on_start(proc)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"get failed ({proc.returncode}): {err[-1500:]}")
    data = json.loads(report.read_text())
    data["wall"] = time.monotonic() - started
    data["cpu"] = usage.ru_utime + usage.ru_stime
    data["maxrss"] = usage.ru_maxrss * 1024
    out.unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    return data, usage


def start_origin_process(cluster: Cluster, root: Path, case_dir: Path) -> str:
    """An uncapped origin in its own process (so it does not share our interpreter); its URL."""
    port_file = case_dir / "port"
    cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--port", "0",
                   "--port-file", str(port_file)], name="origin", cwd=ROOT)
    wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 20, "origin")
    return f"http://127.0.0.1:{port_file.read_text().strip()}"


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# -- cases -----------------------------------------------------------------------------------
def scaling(work: Path, cap: float, seconds: float, ns: list[int], per_conn: bool,
            slots: int = 4) -> list[Row]:
    rows = []
    base = None
    for n in ns:
        size = int(n * cap * (slots if per_conn else 1) * seconds) // MiB * MiB
        case_dir = work / f"{'conn' if per_conn else 'host'}-{n}"
        case_dir.mkdir()
        root = case_dir / "origin"
        root.mkdir()
        make_file(root / "f.bin", size, seed=n)
        origin = OriginServer(root, host_rate=None if per_conn else cap,
                              conn_rate=cap if per_conn else None).start()
        try:
            with Cluster(case_dir) as cluster:
                disc, _ = start_lan(cluster, n - 1, slots)
                data, _ = run_get(cluster, disc.port, origin.url("/f.bin"), case_dir / "out.bin",
                                  slots=slots)
        finally:
            origin.stop()
        (root / "f.bin").unlink()
        limit = n * cap * (slots if per_conn else 1)
        row = Row("per-connection caps" if per_conn else "per-host caps", n, size, data["seconds"],
                  limit=limit, target="efficiency >= 0.90")
        if base is None:
            base = row.throughput
        row.baseline = base
        row.passed = row.efficiency is not None and row.efficiency >= 0.90
        row.extra["origin_bytes"] = origin.stats()["bytes_by_path"].get("/f.bin", 0)
        rows.append(row)
        say(f"  {row.case:>20} N={n}: {row.seconds:6.2f} s  {row.throughput / MiB:7.1f} MiB/s  "
            f"speed-up {row.throughput / base:4.2f}  efficiency {row.efficiency:.3f}")
    return rows


def unequal(work: Path, cap: float, seconds: float) -> Row:
    n = 4
    caps = {"127.0.0.1": cap, "127.0.0.2": cap, "127.0.0.3": cap, "127.0.0.4": cap / 10}
    limit = sum(caps.values())
    size = int(limit * seconds) // MiB * MiB
    case_dir = work / "unequal"
    case_dir.mkdir()
    root = case_dir / "origin"
    root.mkdir()
    make_file(root / "f.bin", size, seed=7)
    origin = OriginServer(root, host_rates=caps).start()
    try:
        with Cluster(case_dir) as cluster:
            disc, _ = start_lan(cluster, n - 1)
            data, _ = run_get(cluster, disc.port, origin.url("/f.bin"), case_dir / "out.bin")
    finally:
        origin.stop()
    row = Row("unequal caps (one at 1/10)", n, size, data["seconds"], limit=limit,
              target="efficiency >= 0.85")
    row.passed = row.efficiency >= 0.85
    row.extra["origin_bytes"] = origin.stats()["bytes_by_path"].get("/f.bin", 0)
    say(f"  {row.case}: {row.seconds:.2f} s, efficiency {row.efficiency:.3f} against the sum of caps")
    return row


def killed(work: Path, cap: float, seconds: float) -> Row:
    n = 4
    size = int(n * cap * seconds) // MiB * MiB
    case_dir = work / "killed"
    case_dir.mkdir()
    root = case_dir / "origin"
    root.mkdir()
    make_file(root / "f.bin", size, seed=9)
    origin = OriginServer(root, host_rate=cap).start()
    try:
        with Cluster(case_dir) as cluster:
            disc, nodes = start_lan(cluster, n - 1)
            victim = nodes[-1]

            def kill_half_way(proc) -> None:
                wait_until(lambda: origin.stats()["bytes_by_path"].get("/f.bin", 0) >= size // 2,
                           seconds * 4, "half of the file")
                victim.kill()

            data, _ = run_get(cluster, disc.port, origin.url("/f.bin"), case_dir / "out.bin",
                              on_start=kill_half_way)
    finally:
        origin.stop()
    ideal = (size / 2) / (n * cap) + (size / 2) / ((n - 1) * cap)
    row = Row("one of 4 killed half-way", n, size, data["seconds"], limit=size / ideal,
              target="time <= 1.15 x ideal")
    row.extra["ideal_seconds"] = ideal
    row.extra["lost"] = data["seconds"] / ideal - 1
    row.extra["origin_bytes"] = origin.stats()["bytes_by_path"].get("/f.bin", 0)
    row.passed = data["seconds"] <= 1.15 * ideal
    say(f"  {row.case}: {row.seconds:.2f} s against an ideal {ideal:.2f} s "
        f"({100 * row.extra['lost']:+.1f}%), origin sent {row.extra['origin_bytes'] - size} bytes twice")
    return row


def uncapped(work: Path, size: int) -> list[Row]:
    case_dir = work / "uncapped"
    case_dir.mkdir()
    root = case_dir / "origin"
    root.mkdir()
    make_file(root / "f.bin", size, seed=11)
    rows = []
    with Cluster(case_dir) as cluster:
        url = start_origin_process(cluster, root, case_dir) + "/f.bin"
        disc, nodes = start_lan(cluster, 3)
        # curl, the plain single-machine download
        started = time.monotonic()
        curl = subprocess.Popen(["curl", "-s", "-f", "-o", str(case_dir / "curl.bin"), url])
        _, status, usage = os.wait4(curl.pid, 0)
        curl_s = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("curl failed")
        (case_dir / "curl.bin").unlink()
        curl_rate = size / curl_s
        curl_cpu = usage.ru_utime + usage.ru_stime
        rows.append(Row("no caps: curl", 1, size, curl_s, baseline=curl_rate,
                        extra={"cpu_s_per_gib": curl_cpu / (size / GiB)}))
        say(f"  curl: {curl_s:.2f} s, {curl_rate / MiB:.0f} MiB/s, {curl_cpu / (size / GiB):.2f} CPU s/GiB")
        for alone in (True, False):
            before = sum(proc_cpu(p.pid) for p in nodes)
            data, _ = run_get(cluster, disc.port, url, case_dir / "out.bin", alone=alone)
            helpers_cpu = sum(proc_cpu(p.pid) for p in nodes) - before
            # wall time of the whole process, as for curl (interpreter start included)
            row = Row(f"no caps: swift {'alone' if alone else 'with 3 helpers'}", 1 if alone else 4,
                      size, data["wall"], baseline=curl_rate, target=">= 0.40 x curl")
            row.passed = row.throughput >= 0.40 * curl_rate
            row.extra.update(cpu_s_per_gib=data["cpu"] / (size / GiB),
                             helpers_cpu_s_per_gib=helpers_cpu / (size / GiB))
            rows.append(row)
            say(f"  {row.case}: {row.seconds:.2f} s, {row.throughput / MiB:.0f} MiB/s = "
                f"{row.throughput / curl_rate:.2f} x curl; requester {row.extra['cpu_s_per_gib']:.2f} "
                f"CPU s/GiB, helpers {helpers_cpu / (size / GiB):.2f}")
    (root / "f.bin").unlink()
    return rows


def memory(work: Path, sizes: list[int]) -> list[Row]:
    rows = []
    for size in sizes:
        case_dir = work / f"memory-{size}"
        case_dir.mkdir()
        root = case_dir / "origin"
        root.mkdir()
        need = 2 * size + GiB
        if shutil.disk_usage(case_dir).free < need:
            say(f"  skipping the {size / GiB:.0f} GiB memory case: not enough disk space")
            continue
        make_file(root / "f.bin", size, seed=13)
        with Cluster(case_dir) as cluster:
            url = start_origin_process(cluster, root, case_dir) + "/f.bin"
            disc = cluster.discovery(extra=["-q"])
            data, _ = run_get(cluster, disc.port, url, case_dir / "out.bin", alone=True)
        (root / "f.bin").unlink()
        label = f"{size / GiB:.0f} GiB" if size >= GiB else f"{size // MiB} MiB"
        row = Row(f"peak memory, {label} file", 1, size, data["seconds"],
                  target="max RSS < 100 MiB")
        row.extra["maxrss_mib"] = data["maxrss"] / MiB
        row.passed = data["maxrss"] < 100 * MiB
        rows.append(row)
        say(f"  {row.case}: max RSS {row.extra['maxrss_mib']:.1f} MiB")
    return rows


# -- output ------------------------------------------------------------------------------------
def write_results(rows: list[Row], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "machines", "size_bytes", "seconds", "throughput_mib_s", "limit_mib_s",
                    "efficiency", "speedup", "target", "passed", "extra"])
        for r in rows:
            w.writerow([r.case, r.machines, r.size, f"{r.seconds:.3f}", f"{r.throughput / MiB:.2f}",
                        f"{r.limit / MiB:.2f}" if r.limit else "",
                        f"{r.efficiency:.3f}" if r.efficiency is not None else "",
                        f"{r.throughput / r.baseline:.3f}" if r.baseline else "",
                        r.target, "" if r.passed is None else ("PASS" if r.passed else "MISS"),
                        json.dumps(r.extra)])
    lines = [header, "",
             "| case | N | size | time (s) | MiB/s | limit MiB/s | efficiency | vs baseline | other | target | result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        other = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in r.extra.items())
        cells = [r.case, str(r.machines), f"{r.size / MiB:.0f} MiB", f"{r.seconds:.2f}",
                 f"{r.throughput / MiB:.1f}", f"{r.limit / MiB:.1f}" if r.limit else "–",
                 f"{r.efficiency:.3f}" if r.efficiency is not None else "–",
                 f"{r.throughput / r.baseline:.2f}x" if r.baseline else "–",
                 other or "–", r.target or "–",
                 "–" if r.passed is None else ("PASS" if r.passed else "MISS")]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    say("\n".join(lines))
    plot(rows, out / "speedup.png")


def plot(rows: list[Row], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is missing (pip install -r bench/requirements.txt): no plot written")
        return
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    top = 1
    for case, marker in (("per-host caps", "o"), ("per-connection caps", "s"),
                         ("netns, tc-capped uplinks", "^")):
        pts = [(r.machines, r.throughput / r.baseline) for r in rows if r.case == case and r.baseline]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=f"swift, {case}")
            top = max(top, max(p[0] for p in pts))
    ax.plot([1, top], [1, top], "k--", linewidth=1, label="ideal (N x)")
    ax.set_xlabel("machines (requester included)")
    ax.set_ylabel("speed-up over one machine")
    ax.set_title("swift: speed-up against N")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--netns", action="store_true", help="also run the namespace mode (root)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cap = (8 if args.quick else 12) * MiB
    seconds = 3 if args.quick else 10
    work = Path(tempfile.mkdtemp(prefix="swift-bench-"))
    rows: list[Row] = []
    started = time.monotonic()
    try:
        say(f"swift benchmark ({'quick' if args.quick else 'full'}), per-machine cap "
            f"{cap / MiB:.0f} MiB/s, ~{seconds} s per run; working in {work}")
        say("equal per-host caps:")
        rows += scaling(work, cap, seconds, [1, 2, 4, 8], per_conn=False)
        say("equal per-connection caps (4 connections per machine):")
        rows += scaling(work, cap / 4, seconds, [1, 2, 4, 8], per_conn=True)
        say("unequal caps:")
        rows.append(unequal(work, cap, seconds))
        say("a peer killed half-way:")
        rows.append(killed(work, cap, seconds))
        say("no caps, loopback:")
        rows += uncapped(work, 256 * MiB if args.quick else GiB)
        say("requester memory:")
        rows += memory(work, [256 * MiB, 512 * MiB] if args.quick else [GiB, 4 * GiB])
        if args.netns:
            from bench import netns_mode
            say("network namespaces (tc-capped uplinks, nginx origin):")
            rows += netns_mode.run(work, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = (f"swift benchmark, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{'quick' if args.quick else 'full'} run, {os.cpu_count()} CPUs, "
              f"{time.monotonic() - started:.0f} s in all. Limits: per-host = N x cap; "
              f"per-connection = N x 4 connections x cap; unequal = sum of caps; "
              f"killed = size / ideal time for 4 then 3 machines.")
    write_results(rows, args.out, header)
    misses = [r for r in rows if r.passed is False]
    say(f"{len(misses)} target(s) missed" if misses else "every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
