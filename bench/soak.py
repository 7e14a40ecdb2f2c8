#!/usr/bin/env python3
"""The full soak: 300 downloads in a row through one discovery and three helpers.

    python3 bench/soak.py                  # 300 downloads, about 6 minutes
    python3 bench/soak.py --downloads 60   # what CI runs (tests/live/test_soak.py)

Every download meets a fault (a reset, a 503, a stall, slow reads, a reset
of the requester's own range, or none, in turn); half-way one helper is
killed with SIGKILL and a new one started. Every file is checked against its
sha256. Each daemon's threads, open fds and RSS after the warm-up and at the
end are printed and written to bench/results/soak.md (see swiftlab/soak.py).
Exit status 0 only if every file was right and every daemon came back
within the margins.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlab.soak import run_soak  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--downloads", type=int, default=300, help="downloads in a row (default 300)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.md", help="results file (markdown)")
    args = parser.parse_args()
    if args.downloads < 4:
        parser.error("--downloads must be at least 4")
    work = Path(tempfile.mkdtemp(prefix="swift-soak-"))
    try:
        result = run_soak(work, args.downloads, say=lambda line: print(line, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join([
        f"# Soak: {args.downloads} downloads in a row ({time.strftime('%Y-%m-%d')})",
        "",
        "`python3 bench/soak.py` (see swiftlab/soak.py): one discovery and three `--serve-only` helpers",
        "on loopback, one `node.py get` after another of files of 1.25-3 MiB; every download meets",
        "a fault from the origin; half-way helper1 is killed with SIGKILL and replaced. Baselines are",
        "read after the warm-up (the replaced helper's after its own), the end figures once idle.",
        "",
        result.summary(),
        "",
        result.table(),
        "",
        *(["Failures:", "", *(f"- {f}" for f in result.failures), ""] if result.failures else []),
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"written to {args.out}")
    return 0 if not result.failures and result.settled else 1


if __name__ == "__main__":
    sys.exit(main())
