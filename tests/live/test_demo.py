"""The demo, run as a user would: it finishes, checks, and leaves nothing behind."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from swiftlab.cluster import Process, program, wait_until


def leftovers(workdir: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", workdir], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_demo_runs_and_cleans_up():
    proc = Process([*program("node"), "demo", "--size", "24M", "--rate", "8M"], name="demo")
    try:
        code = proc.wait(120)
        out = proc.output()
        assert code == 0, out
        assert out.count("sha256 ok") == 2
        m = re.search(r"speed-up with 4 machines: ([\d.]+)x", out)
        assert m and float(m.group(1)) > 1.0, out
        workdir = re.search(r"working in (\S+)\)", out).group(1)
        assert not Path(workdir).exists()
        assert leftovers(workdir) == []
    finally:
        proc.kill()


def test_demo_interrupted_leaves_nothing():
    proc = Process([*program("node"), "demo", "--size", "64M", "--rate", "4M"], name="demo")
    try:
        workdir = proc.wait_for(r"working in (\S+)\)", timeout=30).group(1)
        proc.wait_for(r"downloading alone", timeout=60)
        proc.send(signal.SIGINT)
        assert proc.wait(30) == 130, proc.output()
        assert "interrupted" in proc.output()
        wait_until(lambda: not leftovers(workdir), 10, "demo processes to be gone")
        assert not Path(workdir).exists()
    finally:
        proc.kill()
