#!/usr/bin/env python3
"""The long run of drawn servers: how many end with the right file, how many with a clear refusal.

    python3 bench/personalities.py                      # 2000 personalities, 3 at a time
    python3 bench/personalities.py --count 200 --seed 7 --time-limit 600
    python3 bench/personalities.py --helpers-every 10   # every 10th also with two helpers

Each personality (``swiftlab.personality``: range support, lengths, validators,
redirects, failures, content coding, and a size from 0 bytes to 3 MiB) is
drawn from ``--seed`` and served by a fresh origin for each client:

* ``node.py get --no-peers`` (and, every ``--helpers-every``-th, with two
  helpers): judged *right file* (exactly what a plain GET returns), *clear
  refusal* (non-zero, one ``error:`` line, no file at the final name), *wrong
  file*, *unclear* (a traceback or library text) or *hang* (past 120 s);
* one plain GET (one request, redirects followed, body as sent): does the
  server serve the file at all?
* for each refusal kind (the error line without its numbers), up to
  ``--compare`` of its personalities are given to curl and aria2c (where
  installed) with their own retries: do they get the right file there?

Prints the counts and writes them to bench/results/personalities.md. Exit
status 0 only if no run ended with a wrong file, an unclear line or a hang.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import urllib3.exceptions  # noqa: E402

from swiftlab.cluster import Cluster, program  # noqa: E402
from swiftlab.personality import (AXES, Personality, PersonalityOrigin, Verdict, judge,  # noqa: E402
                                  refusal_kind)

RESULTS = ROOT / "bench" / "results"
#: Seconds one client run may take before it counts as a hang.
DEADLINE = 240


def run_swift(p: Personality, work: Path, discovery: str | None = None) -> Verdict:
    out = work / "file.bin"
    with PersonalityOrigin(p) as origin:
        args = [*program("node"), "--discovery", discovery or "127.0.0.1:1", "--dir", str(work),
                "get", origin.url(), "-o", str(out), "--timeout", "2"]
        if discovery is None:
            args.append("--no-peers")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=DEADLINE)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            code = None
        return judge(code, output, out, origin.body)


def plain_get(p: Personality) -> bool:
    """One plain GET, as a browser would make it once: does it bring the file?"""
    with PersonalityOrigin(p) as origin, requests.Session() as session:
        try:
            with session.get(origin.url(), headers={"Accept-Encoding": "identity"}, stream=True,
                             timeout=(5, 5)) as resp:
                if resp.status_code != 200:
                    return False
                data = resp.raw.read(decode_content=False)
        except (requests.RequestException, OSError, urllib3.exceptions.HTTPError):
            return False
        return data == origin.body


def other_tool(tool: str, p: Personality, work: Path) -> bool | None:
    """Does ``tool`` (curl or aria2c, with its own retries) get the right file? None: not installed."""
    if shutil.which(tool) is None:
        return None
    out = work / f"{tool}.bin"
    with PersonalityOrigin(p) as origin:
        if tool == "curl":
            args = ["curl", "-sS", "-L", "--retry", "5", "--retry-all-errors", "--retry-delay", "1",
                    "--max-time", "60", "-o", str(out), origin.url()]
        else:
            args = ["aria2c", "-q", "-x4", "-s4", "--max-tries=5", "--retry-wait=1", "--timeout=5",
                    "--allow-overwrite=true", "--auto-file-renaming=false", "-d", str(work),
                    "-o", out.name, origin.url()]
        try:
            code = subprocess.run(args, capture_output=True, timeout=DEADLINE).returncode
        except subprocess.TimeoutExpired:
            return False
        return code == 0 and out.exists() and out.read_bytes() == origin.body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="personalities to draw (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="the draw's seed (default 1)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at once (default 3)")
    parser.add_argument("--helpers-every", type=int, default=0, metavar="K",
                        help="also run every K-th personality with two helpers (default: never)")
    parser.add_argument("--compare", type=int, default=3, metavar="M",
                        help="personalities per refusal kind given to curl and aria2c (default 3)")
    parser.add_argument("--time-limit", type=float, default=0, metavar="S",
                        help="draw no new personality after S seconds (default: none)")
    parser.add_argument("--out", type=Path, default=RESULTS / "personalities.md")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the Cluster kills its daemons by PID on the way
    # out; the runs not started yet are skipped
    stopping = threading.Event()

    def on_term(*_: object) -> None:
        stopping.set()
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random(args.seed)
    drawn = [Personality.draw(rng) for _ in range(args.count)]
    work = Path(tempfile.mkdtemp(prefix="swift-personalities-"))
    started = time.monotonic()
    lock = threading.Lock()
    results: list[tuple[Personality, str, Verdict, bool]] = []
    (work / "cluster").mkdir()
    try:
        with Cluster(work / "cluster") as cluster:
            discovery = None
            if args.helpers_every:
                disc = cluster.discovery()
                from tests.helpers import start_helpers
                start_helpers(cluster, disc, 2)
                discovery = f"127.0.0.1:{disc.port}"

            def one(i: int) -> None:
                if stopping.is_set() or args.time_limit and time.monotonic() - started > args.time_limit:
                    return
                p = drawn[i]
                modes = [("alone", None)]
                if discovery and (i + 1) % args.helpers_every == 0:
                    modes.append(("helpers", discovery))
                served = plain_get(p)
                for mode, where in modes:
                    d = work / f"{i}-{mode}"
                    d.mkdir(parents=True)
                    verdict = run_swift(p, d, where)
                    shutil.rmtree(d, ignore_errors=True)
                    with lock:
                        results.append((p, mode, verdict, served))
                        n = len(results)
                    if verdict.outcome != "right" or n % 50 == 0:
                        print(f"[{n}] {verdict.outcome} {mode}: {p.describe()} {verdict.detail[:200]}",
                              flush=True)

            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(one, range(len(drawn))))
        compared = compare(results, args.compare, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, compared, args, time.monotonic() - started)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    bad = sum(1 for _, _, v, _ in results if not v.acceptable)
    return 1 if bad else 0


def compare(results, per_kind: int, work: Path) -> dict[str, list[tuple[Personality, bool | None, bool | None]]]:
    by_kind: dict[str, list[Personality]] = defaultdict(list)
    for p, mode, verdict, _ in results:
        if verdict.outcome == "refused" and mode == "alone":
            by_kind[refusal_kind(verdict.detail)].append(p)
    out = {}
    for kind, ps in sorted(by_kind.items()):
        rows = []
        for p in ps[:per_kind]:
            d = work / "compare"
            d.mkdir(parents=True, exist_ok=True)
            rows.append((p, other_tool("curl", p, d), other_tool("aria2c", p, d)))
            shutil.rmtree(d, ignore_errors=True)
        out[kind] = rows
    return out


def report(results, compared, args, seconds: float) -> str:
    alone = [(p, v, s) for p, mode, v, s in results if mode == "alone"]
    helpers = [(p, v, s) for p, mode, v, s in results if mode == "helpers"]
    served = sum(1 for _, _, s in alone if s)
    right_served = sum(1 for _, v, s in alone if s and v.outcome == "right")
    lines = [
        "# Drawn servers (bench/personalities.py)",
        "",
        f"Seed {args.seed}, {len(alone)} personalities run alone"
        f"{f', {len(helpers)} of them also with two helpers' if helpers else ''}; "
        f"{seconds / 60:.0f} min with {args.jobs} at a time on a shared two-core machine.",
        "",
        "| outcome | alone | with two helpers |",
        "| --- | --- | --- |",
        f"| personalities tried | {len(alone)} | {len(helpers)} |",
        *(f"| {label} | {sum(v.outcome == key for _, v, _ in alone)} | "
          f"{sum(v.outcome == key for _, v, _ in helpers)} |"
          for key, label in (("right", "right file"), ("refused", "clear refusal"),
                             ("wrong", "wrong file (must be 0)"),
                             ("unclear", "unclear line or traceback (must be 0)"),
                             ("hang", "hang (must be 0)"))),
        "",
        f"A single plain GET serves the right file on {served} of {len(alone)} personalities; swift "
        f"gets the right file on {right_served} of those {served}, and on "
        f"{sum(1 for _, v, s in alone if not s and v.outcome == 'right')} of the "
        f"{len(alone) - served} where one plain GET does not (retries, ranges around failures).",
        "",
        "Right files by axis value (alone):",
        "",
        "| axis | value | right / tried |",
        "| --- | --- | --- |",
    ]
    for axis, values in AXES.items():
        for value in values:
            tried = [v for p, v, _ in alone if getattr(p, axis) == value]
            lines.append(f"| {axis} | {value} | {sum(v.outcome == 'right' for v in tried)} / {len(tried)} |")
    lines += ["", "Refusals by kind, and whether curl / aria2c (each with its own 5 tries) get the "
              "file on the same personality (a sample of each kind):", "",
              "| refusal kind | runs | curl | aria2c | a personality of the kind |", "| --- | --- | --- | --- | --- |"]
    counts = Counter(refusal_kind(v.detail) for _, v, _ in alone if v.outcome == "refused")
    for kind, rows in compared.items():
        def score(i: int) -> str:
            got = [r[i] for r in rows if r[i] is not None]
            return f"{sum(got)} of {len(got)}" if got else "not installed"
        lines.append(f"| {kind} | {counts[kind]} | {score(1)} | {score(2)} | {rows[0][0].describe()} |")
    bad = [(p, mode, v) for p, mode, v, _ in results if not v.acceptable]
    if bad:
        lines += ["", "Runs that broke the property:", ""]
        lines += [f"- {v.outcome} ({mode}): `{p!r}`: {v.detail}" for p, mode, v in bad]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
