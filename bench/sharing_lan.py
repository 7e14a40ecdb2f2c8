#!/usr/bin/env python3
"""LAN sharing on separate hosts whose LAN links are capped at 1 Gbit/s (root only).

    python3 -m bench.sharing_lan            # every row, a few minutes
    python3 -m bench.sharing_lan --quick    # small files: a smoke run
    python3 -m bench.sharing_lan --rows 1   # some rows only
    python3 -m bench.sharing_lan --rewrite   # the .md and .png again from the .json

The lab is ``bench.netns_perf.Bench``: every machine its own network
namespace, nginx as the origin, each machine's traffic with the origin
capped at ``UPLINK_MBIT`` with tc; here each machine's LAN link is capped
too, at ``LAN_MBIT`` each way (``netlab`` ``lan_rate_mbit``: what the
other machines send it and what it sends them). Every machine runs a node
with its own state directory, and every node and ``get`` has the pool's
secret (``--secret-file``): members talk TLS 1.3 (the private channel).

Rows (each measured in one run, its ratios printed):

1. **A second requester of a finished file** (1 GiB; ``--quick``: 128 MiB).
   Member A (m1) fetches it first (its uplink uncapped for that, to save
   time), so its node offers it; then member B (m0) runs ``get``. Measured:
   B's LAN payload rate against the LAN line rate (goal >= 0.9), from the
   first LAN byte to the last as A's ``eth0`` counted them; the time from
   B's download start to its first checked LAN byte (the report's
   ``first_lan_byte_s``, goal <= 0.2 s), and apart from it the time from
   B's spawn (interpreter and imports included) to the first 512 KiB on
   A's wire; the CPU seconds per GiB of A's node and of B's ``get``.
   Row 1p is the same without a secret (plain TCP, a lab of its own): what
   TLS costs (and row 2p, row 2 so). Row 4 is the CPU seconds of rows 1 and 1p (from wait4 for B,
   /proc for A's node; in the program and in the kernel).
2. **Four simultaneous requesters** of one file (256 MiB; quick 64): each
   machine starts ``get`` of the same URL at the same moment, the other
   three its pool. Measured: what nginx sent for that URL (its access log)
   over the file size (goal <= 1.1 copies), and each requester's wall time
   against a single requester's pooled time for the same file and pool,
   measured just before (goal each <= 1.15x).
3. **Sharing's cost to a first requester**: m0's pooled ``get`` of a file
   nobody holds, with sharing on and with ``--no-share``, interleaved,
   best of ``--repeat`` (3) each; goal: sharing on <= 1.05 x off.

What the line rate allows: the cap counts wire bytes (tc counts each
packet with its Ethernet, IP and TCP headers: 1514 bytes for 1448 of
payload with TCP timestamps, so at most 0.956 of the line rate is TCP
payload); TLS adds 22 bytes per 16 KiB record (0.13 %), swift's data frames
a few bytes per frame. The ratio in row 1 counts swift payload (file
bytes) only; the table also gives A's wire bytes per payload byte, as
measured by its LAN class.

The machine is shared (2 cores): each row notes the load average before
and after and the machine's busy fraction; a row that started under a
machine busier than ``HEAVY_BUSY`` in the second before it (while the
lab idles: other people's work; the load average would count this bench's
own previous row) is run again once (``--retries``) and the better run kept. Every file swift writes is checked against its sha256.
Results: bench/results/sharing_lan.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netns_mode import body_bytes_by_uri  # noqa: E402
from bench.netns_perf import (CAP_MBIT, GiB, MiB, RESULTS, Bench, cpu_times, git_head,  # noqa: E402
                              loadavg, proc_cpu, proc_cpu_split, say, tx_bytes)
from bench.timing import Timed, sha256  # noqa: E402
from swiftlab import netlab  # noqa: E402
from swiftlab.cluster import program, wait_until  # noqa: E402
from swiftlab.origin import make_file  # noqa: E402

#: Each machine's LAN link, each way: a gigabit switch port.
LAN_MBIT = 1000
#: Each machine's link with the origin: netns_perf's cap, so the rows compare.
UPLINK_MBIT = CAP_MBIT
#: TCP payload per wire byte that tc counts: 1448 bytes of payload (a 1500-byte MTU,
#: TCP timestamps on) in a 1514-byte frame (Ethernet header, no FCS or preamble).
TCP_PAYLOAD_SHARE = 1448 / 1514
#: A row that starts while the machine is busier than this (the share of all cores, in
#: the second before, our lab idle) is run again: other work took over half of it.
HEAVY_BUSY = 0.5
#: How often the LAN watcher reads the serving node's byte counter: fine enough to
#: time a first byte to a few ms, one /proc read each.
WATCH_INTERVAL = 0.005
#: Bytes on A's wire that mean "LAN data flows": past the ``held`` answer (64 hex
#: digits and a few bytes per 1 MiB piece: about 70 KiB for 1 GiB); 4 ms at line rate.
FIRST_BYTES = 512 << 10
#: Note keys the findings read.
WIRE_KEY = "wire_bytes_per_payload_byte(A's LAN class)"
SPAWN_KEY = "spawn_to_first_512KiB_on_A's_wire_s"
UPLINKS_KEY = "uplinks_busy(wire bytes / (4 links x cap x the slowest wall))"
FIRST_KEY = "origin_first_byte_s(after the first spawn)"
LAST_KEY = "origin_last_byte_s(after the first spawn)"
FULL_KEY = "origin_at_full_rate_share(of first to last, 0.25 s windows)"
UNTIL_KEY = "origin_full_rate_until_s(after the first spawn)"
#: Goals.
GOAL_LAN_RATE = 0.9
GOAL_FIRST_BYTE_S = 0.2
GOAL_COPIES = 1.1
GOAL_SIMULTANEOUS = 1.15
GOAL_SHARE_COST = 1.05


@dataclass
class Row:
    """One measure of the table; ``higher`` says which way the goal points."""

    row: str
    case: str
    measure: str
    value: float
    goal: float
    higher: bool
    load: str
    notes: dict = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher else self.value <= self.goal

    @property
    def of_goal(self) -> float:
        """The value as a fraction of its goal, turned so that >= 1 meets it."""
        if self.higher:
            return self.value / self.goal if self.goal else 0.0
        return self.goal / self.value if self.value else float("inf")


# -- pure helpers (tests/unit/test_bench_sharing_lan.py) --------------------------------------
def lan_span(points: list[tuple[float, int]], total: int,
             edge: int = FIRST_BYTES) -> tuple[float, float, float] | None:
    """(first, last, share): when a counter's curve ``points`` (seconds, bytes since the
    start) passed ``edge`` bytes, when it came within ``edge`` of ``total``, and the share
    of ``total`` that moved in between; None if it never did both."""
    first = next(((t, b) for t, b in points if b >= edge), None)
    last = next(((t, b) for t, b in points if b >= total - edge), None)
    if first is None or last is None or last[0] <= first[0]:
        return None
    return first[0], last[0], (last[1] - first[1]) / total


def line_share(payload: int, seconds: float, rate_mbit: float) -> float:
    """``payload`` bytes in ``seconds`` as a share of a ``rate_mbit`` line."""
    return payload / seconds / (rate_mbit * 1e6 / 8) if seconds > 0 else 0.0


def heavy(busy: float, limit: float = HEAVY_BUSY) -> bool:
    """Was the machine busier than ``limit`` (a share of all its cores)?"""
    return busy > limit


def busy_now(seconds: float = 1.0) -> float:
    """The share of the machine's cores busy over the next ``seconds`` (/proc/stat)."""
    before = cpu_times()
    time.sleep(seconds)  # a measuring window, not a wait for anything
    return machine_busy(before)


