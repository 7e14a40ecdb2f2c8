#!/usr/bin/env python3
"""Peak memory of the requester and the helpers on the paths that used to grow with the file.

    python3 bench/memory.py            # the three cases, about 3 minutes
    python3 bench/memory.py --quick    # smaller sizes, a smoke run

Cases ("bounded under every input"):

- ``checksum``: a 1 GiB download through three helpers whose ``--checksum``
  is wrong (the mismatch must be reported, the memory must not follow the
  file's size);
- ``fragments``: a resume from a record with 100,000 done fragments (2 KiB
  done, 2 KiB missing, over 400 MiB); the missing half is fetched, for at
  most ``FRAGMENTS_TIME`` seconds;
- ``64 helpers``: a 256 MiB download with 64 ``--serve-only`` helpers
  (``--slots 1``) on loopback.

Peak RSS is the kernel's high-water mark (``VmHWM`` in /proc/PID/status),
polled every 50 ms while the process lives (swiftlab/procstat.py). Bounds:
requester < 100 MiB, helper < 60 MiB. A requester that passes 1 GiB is
killed there (so a regression cannot take the machine) and reported as
such. Results: bench/results/memory.md, also printed. Exit status 0 only if
every case stayed within its bounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swift import storage  # noqa: E402
from swift.checksums import file_digest  # noqa: E402
from swift.membership import DiscoveryClient, DiscoveryError  # noqa: E402
from swiftlab.cluster import Cluster, Process, wait_until  # noqa: E402
from swiftlab.origin import OriginServer, make_file  # noqa: E402
from swiftlab.procstat import PeakSampler, mib  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
RESULTS = ROOT / "bench" / "results"
#: The bounds set for every path.
REQUESTER_BOUND = 100 * MiB
HELPER_BOUND = 60 * MiB
#: Where a requester is stopped: ten times its bound is a regression, not noise.
CEILING = 1 * GiB
#: Seconds the fragmented resume may run. Its memory is set when the record is
#: loaded and planned, in the first seconds, so a run stopped here still
#: measured what it is for (an engine that fetched 100,000 gaps one range
#: request each once took 56 s for 5,000 of them).
FRAGMENTS_TIME = 120.0


@dataclass
class Row:
    case: str
    detail: str
    requester_peak: int
    helper_peak: int | None
    seconds: float
    outcome: str

    @property
    def within(self) -> bool:
        return self.requester_peak < REQUESTER_BOUND and (self.helper_peak or 0) < HELPER_BOUND


def _live(port: int) -> int:
    try:
        return len(DiscoveryClient("127.0.0.1", port, name="bench", secret=None, timeout=2).list_peers())
    except DiscoveryError:
        return 0


def _helpers(cluster: Cluster, disc: Process, count: int, slots: int) -> list[Process]:
    nodes = []
    for k in range(count):
        d = cluster.workdir / f"helper{k}"
        d.mkdir(exist_ok=True)
        nodes.append(cluster.node(f"127.0.0.1:{disc.port}", name=f"helper{k}", directory=d,
                                  extra=["-q", "--allow-private", "--slots", str(slots),
                                         "--source-address", f"127.0.0.{k + 2}"]))
    wait_until(lambda: _live(disc.port) == count, 30 + count, f"{count} helpers to register")
    return nodes


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run_get(cluster: Cluster, disc: Process, url: str, helpers: list[Process], get_extra: list[str],
             timeout: float) -> tuple[int, int | None, float, str]:
    """(requester peak, largest helper peak, seconds, outcome) of one ``node.py get``."""
    def over(pid: int, value: int) -> None:
        print(f"  pid {pid} passed {mib(value)}: killing it", flush=True)
        os.kill(pid, signal.SIGKILL)

    with PeakSampler([h.pid for h in helpers]) as helper_sampler:
        started = time.monotonic()
        get = cluster.get(f"127.0.0.1:{disc.port}", url, extra=["-q", "--source-address", "127.0.0.1"],
                          get_extra=get_extra)
        with PeakSampler([get.pid], ceiling=CEILING, on_ceiling=over) as sampler:
            try:
                code = get.wait(timeout)
                last = _last_line(get.output())
                outcome = f"exit {code}" + (f": {last}" if last else "")
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: report and stop it
                outcome = f"still running after {timeout:g} s: stopped"
                get.kill()
        seconds = time.monotonic() - started
    if get.pid in sampler.over:
        outcome = f"killed at the {mib(CEILING)} ceiling"
    helper_peak = max((helper_sampler.peaks.get(h.pid, 0) for h in helpers), default=None)
    return sampler.peaks.get(get.pid, 0), helper_peak, seconds, outcome


def case_checksum(work: Path, origin: OriginServer, size: int) -> Row:
    make_file(origin.root / "big.bin", size, seed=91)
    with Cluster(work) as cluster:
        disc = cluster.discovery(extra=["-q"])
        helpers = _helpers(cluster, disc, 3, slots=4)
        peak, helper_peak, seconds, outcome = _run_get(
            cluster, disc, origin.url("/big.bin"), helpers,
            ["-o", str(work / "big.bin"), "--checksum", "sha256:" + "0" * 64], timeout=600)
    (origin.root / "big.bin").unlink()
    return Row("checksum", f"{size // MiB} MiB, wrong --checksum, 3 helpers", peak, helper_peak, seconds,
               outcome)


def _checked(outcome: str, path: Path, digest: str) -> str:
    """The outcome, with whether the file at ``path`` (if any) has the right sha256."""
    if not path.exists():
        return outcome
    return f"{outcome}; sha256 {'right' if file_digest(path, 'sha256') == digest else 'WRONG'}"


def case_fragments(work: Path, origin: OriginServer, fragments: int) -> Row:
    step, done_len = 4 * KiB, 2 * KiB
    size = fragments * step
    digest = make_file(origin.root / "frag.bin", size, seed=92)
    url = origin.url("/frag.bin")
    head = requests.head(url, timeout=10)
    final = work / "frag.bin"
    # the part file holds the right bytes everywhere; the record claims every other 2 KiB
    shutil.copyfile(origin.root / "frag.bin", storage.part_path(final))
    storage.ResumeRecord(version=storage.RECORD_VERSION, url=url, final_url=url, size=size,
                         etag=head.headers.get("ETag"), last_modified=head.headers.get("Last-Modified"),
                         done=[(i * step, i * step + done_len) for i in range(fragments)]
                         ).save(storage.record_path(final))
    with Cluster(work) as cluster:
        disc = cluster.discovery(extra=["-q"])
        peak, helper_peak, seconds, outcome = _run_get(cluster, disc, url, [],
                                                       ["-o", str(final), "--no-peers"],
                                                       timeout=FRAGMENTS_TIME)
    outcome = _checked(outcome, final, digest)
    (origin.root / "frag.bin").unlink()
    return Row("fragments", f"resume of {size // MiB} MiB from a record of {fragments:,} fragments"
               + ("" if final.exists() else " (did not finish)"), peak, None, seconds, outcome)


def case_many_helpers(work: Path, origin: OriginServer, helpers: int, size: int) -> Row:
    digest = make_file(origin.root / "wide.bin", size, seed=93)
    with Cluster(work) as cluster:
        disc = cluster.discovery(extra=["-q"])
        nodes = _helpers(cluster, disc, helpers, slots=1)
        peak, helper_peak, seconds, outcome = _run_get(
            cluster, disc, origin.url("/wide.bin"), nodes, ["-o", str(work / "wide.bin")], timeout=600)
    outcome = _checked(outcome, work / "wide.bin", digest)
    (origin.root / "wide.bin").unlink()
    return Row(f"{helpers} helpers", f"{size // MiB} MiB, {helpers} helpers with --slots 1", peak,
               helper_peak, seconds, outcome)


def table(rows: list[Row]) -> str:
    lines = ["| case | what | requester peak RSS | helper peak RSS (largest) | seconds | within bounds | outcome |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        helper = mib(r.helper_peak) if r.helper_peak is not None else "–"
        lines.append(f"| {r.case} | {r.detail} | {mib(r.requester_peak)} | {helper} | {r.seconds:.1f} | "
                     f"{'yes' if r.within else 'NO'} | {r.outcome.replace('|', '/')[:160]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--only", choices=["checksum", "fragments", "helpers"], action="append",
                        help="run only this case (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.md", help="results file (markdown)")
    args = parser.parse_args()
    cases = args.only or ["checksum", "fragments", "helpers"]
    work = Path(tempfile.mkdtemp(prefix="swift-memory-"))
    root = work / "origin"
    root.mkdir()
    rows: list[Row] = []
    origin = OriginServer(root, host="127.0.0.1", port=0).start()
    try:
        for case in cases:
            case_dir = work / case
            case_dir.mkdir()
            print(f"{case} ...", flush=True)
            if case == "checksum":
                row = case_checksum(case_dir, origin, 64 * MiB if args.quick else GiB)
            elif case == "fragments":
                row = case_fragments(case_dir, origin, 5_000 if args.quick else 100_000)
            else:
                row = case_many_helpers(case_dir, origin, 8 if args.quick else 64,
                                        32 * MiB if args.quick else 256 * MiB)
            print(f"  requester {mib(row.requester_peak)}, helpers "
                  f"{mib(row.helper_peak) if row.helper_peak is not None else '-'}, {row.seconds:.1f} s; "
                  f"{row.outcome}", flush=True)
            rows.append(row)
            shutil.rmtree(case_dir, ignore_errors=True)
    finally:
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join([
        f"# Peak memory ({time.strftime('%Y-%m-%d')}{', --quick' if args.quick else ''})",
        "",
        "`python3 bench/memory.py`: peak RSS (VmHWM, polled every 50 ms) of the requester and of the",
        f"largest helper, on loopback. Bounds: requester < {mib(REQUESTER_BOUND)}, "
        f"helper < {mib(HELPER_BOUND)}.",
        "",
        table(rows),
        "",
    ])
    print(text)
    if not args.quick or args.out != RESULTS / "memory.md":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    return 0 if all(r.within for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
