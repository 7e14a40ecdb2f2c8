"""A soak: many downloads in a row through the same discovery and helpers, with faults.

What it shows: a long-lived daemon gives back what each download took.
``run_soak`` starts one ``discovery.py`` and ``helpers`` serve-only nodes
(helper k fetches from 127.0.0.(k+2), so the origin tells them apart), then
runs ``downloads`` one-shot ``node.py get`` requesters one after the other
against an in-process test origin. Every download meets one fault from a
fixed cycle (``FAULTS``): a connection reset, a 503, a stall, slow reads
(a capped link), a reset of the requester's own range, or none. Half-way one
helper is killed with SIGKILL and a new one started in its place. Each file
is checked against its sha256 and removed.

Each daemon's threads, open fds and RSS are read (``swiftlab.procstat``)
after a warm-up (the first downloads create thread pools and connection
caches that then stay) and again at the end, once the daemons are idle; a
daemon that does not come back within ``Margins`` leaks. Every wait is on a
condition with a deadline; every process is killed by PID at the end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from swift.checksums import file_digest
from swift.membership import DiscoveryClient, DiscoveryError

from .cluster import Cluster, Process, wait_until
from .origin import OriginServer, make_file
from .procstat import Usage, mib, usage

log = logging.getLogger(__name__)

KiB, MiB = 1 << 10, 1 << 20

#: The fault each download meets, in turn: (name, how to set it on the origin).
#: ``helper`` is the source address of a helper the fault is aimed at (each
#: helper gets the rule: whichever fetches first meets it).
FAULTS: list[tuple[str, Callable[[OriginServer, str], None]]] = [
    ("none", lambda origin, helper: None),
    ("reset", lambda origin, helper: origin.configure(only_client=helper, count=1, reset_after=16 * KiB)),
    ("503", lambda origin, helper: origin.configure(only_client=helper, count=1, fail=503)),
    ("stall", lambda origin, helper: origin.configure(only_client=helper, count=1, stall_after=16 * KiB,
                                                      stall_seconds=1.0)),
    ("slow reads", lambda origin, helper: origin.configure(host_rates={helper: 256 * KiB})),
    # the requester's own connections: the probe takes the first rule, a range the second
    ("requester reset", lambda origin, helper: origin.configure(only_client="127.0.0.1", count=2,
                                                                reset_after=16 * KiB)),
]


@dataclass(frozen=True)
class Margins:
    """How far above its warm baseline an idle daemon may end.

    Threads and fds: a request in its last moments may still hold one of
    each. RSS: CPython's allocator keeps freed arenas for reuse, so a few MiB
    of drift is noise; a leak of one buffer or record per download grows by
    at least the number of downloads times its size.
    """

    threads: int = 2
    fds: int = 4
    rss: int = 8 * MiB


@dataclass
class DaemonFigures:
    name: str
    pid: int
    start: Usage
    end: Usage | None = None

    def within(self, m: Margins) -> bool:
        return self.end is not None and (self.end.threads <= self.start.threads + m.threads
                                         and self.end.fds <= self.start.fds + m.fds
                                         and self.end.rss <= self.start.rss + m.rss)


@dataclass
class SoakResult:
    downloads: int
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)  # faults that met a request
    seconds: float = 0.0
    bytes: int = 0
    helper_bytes: int = 0
    daemons: list[DaemonFigures] = field(default_factory=list)
    margins: Margins = field(default_factory=Margins)

    @property
    def settled(self) -> bool:
        return all(d.within(self.margins) for d in self.daemons)

    def table(self) -> str:
        """The figures as a markdown table (one row per daemon)."""
        rows = ["| daemon | threads start → end | fds start → end | RSS start → end | within margin |",
                "| --- | --- | --- | --- | --- |"]
        for d in self.daemons:
            e = d.end
            rows.append(f"| {d.name} (pid {d.pid}) | {d.start.threads} → {e.threads if e else '?'} | "
                        f"{d.start.fds} → {e.fds if e else '?'} | {mib(d.start.rss)} → "
                        f"{mib(e.rss) if e else '?'} | {'yes' if d.within(self.margins) else 'NO'} |")
        return "\n".join(rows)

    def summary(self) -> str:
        faults = ", ".join(f"{k} {self.hits.get(k, 0)}/{v}" for k, v in self.faults.items())
        return (f"{self.ok}/{self.downloads} downloads right (sha256) in {self.seconds:.0f} s, "
                f"{self.bytes / MiB:.0f} MiB, {self.helper_bytes / MiB:.0f} MiB of it through helpers; "
                f"faults (met/set): {faults}; margins: threads +{self.margins.threads}, fds +{self.margins.fds}, "
                f"RSS +{mib(self.margins.rss)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _live(disc_port: int) -> set[str]:
    try:
        peers = DiscoveryClient("127.0.0.1", disc_port, name="soak", secret=None, timeout=2).list_peers()
    except DiscoveryError:
        return set()
    return {f"{p.host}:{p.port}" for p in peers}


def _helper(cluster: Cluster, disc: Process, k: int) -> Process:
    directory = cluster.workdir / f"helper{k}"
    directory.mkdir(exist_ok=True)
    return cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{k}", directory=directory,
                        extra=["-q", "--allow-private", "--slots", "2", "--source-address", f"127.0.0.{k + 2}"])


def _settled_usage(pid: int, timeout: float = 20.0) -> Usage:
    """Usage once two readings 0.2 s apart agree on threads and fds (idle), or at the deadline."""
    last: list[Usage | None] = [None]

    def steady() -> bool:
        now, before = usage(pid), last[0]
        last[0] = now
        return before is not None and (now.threads, now.fds) == (before.threads, before.fds)

    try:
        wait_until(steady, timeout, f"process {pid} to be idle", interval=0.2)
    except TimeoutError:
        log.warning("process %d still busy after %g s", pid, timeout)
    return last[0]


def run_soak(workdir: Path, downloads: int = 300, *, helpers: int = 3, files: int = 8,
             warmup: int = 10, seed: int = 7, margins: Margins = Margins(),
             say: Callable[[str], None] = log.info) -> SoakResult:
    """Run the soak in ``workdir`` (made if missing); see the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    root, out = workdir / "origin", workdir / "out"
    root.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    # over 1 MiB: smaller files are fetched in one request, with no helper (download.SMALL_FILE)
    sizes = [1280 * KiB + (i * 733 * KiB) % (1792 * KiB) for i in range(files)]  # 1.25 .. 3 MiB
    digests = {f"f{i}.bin": make_file(root / f"f{i}.bin", size, seed=seed + i) for i, size in enumerate(sizes)}
    result = SoakResult(downloads=downloads, margins=margins)
    warmup = min(warmup, max(1, downloads // 4))
    restart_at = downloads // 2
    origin = OriginServer(root, host="127.0.0.1", port=0).start()
    try:
        with Cluster(workdir) as cluster:
            disc = cluster.discovery(extra=["-q"])
            nodes = [_helper(cluster, disc, k) for k in range(helpers)]
            wait_until(lambda: len(_live(disc.port)) == helpers, 20, "helpers to register")
            figures: dict[str, DaemonFigures] = {}
            started = time.monotonic()
            for i in range(downloads):
                name = f"f{i % files}.bin"
                fault, inject = FAULTS[i % len(FAULTS)]
                helper_ips = [f"127.0.0.{k + 2}" for k in range(helpers)]
                origin.clear()
                origin.configure(host_rates={})
                origin.reset_stats()
                for ip in helper_ips if fault != "requester reset" else helper_ips[:1]:
                    inject(origin, ip)
                result.faults[fault] = result.faults.get(fault, 0) + 1
                if i == restart_at:
                    victim = nodes[1 % helpers]
                    say(f"download {i}: SIGKILL helper{1 % helpers} (pid {victim.pid}) and start a new one")
                    victim.kill()
                    figures.pop(f"helper{1 % helpers}", None)
                    nodes[1 % helpers] = _helper(cluster, disc, 1 % helpers)
                report = out / f"{i}.json"
                target = out / f"{i}.bin"
                get = cluster.get(f"127.0.0.1:{disc.port}", origin.url(f"/{name}"),
                                  extra=["-q", "--source-address", "127.0.0.1"],
                                  get_extra=["-o", str(target), "--report", str(report),
                                             "--piece-size", "64K"])
                code = get.wait(120)
                if code == 0 and file_digest(target, "sha256") == digests[name]:
                    result.ok += 1
                    data = json.loads(report.read_text())
                    result.bytes += data["size"]
                    result.helper_bytes += sum(v for k, v in data["bytes_by_source"].items() if k != "local")
                else:
                    result.failures.append(f"download {i} ({name}, fault {fault}): exit {code}: "
                                           f"{get.output().strip().splitlines()[-1:]}")
                queued = sum(len(q) for q in origin.config()["queued"].values())
                fetched = origin.stats()["bytes_by_client"]
                met = (any(fetched.get(ip, 0) for ip in helper_ips) if fault == "slow reads"
                       else fault == "requester reset" and queued == 0
                       or fault not in ("none", "requester reset") and queued < helpers)
                result.hits[fault] = result.hits.get(fault, 0) + met
                cluster.processes.remove(get)
                get.kill()
                for path in (target, report):
                    path.unlink(missing_ok=True)
                # baselines: after the warm-up, and for the new helper after its own warm-up
                if i + 1 == warmup or i + 1 == restart_at + warmup:
                    for proc in (disc, *nodes):
                        if proc.name not in figures:
                            figures[proc.name] = DaemonFigures(proc.name, proc.pid, _settled_usage(proc.pid))
                if (i + 1) % 25 == 0:
                    say(f"{i + 1}/{downloads} downloads, {result.ok} right")
            result.seconds = time.monotonic() - started
            for proc in (disc, *nodes):
                fig = figures.get(proc.name)
                if fig is None:  # too few downloads after the restart for a warm baseline
                    continue
                fig.end = _settled_usage(proc.pid)
                if not fig.within(margins):  # give stragglers the rest of the deadline
                    try:
                        wait_until(lambda: DaemonFigures(fig.name, fig.pid, fig.start, usage(proc.pid))
                                   .within(margins), 10, f"{proc.name} to give back what it took")
                    except TimeoutError:
                        pass
                    fig.end = usage(proc.pid)
                result.daemons.append(fig)
    finally:
        origin.stop()
    return result