# -- measuring -----------------------------------------------------------------------------------
class TxWatch:
    """Bytes sent on ``eth0`` of the namespace ``pid`` lives in, every WATCH_INTERVAL, on a
    thread of its own: ``points`` are (seconds since ``since``, bytes since the start);
    ``cpu_at_first``: the CPU seconds of process ``cpu_of`` when FIRST_BYTES had gone out."""

    def __init__(self, pid: int, since: float):
        self.pid = pid
        self.since = since
        self.start = tx_bytes(pid) or 0
        self.points: list[tuple[float, int]] = []
        self.cpu_of: int | None = None
        self.cpu_at_first: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="txwatch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = tx_bytes(self.pid)
            if sent is not None:
                self.points.append((time.monotonic() - self.since, sent - self.start))
                if self.cpu_at_first is None and self.cpu_of and sent - self.start >= FIRST_BYTES:
                    self.cpu_at_first = round(proc_cpu(self.cpu_of), 2)
            self._stop.wait(WATCH_INTERVAL)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.points


class Members:
    """A node on each machine, each with its own state directory (the offered files)."""

    def __init__(self, bench: Bench, secret: Path | None):
        self.bench = bench
        self.secret = secret
        self.states = []
        self.nodes = []
        for i, m in enumerate(bench.machines):
            state = bench.work / f"state-m{i}"
            files = bench.work / f"files-m{i}"
            state.mkdir()
            files.mkdir()
            self.states.append(state)
            self.nodes.append(bench.cluster.node(bench.dsc, host=m.ip, port=6000, directory=files,
                                                 prefix=m.prefix, name=f"h{i}",
                                                 extra=["-q", "--allow-private"],
                                                 env={"SWIFT_STATE_DIR": str(state)}))
        wait_until(lambda: bench.peers() == len(self.nodes), 60, "every member registered", interval=0.3)

    def get(self, i: int, name: str, *extra: str) -> tuple[Timed, Path, Path]:
        """Start ``get`` of ``name`` on machine ``i`` (its state directory): (process, file, report)."""
        out = self.bench.work / f"out-m{i}"
        out.mkdir(exist_ok=True)
        target, report = out / name, out / f"{name}.json"
        m = self.bench.machines[i]
        secret = ["--secret-file", str(self.secret)] if self.secret else []
        proc = Timed([*program("node"), "-q", *secret, "--discovery", self.bench.dsc,
                      "get", self.bench.url(name), "--force", "-o", str(target), "--report", str(report),
                      *extra], prefix=[*m.prefix, "env", f"SWIFT_STATE_DIR={self.states[i]}"])
        self.bench.timed.append(proc)
        return proc, target, report


