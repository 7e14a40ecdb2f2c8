#!/usr/bin/env python3
"""The namespace rows, measured on separate hosts in network namespaces (root only).

    python3 bench/netns_perf.py            # every row, about 5 minutes
    python3 bench/netns_perf.py --quick    # smaller files, a smoke run (about 2 minutes)
    python3 bench/netns_perf.py --rows 2,5 # some rows only
    python3 bench/netns_perf.py --rows 4 --wide 16,8      # row 4 at other sizes

Every machine is its own network namespace (swiftlab/netlab.py); nginx on
the origin host serves the files; each host's traffic with the origin is
capped with tc (64 Mbit/s; 24 Mbit/s in row 4), the LAN between hosts is
not. The ideal is taken from **curl's rate on one host at the same cap in
the same run** (so TCP/IP overhead and the origin count the same for
both), and every row also runs ``aria2c -x4`` on another host at that cap
(at the same time as curl: separate links). All ratios in the output come
from one run of this script. Every file swift writes is checked against
its sha256.

Rows (and their goals):

1. 96 MiB on 4 hosts; one helper frozen with SIGSTOP 1 s after the first
   MiB reached the requester (so it has a piece in flight). Ideal for the
   machines left: 1 s at 4 x r, the rest at 3 x r (r = curl's rate).
   Goal: wall <= 1.3 x that.
2. 64 MiB on 3 hosts, equal caps; wall clock of ``node.py get`` from spawn
   to exit (interpreter, probe and discovery included). Goal: ideal / wall
   >= 0.93, ideal = size / (3 r).
3. 64 MiB on 3 hosts, one at 1/10 of the cap. Ideal = size / (2.1 r).
   Goal >= 0.90.
4. 256 MiB on 16 hosts at 24 Mbit/s (then 32 and 8, to see how it scales).
   Goal: ideal / wall >= 0.93. Here the requester's CPU seconds per GiB
   (utime + stime, from wait4; apart: what it spent before its first MiB),
   its threads (sampled from /proc/PID/task), its busiest threads, its
   syscalls per MiB (``perf stat`` tracepoints: recv, pwrite, futex for the
   GIL and lock hand-offs) and one helper's, and the helpers' CPU per GiB
   they served are reported: where its time goes.
5. Start-up: ``node.py --help`` wall time on loopback, median of 5 (goal
   <= 0.15 s); ``get`` of a 3 MiB file from an uncapped host with discovery
   unreachable (connection refused), median of 5 (goal <= 0.2 s), beside curl
   and aria2c on the same file, plus ``python3 -X importtime`` to show which
   imports the time goes to.

For every transfer row a sampler reads the requester's received bytes
(``/proc/PID/net/dev`` of its namespace) every 100 ms: the time to the first
MiB, to 10/50/90/99 % of the file and to the last byte, and the longest
stall (under a quarter of the expected rate) say where the wall time went.

The machine is shared: the load average, the machine's busy fraction
(``/proc/stat``) during each row and in the second before it go into the
results. Everything this script starts is killed by PID (process group)
and every namespace deleted, whatever happens (``try``/``finally``; the
lab's own finalizer as a last resort). The whole run stops starting rows
after BUDGET seconds. Results: bench/results/perf.md, perf.csv and perf.png
(the plot needs matplotlib: ``pip install -r bench/requirements.txt``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlab import netlab  # noqa: E402
from swiftlab.cluster import Cluster, Process, program, wait_until  # noqa: E402
from swiftlab.origin import make_file  # noqa: E402
from bench.timing import Timed, sha256, timed_run  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The per-host cap of the namespace rows, Mbit/s on the wire.
CAP_MBIT = 64
#: The cap of the 16-host row: 16 x 24 Mbit/s = 48 MB/s through one requester.
WIDE_CAP_MBIT = 24
#: How often the sampler reads counters: fine enough for a 1 s freeze, cheap
#: enough (a few /proc reads) not to load a 2-core machine.
SAMPLE_INTERVAL = 0.1
#: The whole mode must end within this (seconds); rows that would start later are skipped.
BUDGET = 15 * 60
PORT = 8080


@dataclass
class Result:
    """One row of the table; ``metric`` is the number the goal is about."""

    row: str
    case: str
    hosts: int
    size: int
    cap_mbit: float | None
    wall: float
    metric_name: str
    metric: float
    goal: str
    met: bool
    inside: float | None = None
    ideal: float | None = None
    curl: float | None = None
    aria2: float | None = None
    load: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def vs_curl(self) -> float | None:
        return self.curl / self.wall if self.curl else None

    @property
    def vs_aria2(self) -> float | None:
        return self.aria2 / self.wall if self.aria2 else None


def say(text: str) -> None:
    print(text, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0.0 once it is gone)."""
    return sum(proc_cpu_split(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds: in the program, in the kernel ((0, 0) once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


# -- syscall counts (perf stat) ----------------------------------------------------------------
#: Counted per process with ``perf stat`` tracepoints (about a microsecond per event):
#: reads and sends say the average block size, futex calls the GIL and lock hand-offs,
#: the poll family the waits for readiness.
PERF_EVENTS = ["task-clock", "context-switches", "syscalls:sys_enter_recvfrom",
               "syscalls:sys_enter_sendto", "syscalls:sys_enter_sendmsg", "syscalls:sys_enter_pwrite64",
               "syscalls:sys_enter_futex", "syscalls:sys_enter_poll", "syscalls:sys_enter_ppoll",
               "syscalls:sys_enter_select", "syscalls:sys_enter_pselect6"]


class PerfStat:
    """``perf stat -p PID`` with the syscall counters above; ``counts()`` after the target ended or stop()."""

    def __init__(self, pid: int, work: Path):
        self.path = Path(tempfile.mkstemp(prefix="swift-perf-stat-", suffix=".csv", dir=work)[1])
        self.proc = Timed(["perf", "stat", "-x", ",", "-o", str(self.path), "-e", ",".join(PERF_EVENTS),
                           "-p", str(pid)]) if shutil.which("perf") else None

    def stop(self) -> None:
        """End the count (SIGINT makes perf write its numbers), within a few seconds."""
        if self.proc and self.proc.running:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            if not self.proc._done.wait(5):
                self.proc.kill()

    def counts(self) -> dict[str, float]:
        self.stop()
        out: dict[str, float] = {}
        try:
            for line in self.path.read_text().splitlines():
                parts = line.split(",")
                if len(parts) >= 3 and not line.startswith("#"):
                    try:
                        out[parts[2].replace("syscalls:sys_enter_", "")] = float(parts[0])
                    except ValueError:
                        pass  # <not supported> / <not counted>
        except OSError:
            pass
        if self.proc:
            self.proc.close()
        self.path.unlink(missing_ok=True)
        return out


def per_mib(counts: dict[str, float], nbytes: int) -> dict:
    """Syscalls per MiB moved, and the average bytes per read."""
    mib = max(nbytes / MiB, 1e-9)
    waits = sum(counts.get(k, 0) for k in ("poll", "ppoll", "select", "pselect6"))
    sends = counts.get("sendto", 0) + counts.get("sendmsg", 0)
    out = {"recv_per_MiB": round(counts.get("recvfrom", 0) / mib, 1), "send_per_MiB": round(sends / mib, 1),
           "futex_per_MiB": round(counts.get("futex", 0) / mib, 1), "poll_per_MiB": round(waits / mib, 1),
           "ctx_switches_per_MiB": round(counts.get("context-switches", 0) / mib, 1)}
    if counts.get("pwrite64"):
        out["pwrite_per_MiB"] = round(counts["pwrite64"] / mib, 1)
    return out


# -- the sampler -------------------------------------------------------------------------------
def rx_bytes(pid: int) -> int | None:
    """Bytes received on eth0 of the namespace ``pid`` lives in (None before it got there)."""
    try:
        if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "ip":
            return None  # still ``ip netns exec``, in our namespace
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "eth0":
                return int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def tx_bytes(pid: int) -> int | None:
    """Bytes sent on eth0 of the namespace ``pid`` lives in."""
    try:
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "eth0":
                return int(rest.split()[8])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Sampler:
    """Reads the requester's counters every SAMPLE_INTERVAL on a thread of its own until stop().

    ``points``: (seconds since spawn, bytes received by its host); ``threads``:
    the largest thread count seen; ``task_cpu``: last CPU seconds per thread;
    ``ctx``: last (voluntary, involuntary) context switches summed over threads;
    ``cpu_at_first_mib``: its CPU seconds when the first MiB had arrived (start-up).
    """

    def __init__(self, proc: Timed, rx_before: int):
        self.proc = proc
        self.rx_before = rx_before
        self.points: list[tuple[float, int]] = []
        self.threads = 0
        self.task_cpu: dict[int, float] = {}
        self.ctx = (0, 0)
        self.cpu_at_first_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pid = self.proc.pid
        while not self._stop.is_set() and self.proc.running:
            now = time.monotonic() - self.proc.started
            rx = rx_bytes(pid)
            if rx is not None:
                self.points.append((now, rx - self.rx_before))
                if self.cpu_at_first_mib is None and rx - self.rx_before >= MiB:
                    self.cpu_at_first_mib = proc_cpu(pid)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
                self.threads = max(self.threads, len(tids))
                vol = invol = 0
                for tid in tids:
                    try:
                        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
                        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                        vol += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
                        invol += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
                    except (OSError, IndexError, ValueError, AttributeError):
                        continue
                    self.task_cpu[int(tid)] = cpu
                self.ctx = (max(self.ctx[0], vol), max(self.ctx[1], invol))
            except OSError:
                pass
            self._stop.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def timeline(self, size: int, expected_rate: float) -> dict:
        """Where the wall time went, from the received-bytes curve (wire bytes scaled to ``size``)."""
        pts = self.points
        if len(pts) < 2 or pts[-1][1] <= 0:
            return {}
        total = max(p[1] for p in pts)
        scale = size / total if total > size else 1.0  # headers: the wire carries a few % more

        def first(fraction: float) -> float | None:
            for t, b in pts:
                if b * scale >= fraction * size:
                    return round(t, 2)
            return None

        out = {"first_MiB_s": next((round(t, 2) for t, b in pts if b >= MiB), None),
               "t50_s": first(0.5), "t90_s": first(0.9), "t99_s": first(0.99),
               "last_byte_s": next(round(t, 2) for t, b in pts if b >= total - 64 * 1024)}
        t10 = out["t10_s"] = first(0.1)
        if t10 is not None and out["first_MiB_s"] is not None:
            # ramp-up: from the first MiB to 10 % of the file, against the ideal rate
            out["ramp_to_10pct_of_ideal"] = round((0.1 * size - MiB) / expected_rate
                                                  / max(t10 - out["first_MiB_s"], 1e-3), 3)
        if t10 is not None and out["t90_s"] is not None and out["t90_s"] > t10:
            steady = 0.8 * size / (out["t90_s"] - t10)
            out["rate_10_to_90pct_of_ideal"] = round(steady / expected_rate, 3)
        # the longest run of samples at under a quarter of the expected aggregate rate,
        # after the first MiB and before 99 %
        start = out["first_MiB_s"] or 0
        end = out["t99_s"] or pts[-1][0]
        worst, run_start = (0.0, None), None
        for (t0, b0), (t1, b1) in zip(pts, pts[1:]):
            slow = t0 >= start and t1 <= end and (b1 - b0) / max(t1 - t0, 1e-6) < expected_rate / 4
            if slow and run_start is None:
                run_start = t0
            if (not slow or t1 >= end) and run_start is not None:
                stop = t1 if slow else t0
                if stop - run_start > worst[0]:
                    worst = (stop - run_start, run_start)
                run_start = None
        if worst[0] > 0:
            out["longest_stall_s"] = round(worst[0], 2)
            out["stall_from_s"] = round(worst[1], 2)
        return out


# -- the lab -----------------------------------------------------------------------------------
class Bench:
    """The lab (origin with nginx, discovery, requester m0, helpers m1.., curl, aria, fast hosts)."""

    def __init__(self, work: Path, hosts: int, *, secret_file: Path | None = None,
                 lan_rate_mbit: float | None = None, access_log: Path | None = None):
        """``hosts`` machines m0.. capped at CAP_MBIT towards the origin; with ``lan_rate_mbit``
        their LAN links too (both ways); with ``secret_file`` discovery and every node the
        cluster starts are members of a private pool; with ``access_log`` nginx logs what it
        sent (``bench.netns_mode.body_bytes_by_uri``)."""
        from bench.netns_mode import ensure_nginx, nginx_conf

        self.work = work
        self.access_log = access_log
        #: seconds `python3 -c "import requests"` takes here (row 5 measures it)
        self.requests_floor: float | None = None
        self.www = work / "www"
        self.www.mkdir(parents=True)
        self.net = netlab.Lab()
        self.cluster = Cluster(work, secret_file=secret_file)
        self.timed: list[Timed] = []
        try:
            origin = self.net.origin()
            self.origin_ip = origin.ip
            self.disc_host = self.net.host("disc")
            self.machines = [self.net.host(f"m{i}", uplink_rate_mbit=CAP_MBIT, lan_rate_mbit=lan_rate_mbit)
                             for i in range(hosts)]
            self.curl_host = self.net.host("curl", uplink_rate_mbit=CAP_MBIT)
            self.aria_host = self.net.host("aria", uplink_rate_mbit=CAP_MBIT)
            self.fast_host = self.net.host("fast")  # uncapped: the start-up row
            conf = work / "nginx.conf"
            conf.write_text(nginx_conf(work, self.www, [f"{origin.ip}:8080"], access_log=access_log))
            nginx = self.cluster.start([ensure_nginx(), "-c", str(conf), "-p", str(work)],
                                       name="nginx", prefix=origin.prefix)

            def nginx_up() -> bool:
                if nginx.popen.poll() is not None:
                    raise RuntimeError(f"nginx exited: {nginx.output()[-1500:]}")
                try:
                    return origin.http_get(f"http://{origin.ip}:{PORT}/none")[0] == 404
                except OSError:
                    return False

            wait_until(nginx_up, 20, "nginx", interval=0.1)
            self.cluster.discovery(host=self.disc_host.ip, port=5000, prefix=self.disc_host.prefix,
                                   extra=["-q"])
            self.dsc = f"{self.disc_host.ip}:5000"
            self.helpers: dict[int, Process] = {}
            self.equal: tuple | None = None  # (digest, curl s, aria2c s) of rows 2 and 3's file
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for t in self.timed:
            t.close()
        self.timed.clear()
        try:
            self.cluster.close()
        finally:
            self.net.close()

    def url(self, name: str) -> str:
        return f"http://{self.origin_ip}:{PORT}/{name}"

    def set_caps(self, rate_mbit: float, count: int) -> None:
        for host in [*self.machines[:count], self.curl_host, self.aria_host]:
            if host.uplink_rate_mbit != rate_mbit:
                host.set_uplink(rate_mbit)

    def peers(self) -> int:
        secret = ["--secret-file", str(self.cluster.secret_file)] if self.cluster.secret_file else []
        out = self.disc_host.call([*program("node"), *secret, "--discovery", self.dsc, "peers"], timeout=30,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        return len(re.findall(r"\bh\d+\b", out))

    def use_helpers(self, count: int) -> list[Process]:
        """Exactly helpers 1..count running (machines m1..m<count>), registered with discovery."""
        for i in sorted(self.helpers):
            if i > count:
                self.helpers.pop(i).stop(10)  # SIGCONT, SIGTERM: it unregisters
        for i in range(1, count + 1):
            if i not in self.helpers:
                m = self.machines[i]
                d = self.work / f"h{i}"
                d.mkdir(exist_ok=True)
                self.helpers[i] = self.cluster.node(self.dsc, host=m.ip, port=6000, directory=d,
                                                    prefix=m.prefix, name=f"h{i}",
                                                    extra=["-q", "--allow-private"])
        wait_until(lambda: self.peers() == count, 60, f"{count} helpers registered", interval=0.3)
        return [self.helpers[i] for i in range(1, count + 1)]

    def baselines(self, name: str, size: int, timeout: float) -> tuple[float, float]:
        """curl on one host and ``aria2c -x4`` on another, at once (separate links): their seconds."""
        out = self.work / "base"
        out.mkdir(exist_ok=True)
        curl = Timed(["curl", "-s", "-f", "-o", str(out / "curl.bin"), self.url(name)],
                     prefix=self.curl_host.prefix)
        aria = Timed(["aria2c", "-x4", "-q", "--allow-overwrite=true", "--auto-file-renaming=false",
                      "-d", str(out), "-o", "aria.bin", self.url(name)], prefix=self.aria_host.prefix)
        self.timed += [curl, aria]
        try:
            curl_s, aria_s = curl.wait(timeout), aria.wait(timeout)
            for f in ("curl.bin", "aria.bin"):
                got = (out / f).stat().st_size
                if got != size:
                    raise RuntimeError(f"{f}: {got} bytes, expected {size}")
            return curl_s, aria_s
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def get(self, name: str, size: int, digest: str, *, expected_rate: float, timeout: float,
            during=None, perf_helper: bool = False) -> dict:
        """``node.py get`` on m0, timed from spawn to exit; checks the file; the measurements."""
        out = self.work / "get-out"
        out.mkdir(exist_ok=True)
        report = self.work / "get.json"
        report.unlink(missing_ok=True)
        helper_pids = {i: p.pid for i, p in self.helpers.items()}
        # one second before: how busy the machine is without us, what idle helpers cost
        idle_cpu0 = sum(proc_cpu(pid) for pid in helper_pids.values())
        busy0, total0 = cpu_times()
        time.sleep(1.0)
        busy1, total1 = cpu_times()
        idle_helpers = sum(proc_cpu(pid) for pid in helper_pids.values()) - idle_cpu0
        busy_before = (busy1 - busy0) / max(total1 - total0, 1)
        helpers_cpu0 = {i: proc_cpu(pid) for i, pid in helper_pids.items()}
        busy0, total0 = cpu_times()
        rx0 = self.machines[0].traffic().received
        load_before = loadavg()
        proc = Timed([*program("node"), "-q", "--discovery", self.dsc, "get", self.url(name),
                      "--force", "-o", str(out / name), "--report", str(report)],
                     prefix=self.machines[0].prefix)
        self.timed.append(proc)
        sampler = Sampler(proc, rx0)
        perf = PerfStat(proc.pid, self.work)
        helper_perf = PerfStat(self.helpers[1].pid, self.work) if perf_helper and self.helpers else None
        try:
            if during:
                during(proc, sampler)
            wall = proc.wait(timeout)
        finally:
            sampler.stop()
            syscalls = perf.counts()
            helper_syscalls = helper_perf.counts() if helper_perf else {}
        busy1, total1 = cpu_times()
        data = json.loads(report.read_text())
        got = sha256(out / name)
        if got != digest:
            raise RuntimeError(f"WRONG FILE from swift: sha256 {got}, expected {digest}")
        shutil.rmtree(out)
        helpers_cpu = {i: proc_cpu(pid) - helpers_cpu0[i] for i, pid in helper_pids.items()}
        top = sorted(sampler.task_cpu.values(), reverse=True)
        return {
            "wall": wall, "inside": data["seconds"], "report": data, "cpu": proc.cpu,
            "threads_max": sampler.threads, "busiest_threads_cpu_s": [round(c, 2) for c in top[:4]],
            "ctx_switches": sampler.ctx, "helpers_cpu": helpers_cpu,
            "machine_busy": (busy1 - busy0) / max(total1 - total0, 1),
            "machine_busy_1s_before": busy_before, "idle_helpers_cpu_per_s": idle_helpers,
            "load": f"{load_before} -> {loadavg()}",
            "timeline": sampler.timeline(size, expected_rate),
            "cpu_startup": sampler.cpu_at_first_mib,
            "syscalls": per_mib(syscalls, size) if syscalls else {},
            "helper1_syscalls": per_mib(helper_syscalls, data["bytes_by_source"].get(
                f"{self.machines[1].ip}:6000", 0)) if helper_syscalls else {},
        }


def where(m: dict, size: int) -> dict:
    """The notes of one transfer row: the timeline, the requester's CPU, who sent what."""
    rep = m["report"]
    timeline = m["timeline"]
    if timeline.get("last_byte_s") is not None:
        timeline["exit_after_last_byte_s"] = round(m["wall"] - timeline["last_byte_s"], 2)
    notes = {"startup_s(wall-inside)": round(m["wall"] - m["inside"], 2), **timeline,
             "requester_cpu_s": round(m["cpu"], 2),
             "requester_cpu_s_per_GiB": round(m["cpu"] / (size / GiB), 2),
             "requester_cpu_before_first_MiB_s": None if m["cpu_startup"] is None else round(m["cpu_startup"], 2),
             "requester_cpu_s_per_GiB_after_first_MiB": None if m["cpu_startup"] is None else
             round((m["cpu"] - m["cpu_startup"]) / (size / GiB), 2),
             "requester_cpu_share_of_wall": round(m["cpu"] / m["wall"], 2),
             "threads_max": m["threads_max"], "busiest_threads_cpu_s": m["busiest_threads_cpu_s"],
             "ctx_vol_invol": list(m["ctx_switches"]),
             "machine_busy": round(m["machine_busy"], 2),
             "machine_busy_1s_before": round(m["machine_busy_1s_before"], 2),
             "swift_share_of_cores": round((m["cpu"] + sum(m["helpers_cpu"].values()))
                                             / ((os.cpu_count() or 1) * m["wall"]), 2),
             "helpers_cpu_s": round(sum(m["helpers_cpu"].values()), 2),
             "idle_helpers_cpu_s_per_s": round(m["idle_helpers_cpu_per_s"], 3),
             "MiB_by_source": {k: round(v / MiB, 1) for k, v in rep.get("bytes_by_source", {}).items()},
             "dropped_MiB": round(rep.get("dropped_bytes", 0) / MiB, 1)}
    if m["syscalls"]:
        notes["requester_syscalls"] = m["syscalls"]
    if m["helper1_syscalls"]:
        notes["helper_h1_syscalls_per_MiB_served"] = m["helper1_syscalls"]
    if rep.get("notices"):
        notes["notices"] = rep["notices"][:6]
    return notes


# -- rows --------------------------------------------------------------------------------------
def payload_rate(size: int, seconds: float) -> float:
    return size / seconds


def ceiling(b: Bench, res: Result, ideal: float) -> None:
    """Note the best ideal/wall any Python program that imports requests could reach."""
    if b.requests_floor is not None:
        res.notes["import_requests_s"] = round(b.requests_floor, 3)
        res.notes["ceiling_after_import_requests"] = round(ideal / (ideal + b.requests_floor), 3)


def row_equal(b: Bench, size: int, digest: str, curl_s: float, aria_s: float, repeat: int) -> list[Result]:
    b.set_caps(CAP_MBIT, 3)
    b.use_helpers(2)
    r = payload_rate(size, curl_s)
    ideal = size / (3 * r)
    rows = []
    for k in range(repeat):
        m = b.get("equal.bin", size, digest, expected_rate=3 * r, timeout=max(60, 10 * ideal))
        eff = ideal / m["wall"]
        res = Result("2", "64 MiB, 3 hosts, equal caps (wall, start-up included)", 3, size, CAP_MBIT,
                     m["wall"], "ideal/wall", eff, ">= 0.93", eff >= 0.93, inside=m["inside"],
                     ideal=ideal, curl=curl_s, aria2=aria_s, load=m["load"], notes=where(m, size))
        res.notes["inside_efficiency"] = round(ideal / m["inside"], 3)
        ceiling(b, res, ideal)
        rows.append(res)
        say(f"  row 2 run {k + 1}: {m['wall']:.2f} s wall ({m['inside']:.2f} inside), ideal {ideal:.2f} s, "
            f"{eff:.3f} of ideal; curl {curl_s:.2f} s, aria2c {aria_s:.2f} s")
    return rows


def row_unequal(b: Bench, size: int, digest: str, curl_s: float, aria_s: float, repeat: int) -> list[Result]:
    b.set_caps(CAP_MBIT, 3)
    b.use_helpers(2)
    b.machines[2].set_uplink(CAP_MBIT / 10)
    try:
        r = payload_rate(size, curl_s)
        ideal = size / (2.1 * r)
        rows = []
        for k in range(repeat):
            m = b.get("equal.bin", size, digest, expected_rate=2.1 * r, timeout=max(60, 10 * ideal))
            eff = ideal / m["wall"]
            res = Result("3", "64 MiB, 3 hosts, one at 1/10 cap", 3, size, CAP_MBIT, m["wall"], "ideal/wall",
                         eff, ">= 0.90", eff >= 0.90, inside=m["inside"], ideal=ideal, curl=curl_s,
                         aria2=aria_s, load=m["load"], notes=where(m, size))
            res.notes["inside_efficiency"] = round(ideal / m["inside"], 3)
            ceiling(b, res, ideal)
            rows.append(res)
            say(f"  row 3 run {k + 1}: {m['wall']:.2f} s wall ({m['inside']:.2f} inside), ideal {ideal:.2f} s, "
                f"{eff:.3f} of ideal; by source {res.notes['MiB_by_source']}")
        return rows
    finally:
        b.machines[2].set_uplink(CAP_MBIT)


def row_frozen(b: Bench, size: int, digest: str, curl_s: float, aria_s: float) -> Result:
    b.set_caps(CAP_MBIT, 4)
    helpers = b.use_helpers(3)
    victim = helpers[-1]
    r = payload_rate(size, curl_s)
    freeze_at = 1.0
    ideal = freeze_at + (size - 4 * r * freeze_at) / (3 * r)
    frozen: dict = {}
    victim_tx0 = tx_bytes(victim.pid) or 0

    def freeze(proc: Timed, sampler: Sampler) -> None:
        # 1 s after the first MiB reached the requester: every helper has a piece in flight
        first = wait_until(lambda: next((t for t, n in sampler.points if n >= MiB), None)
                           or (not proc.running and -1), 60, "the first MiB", interval=0.005)
        if first < 0:
            return
        wait_until(lambda: time.monotonic() - proc.started >= first + freeze_at or not proc.running, 5,
                   "1 s", interval=0.005)
        tx = tx_bytes(victim.pid)
        victim.send(signal.SIGSTOP)
        frozen["at"] = time.monotonic() - proc.started
        frozen["victim_sent_MiB"] = round((tx - victim_tx0) / MiB, 1) if tx is not None else None

    try:
        m = b.get("frozen.bin", size, digest, expected_rate=3 * r, timeout=max(90, 15 * ideal),
                  during=freeze)
    finally:
        victim.send(signal.SIGCONT)
        b.helpers.pop(3).stop(10)
    ratio = m["wall"] / ideal
    res = Result("1", "96 MiB, 4 hosts, a helper frozen (SIGSTOP) 1 s into the transfer", 4, size, CAP_MBIT, m["wall"],
                 "wall/ideal_left", ratio, "<= 1.3", ratio <= 1.3, inside=m["inside"], ideal=ideal,
                 curl=curl_s, aria2=aria_s, load=m["load"], notes=where(m, size))
    res.notes["frozen_at_s"] = round(frozen.get("at", 0), 3)
    res.notes["frozen_helper_had_sent_MiB"] = frozen.get("victim_sent_MiB")
    first = m["timeline"].get("first_MiB_s")
    if first is not None:
        res.notes["transfer_only_ratio((wall-first_MiB)/ideal)"] = round((m["wall"] - first) / ideal, 3)
    res.notes["ideal_all_on_3_s"] = round(size / (3 * r), 2)
    say(f"  row 1: {m['wall']:.2f} s wall, ideal for the machines left {ideal:.2f} s: {ratio:.2f}x; "
        f"timeline {m['timeline']}")
    return res


def row_wide(b: Bench, hosts: int, size: int, digest: str, curl_s: float, aria_s: float) -> Result:
    b.set_caps(WIDE_CAP_MBIT, hosts)
    t0 = time.monotonic()
    b.use_helpers(hosts - 1)
    started_helpers = time.monotonic() - t0
    r = payload_rate(size, curl_s)
    ideal = size / (hosts * r)
    m = b.get("wide.bin", size, digest, expected_rate=hosts * r, timeout=max(120, 10 * ideal),
              perf_helper=True)
    eff = ideal / m["wall"]
    res = Result("4", f"256 MiB, {hosts} hosts at {WIDE_CAP_MBIT} Mbit/s", hosts, size, WIDE_CAP_MBIT,
                 m["wall"], "ideal/wall", eff, ">= 0.93", eff >= 0.93, inside=m["inside"], ideal=ideal,
                 curl=curl_s, aria2=aria_s, load=m["load"], notes=where(m, size))
    res.notes["inside_efficiency"] = round(ideal / m["inside"], 3)
    ceiling(b, res, ideal)
    res.notes["helpers_start_s"] = round(started_helpers, 1)
    served = m["report"].get("bytes_by_source", {})
    per = []
    for i, cpu in m["helpers_cpu"].items():
        key = next((k for k in served if k.startswith(b.machines[i].ip + ":")), None)
        if key and served[key]:
            per.append(cpu / (served[key] / GiB))
    if per:
        res.notes["helper_cpu_s_per_GiB_served_mean"] = round(statistics.mean(per), 2)
    say(f"  row 4 ({hosts} hosts): {m['wall']:.2f} s wall ({m['inside']:.2f} inside), ideal {ideal:.2f} s, "
        f"{eff:.3f} of ideal; requester {res.notes['requester_cpu_s_per_GiB']} CPU s/GiB, "
        f"{m['threads_max']} threads, machine busy {m['machine_busy']:.0%}")
    return res


def import_times(args: Sequence[str], prefix: Sequence[str] = (), top: int = 8) -> list[tuple[str, float]]:
    """Where a command's imports spend their time (``python3 -X importtime``), ms cumulative.

    Listed: each module the script imports itself, and each package entered
    from another package (``requests`` from ``swift.http``, say): the
    boundaries at which a lazy import would save that time (nested entries
    count inside their parents too); then swift's three slowest modules by
    their own time.
    """
    _, err = timed_run([sys.executable, "-X", "importtime", *args], prefix=prefix, capture=True)
    entries = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            entries.append(((len(m.group(3)) - 1) // 2, m.group(4), int(m.group(2)) / 1000,
                            int(m.group(1)) / 1000))
    found, stack = [], []  # children are printed before their parent: walk backwards
    for depth, name, cumulative, _ in reversed(entries):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else None
        if parent is None or parent.split(".")[0] != name.split(".")[0]:
            found.append((name, round(cumulative, 1)))
        stack.append((depth, name))
    ours = sorted(((f"{name} (self)", round(own, 1)) for _, name, _, own in entries
                   if name.split(".")[0] == "swift"), key=lambda x: -x[1])[:3]
    return sorted(found, key=lambda x: -x[1])[:top] + ours


def row_startup(b: Bench, runs: int) -> list[Result]:
    rows = []
    load = loadavg()
    node = program("node")
    floor = statistics.median(timed_run([sys.executable, "-c", "pass"])[0] for _ in range(runs))
    # what any Python program that fetches with requests pays before its first line of work
    b.requests_floor = statistics.median(timed_run([sys.executable, "-c", "import requests"])[0]
                                         for _ in range(runs))
    help_cpu: list[float] = []
    helps = [timed_run([*node, "--help"], cpu=help_cpu)[0] for _ in range(runs)]
    med = statistics.median(helps)
    imports = import_times([*node[1:], "--help"])
    rows.append(Result("5a", "node.py --help (loopback)", 1, 0, None, med, "median s", med, "<= 0.15",
                       med <= 0.15, load=f"{load} -> {loadavg()}",
                       notes={"runs_s": [round(x, 3) for x in helps],
                              "cpu_s_median(user+sys)": round(statistics.median(help_cpu), 3),
                              "python_-c_pass_s": round(floor, 3),
                              "top_imports_ms": imports}))
    say(f"  row 5a: --help median {med:.3f} s (runs {[round(x, 3) for x in helps]}), "
        f"bare interpreter {floor:.3f} s; imports {imports}")

    size = 3 * MiB
    digest = make_file(b.www / "small.bin", size, seed=5)
    out = b.work / "small"
    out.mkdir()
    fast = b.fast_host.prefix
    refused = f"{b.disc_host.ip}:5999"  # nothing listens there: connection refused
    load = loadavg()
    netns_exec = statistics.median(timed_run(["true"], prefix=fast)[0] for _ in range(runs))

    get_cpu: list[float] = []

    def swift(extra: Sequence[str] = (), discovery: str = refused) -> float:
        s, _ = timed_run([*node, "-q", "--discovery", discovery, "get", b.url("small.bin"), "--force",
                          "-o", str(out / "s.bin"), *extra], prefix=fast, timeout=60,
                         cpu=get_cpu if not extra and discovery == refused else None)
        if sha256(out / "s.bin") != digest:
            raise RuntimeError("WRONG FILE from swift (3 MiB)")
        return s

    gets = [swift() for _ in range(runs)]
    nopeers = [swift(["--no-peers"]) for _ in range(runs)]
    curls = [timed_run(["curl", "-s", "-f", "-o", str(out / "c.bin"), b.url("small.bin")], prefix=fast)[0]
             for _ in range(runs)]
    arias = [timed_run(["aria2c", "-x4", "-q", "--allow-overwrite=true", "--auto-file-renaming=false",
                        "-d", str(out), "-o", "a.bin", b.url("small.bin")], prefix=fast)[0]
             for _ in range(runs)]
    # discovery on an address nobody answers (no ARP reply): how long the query waits
    try:
        blackhole = round(swift(discovery="10.213.0.250:5000"), 2)
    except RuntimeError as exc:
        blackhole = f"failed: {str(exc).splitlines()[0][:120]}"
    imports = import_times([*node[1:], "-q", "--discovery", refused, "get", b.url("small.bin"), "--force",
                            "-o", str(out / "s.bin")], prefix=fast)
    med = statistics.median(gets)
    curl_m, aria_m = statistics.median(curls), statistics.median(arias)
    rows.append(Result("5b", "get 3 MiB, discovery unreachable (refused), uncapped host", 1, size, None, med,
                       "median s", med, "<= 0.2", med <= 0.2, curl=curl_m, aria2=aria_m,
                       load=f"{load} -> {loadavg()}",
                       notes={"runs_s": [round(x, 3) for x in gets],
                              "cpu_s_median(user+sys)": round(statistics.median(get_cpu), 3),
                              "python_-c_pass_s": round(floor, 3),
                              "python_-c_import_requests_s": round(b.requests_floor, 3),
                              "no_peers_median_s": round(statistics.median(nopeers), 3),
                              "discovery_blackholed_s": blackhole,
                              "curl_runs_s": [round(x, 3) for x in curls],
                              "aria2_runs_s": [round(x, 3) for x in arias],
                              "ip_netns_exec_true_s": round(netns_exec, 3),
                              "top_imports_ms": imports}))
    say(f"  row 5b: get median {med:.3f} s (--no-peers {statistics.median(nopeers):.3f} s, discovery "
        f"black-holed {blackhole}); curl {curl_m:.3f} s, aria2c {aria_m:.3f} s; "
        f"ip netns exec alone {netns_exec:.3f} s; imports {imports}")
    shutil.rmtree(out)
    (b.www / "small.bin").unlink()
    return rows


# -- output ------------------------------------------------------------------------------------
def diagnose(r: Result) -> str:
    """One sentence per row: how the wall time splits, from the row's own measurements."""
    n = r.notes
    if r.row in ("5a", "5b"):
        imports = ", ".join(f"{k} {v:.0f} ms" for k, v in n.get("top_imports_ms", [])[:5])
        text = (f"{r.wall:.3f} s wall, {n.get('cpu_s_median(user+sys)', 0):.3f} s CPU; a bare interpreter "
                f"takes {n.get('python_-c_pass_s', 0):.3f} s here; imports (under -X importtime): {imports}")
        if r.row == "5b":
            text += (f"; `python3 -c 'import requests'` alone takes {n['python_-c_import_requests_s']:.3f} s "
                     f"here; with --no-peers {n['no_peers_median_s']:.3f} s; discovery on an address that never "
                     f"answers: {n['discovery_blackholed_s']} s")
        return text
    parts = []
    if n.get("ceiling_after_import_requests") is not None:
        parts.append(f"a Python program that imports requests could reach at most "
                     f"{n['ceiling_after_import_requests']:.3f} of ideal here (ideal / (ideal + the "
                     f"{n['import_requests_s']:.3f} s that `import requests` takes, row 5))")
    start = n.get("startup_s(wall-inside)")
    if start is not None:
        parts.append(f"start-up and exit (wall - inside) {start:.2f} s = {start / r.wall:.0%} of the wall")
    if "inside_efficiency" in n:
        parts.append(f"inside the download {n['inside_efficiency']:.3f} of ideal")
    if n.get("first_MiB_s") is not None:
        parts.append(f"first MiB at {n['first_MiB_s']} s")
    if n.get("ramp_to_10pct_of_ideal") is not None:
        parts.append(f"10 % at {n['t10_s']} s (rate from the first MiB to 10 % = "
                     f"{n['ramp_to_10pct_of_ideal']:.2f} of the ideal rate)")
    if n.get("rate_10_to_90pct_of_ideal") is not None:
        parts.append(f"rate from 10 % to 90 % = {n['rate_10_to_90pct_of_ideal']:.2f} of the ideal rate")
    if n.get("t99_s") is not None and n.get("last_byte_s") is not None:
        parts.append(f"the last 1 % took {n['last_byte_s'] - n['t99_s']:.2f} s")
    if n.get("exit_after_last_byte_s") is not None:
        parts.append(f"exit {n['exit_after_last_byte_s']:.2f} s after the last byte")
    if n.get("longest_stall_s"):
        parts.append(f"longest stall {n['longest_stall_s']} s from {n['stall_from_s']} s")
    if "transfer_only_ratio((wall-first_MiB)/ideal)" in n:
        parts.append(f"from the first MiB on {n['transfer_only_ratio((wall-first_MiB)/ideal)']:.2f}x the ideal; "
                     f"frozen at {n['frozen_at_s']} s after {n['frozen_helper_had_sent_MiB']} MiB from it")
    parts.append(f"requester {n['requester_cpu_s_per_GiB_after_first_MiB']} CPU s/GiB after start-up "
                 f"({n['requester_cpu_before_first_MiB_s']} s CPU before the first MiB), "
                 f"{n['threads_max']} threads, busiest {n['busiest_threads_cpu_s']} CPU s")
    sc = n.get("requester_syscalls")
    if sc:
        parts.append(f"per MiB: {sc['recv_per_MiB']:.0f} recv, {sc.get('pwrite_per_MiB', 0):.0f} pwrite, "
                     f"{sc['futex_per_MiB']:.0f} futex ({1024 / max(sc['recv_per_MiB'], 1):.1f} KiB per recv)")
    hs = n.get("helper_h1_syscalls_per_MiB_served")
    if hs:
        parts.append(f"a helper per MiB served: {hs['recv_per_MiB']:.0f} recv, {hs['send_per_MiB']:.0f} send "
                     f"({1024 / max(hs['send_per_MiB'], 1):.1f} KiB per data frame), "
                     f"{n.get('helper_cpu_s_per_GiB_served_mean', '?')} CPU s/GiB served")
    parts.append(f"machine {n['machine_busy']:.0%} busy ({n['machine_busy_1s_before']:.0%} the second before), "
                 f"swift {n['swift_share_of_cores']:.0%} of its cores")
    return "; ".join(parts)



def plot(csv_path: Path, png_path: Path) -> bool:
    """perf.png from perf.csv: each transfer row as a fraction of its ideal, with its
    goal and the ceiling ``import requests`` leaves (left), and its speed-up over
    curl and ``aria2c -x4`` on one host (right). False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is missing (pip install -r bench/requirements.txt): no plot written")
        return False
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["row"] in ("1", "2", "3", "4")]
    if not rows:
        return False
    labels, frac, goals, ceilings, vs_curl, vs_aria = [], [], [], [], [], []
    seen: dict[str, int] = {}
    for r in rows:
        notes = json.loads(r["notes"] or "{}")
        value, goal = float(r["value"]), float(r["goal"].split()[-1])
        short = {"1": f"1: frozen helper, {r['hosts']} hosts", "2": "2: 3 hosts, equal",
                 "3": "3: 3 hosts, one at 1/10"}.get(r["row"], f"4: {r['hosts']} hosts, 24 Mbit/s")
        seen[short] = seen.get(short, 0) + 1
        labels.append(short + (f" (run {seen[short]})" if seen[short] > 1 else ""))
        if r["row"] == "1":  # wall / ideal, lower is better: shown as ideal / wall
            frac.append(1 / value)
            goals.append(1 / goal)
        else:
            frac.append(value)
            goals.append(goal)
        ceilings.append(notes.get("ceiling_after_import_requests"))
        vs_curl.append(float(r["speedup_vs_curl"]) if r["speedup_vs_curl"] not in ("", "–") else 0.0)
        vs_aria.append(float(r["speedup_vs_aria2"]) if r["speedup_vs_aria2"] not in ("", "–") else 0.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2), dpi=100)
    y = list(range(len(rows)))[::-1]
    left.barh(y, frac, color=["tab:green" if f >= g else "tab:orange" for f, g in zip(frac, goals)])
    left.scatter(goals, y, marker="|", s=300, color="black", label="goal", zorder=3)
    pts = [(c, yy) for c, yy in zip(ceilings, y) if c]
    if pts:
        left.scatter(*zip(*pts), marker="x", color="tab:red", label="ceiling after import requests", zorder=3)
    left.set_yticks(y, labels)
    left.set_xlim(0.5, 1.05)
    left.set_xlabel("ideal / wall (wall clock, start-up included)")
    left.set_title("against the ideal (green: goal met)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8)
    left.grid(True, axis="x", alpha=0.3)
    height = 0.38
    right.barh([v + height / 2 for v in y], vs_curl, height, label="vs curl, one host")
    right.barh([v - height / 2 for v in y], vs_aria, height, label="vs aria2c -x4, one host")
    right.set_yticks(y, [""] * len(y))
    right.set_xlabel("speed-up (their time / swift's wall)")
    right.set_title("against one host's curl and aria2c")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8)
    right.grid(True, axis="x", alpha=0.3)
    fig.suptitle("swift on separate hosts (network namespaces, tc-capped uplinks): bench/netns_perf.py")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def write(results: list[Result], out: Path, header: list[str], skipped: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "perf.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "case", "hosts", "size_bytes", "cap_mbit", "wall_s", "inside_s", "ideal_s",
                    "metric", "value", "goal", "met", "curl_s", "aria2_s", "speedup_vs_curl",
                    "speedup_vs_aria2", "load", "notes"])
        for r in results:
            w.writerow([r.row, r.case, r.hosts, r.size, r.cap_mbit or "", f"{r.wall:.3f}",
                        fmt(r.inside, ".3f"), fmt(r.ideal, ".3f"), r.metric_name, f"{r.metric:.3f}", r.goal,
                        "MET" if r.met else "MISSED", fmt(r.curl, ".3f"), fmt(r.aria2, ".3f"),
                        fmt(r.vs_curl, ".2f"), fmt(r.vs_aria2, ".2f"), r.load, json.dumps(r.notes)])
    lines = [*header, "",
             "| row | case | hosts | wall s | inside s | ideal s | measure | value | goal | met | curl s | "
             "aria2c -x4 s | speed-up vs curl | vs aria2c |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append("| " + " | ".join([
            r.row, r.case, str(r.hosts), f"{r.wall:.2f}" if r.wall >= 1 else f"{r.wall:.3f}",
            fmt(r.inside), fmt(r.ideal), r.metric_name, f"{r.metric:.3f}" if r.metric < 10 else f"{r.metric:.1f}",
            r.goal, "**met**" if r.met else "**missed**",
            fmt(r.curl, ".2f" if (r.curl or 0) >= 1 else ".3f"), fmt(r.aria2, ".2f" if (r.aria2 or 0) >= 1 else ".3f"),
            fmt(r.vs_curl) + ("x" if r.vs_curl else ""), fmt(r.vs_aria2) + ("x" if r.vs_aria2 else "")]) + " |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    lines += ["", "## Where the time goes (measured in the same run)", ""]
    for r in results:
        try:
            lines.append(f"- **row {r.row}**, {r.case}: {diagnose(r)}.")
        except (KeyError, TypeError, ValueError) as exc:
            lines.append(f"- **row {r.row}**: (no diagnosis: {exc!r})")
    lines += ["", "### Raw notes", ""]
    for r in results:
        lines.append(f"- **row {r.row}** ({r.case}; load {r.load}): "
                     + "; ".join(f"{k} {json.dumps(v) if not isinstance(v, (int, float, str)) else v}"
                                 for k, v in r.notes.items()))
    if plot(out / "perf.csv", out / "perf.png"):
        lines += ["", "![each row against its ideal and goal; speed-up over curl and aria2c](perf.png)"]
    text = "\n".join(lines) + "\n"
    (out / "perf.md").write_text(text)
    say(text)


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller files: a smoke run")
    parser.add_argument("--rows", default="5,2,3,1,4", help="rows to run, in this order (default 5,2,3,1,4)")
    parser.add_argument("--wide", default="16,32,8", help="host counts of row 4, in this order (default 16,32,8)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of rows 2 and 3 (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot-only", action="store_true",
                        help="only draw OUT/perf.png from OUT/perf.csv (no root needed)")
    args = parser.parse_args()
    if args.plot_only:
        return 0 if plot(args.out / "perf.csv", args.out / "perf.png") else 1
    if not netlab.available():
        say(f"namespace mode unavailable: {netlab.unavailable_reason()}")
        return 1
    wanted = [x.strip() for x in args.rows.split(",") if x.strip()]
    q = 4 if args.quick else 1
    # An installed swift has its bytecode compiled; with PYTHONDONTWRITEBYTECODE set
    # and edited sources, every run would compile them again (about 50 ms here).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "swift"), str(ROOT / "node.py"),
                    str(ROOT / "discovery.py")], capture_output=True, timeout=120)
    started = time.monotonic()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="swift-perf-"))
    results: list[Result] = []
    skipped: list[str] = []
    wide_counts = [int(x) for x in args.wide.split(",") if x.strip()]
    bench = None
    try:
        bench = Bench(work, max(wide_counts) if "4" in wanted else 4)
        say(f"lab up in {time.monotonic() - started:.1f} s (load {loadavg()})")
        for row in wanted:
            if time.monotonic() - started > BUDGET - 120:
                skipped.append(f"row {row}: the {BUDGET // 60}-minute budget was nearly spent")
                continue
            say(f"row {row} (load {loadavg()}):")
            try:
                if row == "5":
                    results += row_startup(bench, 5)
                elif row in ("2", "3"):
                    size = 64 * MiB // q
                    if bench.equal is None:
                        digest = make_file(bench.www / "equal.bin", size, seed=2)
                        bench.set_caps(CAP_MBIT, 3)
                        bench.equal = (digest, *bench.baselines("equal.bin", size, 120))
                    fn = row_equal if row == "2" else row_unequal
                    results += fn(bench, size, *bench.equal, args.repeat)
                elif row == "1":
                    size = 96 * MiB // q
                    digest = make_file(bench.www / "frozen.bin", size, seed=1)
                    bench.set_caps(CAP_MBIT, 4)
                    base = bench.baselines("frozen.bin", size, 120)
                    results.append(row_frozen(bench, size, digest, *base))
                    (bench.www / "frozen.bin").unlink()
                elif row == "4":
                    size = 256 * MiB // q
                    digest = make_file(bench.www / "wide.bin", size, seed=4)
                    bench.set_caps(WIDE_CAP_MBIT, max(wide_counts))
                    base = bench.baselines("wide.bin", size, 300)
                    for n in wide_counts:
                        if time.monotonic() - started > BUDGET - 60:
                            skipped.append(f"row 4 with {n} hosts: budget spent")
                            continue
                        results.append(row_wide(bench, n, size, digest, *base))
                    (bench.www / "wide.bin").unlink()
                else:
                    skipped.append(f"row {row}: no such row")
            except (RuntimeError, TimeoutError, netlab.LabError) as exc:
                say(f"  row {row} FAILED: {exc}")
                skipped.append(f"row {row} failed: {str(exc).splitlines()[0][:200]}")
    finally:
        if bench:
            bench.close()
        shutil.rmtree(work, ignore_errors=True)
    header = [f"# swift in network namespaces: the namespace rows",
              "",
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}, code at {git_head()}, "
              f"{'quick' if args.quick else 'full'} run, {os.cpu_count()} CPUs (shared), "
              f"{time.monotonic() - started:.0f} s in all; load average {load_start} at the start, "
              f"{loadavg()} at the end.",
              f"Caps: {CAP_MBIT} Mbit/s per host (row 4: {WIDE_CAP_MBIT}), tc HTB on each host's traffic with "
              "the nginx origin; the LAN is uncapped. Ideal = from curl's rate on one host at the same cap "
              "in this run (row 1: 1 s at 4 hosts, the rest at 3; row 3: size / (2.1 x curl's rate)). "
              "wall = spawn to exit of `node.py get`; inside = the report's seconds (probe to rename). "
              "Speed-up = their time / swift's wall. `bench/netns_perf.py` made this file."]
    write(results, args.out, header, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