def finish(proc: Timed, target: Path, report: Path, digest: str, timeout: float) -> dict:
    """Wait for a ``get``; its report with ``wall`` and ``cpu`` added; the file checked, then removed."""
    wall = proc.wait(timeout)
    data = json.loads(report.read_text())
    got = sha256(target)
    if got != digest:
        raise RuntimeError(f"WRONG FILE from swift: {target.name} has sha256 {got}, expected {digest}")
    data["wall"], data["cpu"], data["cpu_user"] = wall, proc.cpu, proc.cpu_user
    return data


def origin_phases(points: list[tuple[float, int]], links_rate: float, spawn: float,
                  step: float = 0.25) -> dict:
    """When the origin sent, from its wire counter's curve (seconds since the watch began,
    bytes): its first and last bytes after the first spawn, and the share of that span in
    which it sent at >= 90 % of ``links_rate`` (all uplinks full), in ``step`` windows."""
    if len(points) < 2 or points[-1][1] <= 0:
        return {}
    total = points[-1][1]
    first = next(t for t, b in points if b > 64 * 1024)
    last = next(t for t, b in points if b >= total - 64 * 1024)
    full = windows = 0
    last_full = first
    at, i = first, 0
    while at + step <= last:
        while i < len(points) - 1 and points[i][0] < at:
            i += 1
        j = i
        while j < len(points) - 1 and points[j][0] < at + step:
            j += 1
        windows += 1
        if (points[j][1] - points[i][1]) / max(points[j][0] - points[i][0], 1e-9) >= 0.9 * links_rate:
            full += 1
            last_full = at + step
        at += step
    return {"origin_first_byte_s(after the first spawn)": round(first - spawn, 2),
            "origin_last_byte_s(after the first spawn)": round(last - spawn, 2),
            "origin_at_full_rate_share(of first to last, 0.25 s windows)": round(full / max(windows, 1), 2),
            "origin_full_rate_until_s(after the first spawn)": round(last_full - spawn, 2)}


def uplink_received(b: Bench) -> int:
    """Wire bytes the machines received from the origin so far (their uplink classes)."""
    return sum(m.shaped()["uplink"].received for m in b.machines)


def machine_busy(before: tuple[int, int]) -> float:
    busy, total = cpu_times()
    return round((busy - before[0]) / max(total - before[1], 1), 2)


# -- rows ------------------------------------------------------------------------------------------
class Profile:
    """``py-spy record`` of a running process into ``out`` (collapsed stacks, one line each);
    ``stop()`` makes it write (it also ends when the process does)."""

    def __init__(self, pid: int, out: Path):
        self.proc = Timed(["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                           "--output", str(out), "--nonblocking"]) if shutil.which("py-spy") else None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.running:
                os.kill(self.proc.pid, signal.SIGINT)
                self.proc._done.wait(20)
            self.proc.close()


def top_functions(collapsed: Path, count: int = 12) -> list[tuple[str, float]]:
    """The functions most samples of a py-spy ``raw`` file are in (self time), as shares."""
    totals: dict[str, int] = {}
    all_samples = 0
    try:
        text = collapsed.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        leaf = stack.split(";")[-1]
        totals[leaf] = totals.get(leaf, 0) + int(n)
        all_samples += int(n)
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:count]
    return [(name, round(n / max(all_samples, 1), 3)) for name, n in top]


def row_second_requester(b: Bench, members: Members, size: int, profile: Path | None = None) -> list[Row]:
    plain = members.secret is None
    channel, one, four = ("plain TCP, no secret", "1p", "4p") if plain else ("private channel", "1", "4")
    digest = make_file(b.www / "second.bin", size, seed=11)
    a, a_node = b.machines[1], members.nodes[1]
    a.set_uplink(None)  # A's own fetch is not measured: uncapped, it takes seconds, not minutes
    try:
        proc, target, report = members.get(1, "second.bin", "--no-peers")
        first = finish(proc, target, report, digest, 600)
    finally:
        a.set_uplink(UPLINK_MBIT)
    say(f"  A fetched it in {first['wall']:.1f} s; B starts (load {loadavg()})")
    load0, busy0 = loadavg(), cpu_times()
    a_cpu0, a_wire0 = proc_cpu_split(a_node.pid), a.shaped()["lan"].sent
    log_at = b.access_log.stat().st_size
    started = time.monotonic()
    watch = TxWatch(a_node.pid, started)
    profiles = [Profile(a_node.pid, profile / f"serving-node-{one}.txt")] if profile else []
    proc, target, report = members.get(0, "second.bin")
    spawn_lag = proc.started - started
    watch.cpu_of = proc.pid
    if profile:
        profiles.append(Profile(proc.pid, profile / f"requester-get-{one}.txt"))
    try:
        data = finish(proc, target, report, digest, 600)
    finally:
        points = watch.stop()
        for prof in profiles:
            prof.stop()
    for name in ("serving-node", "requester-get") if profile else ():
        say(f"    py-spy, {name} (self time): {top_functions(profile / f'{name}-{one}.txt')}")
    a_user, a_sys = (after - before for after, before in zip(proc_cpu_split(a_node.pid), a_cpu0))
    a_cpu = a_user + a_sys
    a_wire = a.shaped()["lan"].sent - a_wire0
    load = f"{load0} -> {loadavg()}"
    lan = sum(data["lan_bytes"].values())
    if lan < 0.95 * size:
        raise RuntimeError(f"B took only {lan} of {size} bytes from the LAN: {data.get('notices')}")
    total = points[-1][1] if points else 0
    span = lan_span(points, total)
    if span is None:
        raise RuntimeError("A's wire counter never showed the copy")
    rate = line_share(lan * span[2], span[1] - span[0], LAN_MBIT)  # the payload that moved meanwhile
    origin = body_bytes_by_uri(b.access_log, log_at).get("/second.bin", 0)
    inside_rate = line_share(lan, data["seconds"] - data["first_lan_byte_s"], LAN_MBIT)
    notes = {"size_MiB": size // MiB, "lan_MiB": round(lan / MiB, 1),
             "internet_MiB": round(data["internet_bytes"] / MiB, 2), "spot_checks": data["spot_checks"],
             "origin_MiB_for_B(nginx)": round(origin / MiB, 2),
             "lan_seconds(A's wire, first to last)": round(span[1] - span[0], 3),
             "lan_share_report(first LAN byte to the end of the download)": round(inside_rate, 3),
             WIRE_KEY: round(a_wire / lan, 4),
             "payload_ceiling(tc counts TCP/IP/Ethernet headers)": round(TCP_PAYLOAD_SHARE, 3),
             "b_wall_s": round(data["wall"], 2), "b_inside_s": round(data["seconds"], 2),
             "machine_busy": machine_busy(busy0)}
    spawn_to_first = span[0] - spawn_lag
    gib = lan / GiB
    rows = [
        Row(one, f"second requester of {size // MiB} MiB, {channel}", "LAN payload / line rate",
            round(rate, 3), GOAL_LAN_RATE, True, load, notes),
        Row(one, f"second requester, {channel}: download start to first checked LAN byte",
            "first LAN byte, s (report)",
            data["first_lan_byte_s"], GOAL_FIRST_BYTE_S, False, load,
            {SPAWN_KEY: round(spawn_to_first, 3),
             "spawn_to_exit_s": round(data["wall"], 2)}),
        Row(four, f"CPU per GiB, serving member A's node, {channel}", "CPU s / GiB served",
            round(a_cpu / gib, 2), 0, False, load,
            {"cpu_s": round(a_cpu, 2), "in_the_kernel_s": round(a_sys, 2)}),
        Row(four, f"CPU per GiB, requester B's get, {channel}", "CPU s / GiB fetched",
            round(data["cpu"] / gib, 2), 0, False, load,
            {"cpu_s": round(data["cpu"], 2), "in_the_kernel_s": round(data["cpu"] - data["cpu_user"], 2),
             "before_the_first_LAN_data_s": watch.cpu_at_first,
             "per_GiB_after_the_first_LAN_data": None if watch.cpu_at_first is None else
             round((data["cpu"] - watch.cpu_at_first) / gib, 2)}),
    ]
    (b.www / "second.bin").unlink()
    for r in rows:
        say(f"  {r.case}: {r.measure} {r.value}" + (f" (goal {r.goal})" if r.goal else ""))
    say(f"    spawn to first 512 KiB on A's wire {spawn_to_first:.3f} s; A's wire bytes per payload byte "
        f"{a_wire / lan:.4f}; the report's LAN phase gives {inside_rate:.3f}")
    return rows


def row_simultaneous(b: Bench, members: Members, size: int) -> list[Row]:
    digest = make_file(b.www / "four.bin", size, seed=12)
    for name in ("four-single.bin", "four-all.bin"):
        os.link(b.www / "four.bin", b.www / name)
    load0, busy0 = loadavg(), cpu_times()
    single = finish(*members.get(0, "four-single.bin"), digest, 600)
    say(f"  single pooled requester: {single['wall']:.2f} s (inside {single['seconds']:.2f} s)")
    uplinks0, busy_all0 = uplink_received(b), cpu_times()
    nodes0 = sum(proc_cpu(n.pid) for n in members.nodes)
    nginx = next(p for p in b.cluster.processes if p.name == "nginx")
    origin_watch = TxWatch(nginx.pid, time.monotonic())
    runs = [members.get(i, "four-all.bin") for i in range(len(members.nodes))]
    spread = max(p.started for p, _, _ in runs) - min(p.started for p, _, _ in runs)
    results = [finish(*run, digest, 600) for run in runs]
    origin_curve = origin_watch.stop()
    wire = uplink_received(b) - uplinks0
    crossed = wire * TCP_PAYLOAD_SHARE
    slowest = max(r["wall"] for r in results)
    swift_cpu = sum(r["cpu"] for r in results) + sum(proc_cpu(n.pid) for n in members.nodes) - nodes0
    load = f"{load0} -> {loadavg()}"
    sent = body_bytes_by_uri(b.access_log).get("/four-all.bin", 0)
    copies = sent / size
    worst = max(r["wall"] for r in results) / single["wall"]
    notes = {"size_MiB": size // MiB, "single_wall_s": round(single["wall"], 2),
             "single_inside_s": round(single["seconds"], 2),
             "walls_s": [round(r["wall"], 2) for r in results],
             "inside_s": [round(r["seconds"], 2) for r in results],
             "each_vs_single": [round(r["wall"] / single["wall"], 3) for r in results],
             "lan_MiB_each": [round(sum(r["lan_bytes"].values()) / MiB, 1) for r in results],
             "internet_MiB_each(report)": [round(r["internet_bytes"] / MiB, 1) for r in results],
             "starts_spread_s": round(spread, 3),
             "copies_that_crossed_the_uplinks(their wire bytes x 1448/1514)": round(crossed / size, 3),
             "single_origin_copies": round(body_bytes_by_uri(b.access_log).get("/four-single.bin", 0) / size, 3),
             UPLINKS_KEY:
                 round(wire / (len(results) * UPLINK_MBIT * 1e6 / 8 * slowest), 3),
             "swift_cpu_s(4 gets + 4 nodes)": round(swift_cpu, 1),
             "swift_share_of_the_cores": round(swift_cpu / ((os.cpu_count() or 1) * slowest), 2),
             "machine_busy_while_all_four_ran": machine_busy(busy_all0),
             **origin_phases(origin_curve, len(results) * UPLINK_MBIT * 1e6 / 8, runs[0][0].started - origin_watch.since),
             "machine_busy": machine_busy(busy0)}
    for name in ("four.bin", "four-single.bin", "four-all.bin"):
        (b.www / name).unlink()
    two = "2p" if members.secret is None else "2"
    channel = ", plain TCP, no secret" if members.secret is None else ""
    rows = [Row(two, f"four simultaneous requesters of {size // MiB} MiB{channel}", "origin bytes / file size",
                round(copies, 3), GOAL_COPIES, False, load, notes),
            Row(two, f"four simultaneous requesters{channel}: the slowest against one pooled requester",
                "wall / single wall", round(worst, 3), GOAL_SIMULTANEOUS, False, load,
                {"each_vs_single": notes["each_vs_single"]})]
    say(f"  origin sent {copies:.2f} copies; walls {notes['walls_s']} s against {single['wall']:.2f} s "
        f"(each {notes['each_vs_single']})")
    return rows


def row_share_cost(b: Bench, members: Members, size: int, repeat: int) -> list[Row]:
    digest = make_file(b.www / "first.bin", size, seed=13)
    load0, busy0 = loadavg(), cpu_times()
    times: dict[str, list[dict]] = {"on": [], "off": []}
    for k in range(repeat):
        for mode in ("on", "off"):  # interleaved: a change in load hits both alike
            name = f"first-{mode}-{k}.bin"  # a new URL each time: nobody holds it yet
            os.link(b.www / "first.bin", b.www / name)
            extra = ["--no-share"] if mode == "off" else []
            data = finish(*members.get(0, name, *extra), digest, 600)
            (b.www / name).unlink()
            times[mode].append(data)
            say(f"  sharing {mode}: {data['wall']:.2f} s (inside {data['seconds']:.2f} s, "
                f"{data['cpu']:.2f} CPU s)")
    (b.www / "first.bin").unlink()
    best = {mode: min(runs, key=lambda r: r["wall"]) for mode, runs in times.items()}
    ratio = best["on"]["wall"] / best["off"]["wall"]
    notes = {"size_MiB": size // MiB,
             "walls_on_s": [round(r["wall"], 2) for r in times["on"]],
             "walls_off_s": [round(r["wall"], 2) for r in times["off"]],
             "inside_on_s": [round(r["seconds"], 2) for r in times["on"]],
             "inside_off_s": [round(r["seconds"], 2) for r in times["off"]],
             "cpu_on_s": [round(r["cpu"], 2) for r in times["on"]],
             "cpu_off_s": [round(r["cpu"], 2) for r in times["off"]],
             "inside_ratio(best)": round(min(r["seconds"] for r in times["on"])
                                         / min(r["seconds"] for r in times["off"]), 3),
             "machine_busy": machine_busy(busy0)}
    say(f"  best on {best['on']['wall']:.2f} s, off {best['off']['wall']:.2f} s: {ratio:.3f}")
    return [Row("3", f"first requester of {size // MiB} MiB, pool of {len(members.nodes)}: sharing on / off",
                f"best-of-{repeat} wall ratio", round(ratio, 3), GOAL_SHARE_COST, False,
                f"{load0} -> {loadavg()}", notes)]


# -- output -------------------------------------------------------------------------------------------
def plot(rows: list[dict], png: Path) -> bool:
    """Each measure against its goal (left) and row 2's and 3's wall times (right);
    False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is missing (pip install -r bench/requirements.txt): no plot written")
        return False
    goals = [Row(**r) for r in rows if r["goal"]]
    if not goals:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * len(goals) + 2.5), dpi=100)
    y = list(range(len(goals)))[::-1]
    left.barh(y, [min(r.of_goal, 3) for r in goals],
              color=["tab:green" if r.met else "tab:orange" for r in goals])
    left.axvline(1.0, color="black", lw=1)
    left.set_yticks(y, [f"{r.row}: {r.measure}\n{r.value:g} (goal {'>=' if r.higher else '<='} {r.goal:g})"
                        for r in goals], fontsize=8)
    left.set_xlabel("against the goal (>= 1: met)")
    left.set_title("measured / goal (green: met)")
    left.grid(True, axis="x", alpha=0.3)
    bars, labels = [], []
    for r in rows:
        n = r["notes"]
        if r["row"] == "2" and "walls_s" in n:
            bars += [n["single_wall_s"], *n["walls_s"]]
            labels += ["2: single pooled", *[f"2: m{i} of 4 at once" for i in range(len(n["walls_s"]))]]
        if r["row"] == "3":
            bars += [min(n["walls_on_s"]), min(n["walls_off_s"])]
            labels += ["3: sharing on (best)", "3: --no-share (best)"]
    if bars:
        yy = list(range(len(bars)))[::-1]
        right.barh(yy, bars, color="tab:blue")
        right.set_yticks(yy, labels, fontsize=8)
        right.set_xlabel("wall seconds (spawn to exit)")
        right.set_title("rows 2 and 3: each requester's time")
        right.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"LAN sharing on a {LAN_MBIT} Mbit/s LAN, {UPLINK_MBIT} Mbit/s uplinks: bench/sharing_lan.py")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True


def findings(rows: list[Row]) -> list[str]:
    """Bullet lines that set this run's numbers side by side: what headers and TLS cost,
    where the start-up goes, what four requesters at once cost."""
    by = {(r.row, r.measure): r for r in rows}
    out = []
    for one, four in (("1", "4"), ("1p", "4p")):
        rate = by.get((one, "LAN payload / line rate"))
        if rate is None:
            continue
        n = rate.notes
        wire = n[WIRE_KEY]
        out.append(f"- Row {one}: {n['lan_MiB']:g} MiB over the LAN at {rate.value:g} of the line rate "
                   f"in payload; A's LAN class carried {wire:g} "
                   f"wire bytes per payload byte (Ethernet, IP and TCP headers, {1 / TCP_PAYLOAD_SHARE:.4f} "
                   f"alone; the rest: {'swift' if one == '1p' else 'TLS records, swift'}'s frames, the held "
                   f"answers B asks for four times a second), so the "
                   f"ceiling is about {1 / wire:.3f}. From the "
                   f"report's first LAN byte to the end of the download (spot check and rename included): "
                   f"{n['lan_share_report(first LAN byte to the end of the download)']:g}. The origin sent "
                   f"{n['origin_MiB_for_B(nginx)']:g} MiB for it (the probe, {n['spot_checks']} spot check(s)).")
        first = next((r for r in rows if r.row == one and r.measure.startswith("first LAN byte")), None)
        if first is not None:
            out.append(f"  First checked LAN byte {first.value:g} s after the download began; from the "
                       f"process's spawn (interpreter and imports included) the first 512 KiB left A after "
                       f"{first.notes[SPAWN_KEY]:g} s.")
    a, ap = by.get(("4", "CPU s / GiB served")), by.get(("4p", "CPU s / GiB served"))
    b_, bp = by.get(("4", "CPU s / GiB fetched")), by.get(("4p", "CPU s / GiB fetched"))
    if a and ap and b_ and bp:
        out.append(f"- TLS (the private channel) against plain TCP: the serving node {a.value:g} against "
                   f"{ap.value:g} CPU s per GiB, the requester {b_.value:g} against {bp.value:g} (its "
                   f"start-up included).")
    for two in ("2", "2p"):
        copies = by.get((two, "origin bytes / file size"))
        if copies is None:
            continue
        n = copies.notes
        out.append(f"- Row {two}: the four requesters cost the origin {copies.value:g} copies by nginx's count "
                   f"({n['copies_that_crossed_the_uplinks(their wire bytes x 1448/1514)']:g} by what crossed "
                   f"the uplinks; a single pooled requester {n['single_origin_copies']:g}); each took "
                   f"{', '.join(f'{x:g}' for x in n['each_vs_single'])} x the single requester's time; "
                   f"the origin sent from {n.get(FIRST_KEY, '?')} s to {n.get(LAST_KEY, '?')} s after the "
                   f"first spawn, at full rate (all uplinks) in {n.get(FULL_KEY, 0):.0%} of that span, the "
                   f"last time until {n.get(UNTIL_KEY, '?')} s (after it, the last pieces came slowly); "
                   f"the uplinks were {n[UPLINKS_KEY]:.0%} busy over the slowest wall, swift's eight processes used "
                   f"{n['swift_share_of_the_cores']:.0%} of the cores and the machine was "
                   f"{n['machine_busy_while_all_four_ran']:.0%} busy.")
    cost = next((r for r in rows if r.row == "3"), None)
    if cost is not None:
        n = cost.notes
        out.append(f"- Row 3: sharing on {min(n['walls_on_s']):g} s against off {min(n['walls_off_s']):g} s "
                   f"(best of each); CPU of the requester {min(n['cpu_on_s']):g}-{max(n['cpu_on_s']):g} s on, "
                   f"{min(n['cpu_off_s']):g}-{max(n['cpu_off_s']):g} s off: hashing and publishing cost CPU, "
                   f"not time, while the uplinks are the limit.")
    return out


def write(rows: list[Row], out: Path, header: list[str], skipped: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    raw = [asdict(r) for r in rows]
    (out / "sharing_lan.json").write_text(json.dumps({"header": header, "skipped": skipped, "rows": raw},
                                                     indent=1) + "\n")
    lines = [*header, "", "| row | case | measure | goal | measured | met | load (1, 5, 15 min) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        goal = f"{'>=' if r.higher else '<='} {r.goal:g}" if r.goal else "(reported)"
        met = ("**met**" if r.met else "**missed**") if r.goal else "–"
        lines.append(f"| {r.row} | {r.case} | {r.measure} | {goal} | {r.value:g} | {met} | {r.load} |")
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped)]
    reading = findings(rows)
    if reading:
        lines += ["", "### Reading the numbers (from this run)", "", *reading]
    lines += ["", "### Raw notes", ""]
    for r in rows:
        lines.append(f"- **row {r.row}**, {r.case}: "
                     + "; ".join(f"{k} {json.dumps(v)}" for k, v in r.notes.items()))
    if plot(raw, out / "sharing_lan.png"):
        lines += ["", "![each measure against its goal; rows 2 and 3 wall times](sharing_lan.png)"]
    text = "\n".join(lines) + "\n"
    (out / "sharing_lan.md").write_text(text)
    say(text)


def run_row(fn, *args, retries: int) -> list[Row]:
    """``fn(*args)``, again (up to ``retries`` times) when the machine was busy with other
    work as it started; the run whose first goal row did best is kept, and how busy the
    machine was before each run is noted."""
    kept: list[Row] | None = None
    before: list[float] = []
    values: list[list[float]] = []
    for attempt in range(retries + 1):
        before.append(busy_now())
        rows = fn(*args)
        values.append([r.value for r in rows])
        if kept is None or (rows[0].goal and rows[0].of_goal > kept[0].of_goal):
            kept = rows
        if not heavy(before[-1]) or attempt == retries:
            break
        say(f"  (the machine was {before[-1]:.0%} busy before this run: run again)")
    assert kept is not None
    kept[0].notes["machine_busy_1s_before_each_run"] = before
    if len(values) > 1:
        kept[0].notes["values_of_each_run"] = values
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small files: a smoke run")
    parser.add_argument("--rows", default="1,2,3,1p,2p", help="rows to run (default 1,2,3,1p,2p; row 4, the CPU "
                                                         "seconds, comes with row 1; 1p: row 1 without a "
                                                         "secret, plain TCP, in a lab of its own, last; 2p: row 2 so)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode in row 3 (default 3)")
    parser.add_argument("--retries", type=int, default=1, help="runs again of a row started under heavy load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy record the serving node and the requester of row 1 into DIR")
    parser.add_argument("--rewrite", action="store_true",
                        help="only write OUT/sharing_lan.md and .png again from OUT/sharing_lan.json "
                             "(no root needed)")
    args = parser.parse_args()
    if args.rewrite:
        try:
            saved = json.loads((args.out / "sharing_lan.json").read_text())
        except (OSError, ValueError) as exc:
            say(f"cannot read {args.out / 'sharing_lan.json'} ({exc}); run the bench first")
            return 1
        write([Row(**r) for r in saved["rows"]], args.out, saved["header"], saved["skipped"])
        return 0
    if not netlab.available():
        say(f"namespace mode unavailable: {netlab.unavailable_reason()}")
        return 1
    wanted = [x.strip() for x in args.rows.split(",") if x.strip()]
    big, medium = (128 * MiB, 64 * MiB) if args.quick else (GiB, 256 * MiB)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "swift"), str(ROOT / "node.py")],
                   capture_output=True, timeout=120)
    started = time.monotonic()
    load_start = loadavg()
    rows: list[Row] = []
    skipped: list[str] = []
    private = [r for r in wanted if not r.endswith("p")]
    for rows_here, plain in ((private, False), ([r for r in wanted if r.endswith("p")], True)):
        if not rows_here:
            continue
        work = Path(tempfile.mkdtemp(prefix="swift-sharing-lan-"))
        secret = None if plain else work / "secret"
        if secret is not None:
            secret.write_text(os.urandom(32).hex() + "\n")
            secret.chmod(0o600)
        bench = None
        try:
            bench = Bench(work, 4, secret_file=secret, lan_rate_mbit=LAN_MBIT, access_log=work / "access.log")
            members = Members(bench, secret)
            say(f"lab up{' (no secret)' if plain else ''} in {time.monotonic() - started:.1f} s "
                f"(load {loadavg()})")
            for row in rows_here:
                say(f"row {row} (load {loadavg()}):")
                try:
                    if row in ("1", "1p"):
                        rows += run_row(row_second_requester, bench, members, big, args.profile,
                                        retries=args.retries)
                    elif row in ("2", "2p"):
                        rows += run_row(row_simultaneous, bench, members, medium, retries=args.retries)
                    elif row == "3":
                        rows += run_row(row_share_cost, bench, members, medium, args.repeat,
                                        retries=args.retries)
                    else:
                        skipped.append(f"row {row}: no such row")
                except (RuntimeError, TimeoutError, netlab.LabError, OSError) as exc:
                    say(f"  row {row} FAILED: {exc}")
                    skipped.append(f"row {row} failed: {str(exc).splitlines()[0][:200]}")
        finally:
            if bench:
                bench.close()
            shutil.rmtree(work, ignore_errors=True)
    header = ["# LAN sharing on a capped LAN: bench/sharing_lan.py", "",
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}, code at {git_head()}, {'quick' if args.quick else 'full'} "
              f"run, {os.cpu_count()} CPUs (shared with other work), {time.monotonic() - started:.0f} s in all; "
              f"load average {load_start} at the start, {loadavg()} at the end.",
              f"Each machine its own network namespace; its LAN link capped with tc at {LAN_MBIT} Mbit/s "
              f"each way, its link with the nginx origin at {UPLINK_MBIT} Mbit/s. Every node and get has "
              "the pool's secret: members talk TLS 1.3. Rates count file bytes (payload): tc counts "
              f"Ethernet, IP and TCP headers against the cap, so TCP payload gets at most "
              f"{TCP_PAYLOAD_SHARE:.3f} of the line; TLS records add 0.13 %, swift's frames less.",
              "Goals: row 1 LAN payload >= 0.9 of the line rate and first checked LAN byte <= 0.2 s after "
              "the download's start; row 2 origin bytes <= 1.1 copies and each requester <= 1.15 x a "
              "single pooled requester; row 3 sharing on <= 1.05 x --no-share; row 4 (CPU) reported."]
    write(rows, args.out, header, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
