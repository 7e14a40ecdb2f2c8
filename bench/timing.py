"""Timing a program from spawn to exit, and checking what it wrote: one way for every bench.

:class:`Timed` starts a child and takes its exit time and rusage the moment it
ends (a thread waits in ``wait4``), so a bench that samples the child meanwhile
(``netns_perf``'s ``Sampler``) or runs several at once gets each one's own wall
time; :func:`timed_run` runs one to completion. A run that fails or times out
raises ``RuntimeError`` with the end of the child's output. :func:`sha256` is
the check every bench makes of a file a tool wrote.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, hex, read 4 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


class Timed:
    """A child whose exit time and rusage are taken the moment it ends (a thread in wait4).

    Started in its own session so a kill by process group takes what it
    left behind; ``ip netns exec`` execs the command, so ``pid`` is the
    program's own PID. ``env``: the child's environment (default: this
    one's, with this checkout on ``PYTHONPATH``). After the end: ``cpu``
    (user + system seconds) and ``max_rss`` (peak resident bytes).
    """

    def __init__(self, args: Sequence[str], *, prefix: Sequence[str] = (), cwd: Path | None = None,
                 capture: bool = False, env: Mapping[str, str] | None = None):
        self.args = [*prefix, *args]
        self.stderr_path = Path(tempfile.mkstemp(prefix="swift-perf-", suffix=".err")[1])
        self._err = open(self.stderr_path, "w+b")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                      stdout=self._err if capture else subprocess.DEVNULL,
                                      stderr=self._err, cwd=cwd, start_new_session=True,
                                      env=dict(env) if env is not None
                                      else {**os.environ, "PYTHONPATH": str(ROOT)})
        self.pid = self.popen.pid
        self.ended: float | None = None
        self.status: int | None = None
        self.cpu: float | None = None
        self.cpu_user: float | None = None  # of ``cpu``: in the program (the rest: in the kernel)
        self.max_rss: int | None = None
        self._done = threading.Event()
        self._waiter = threading.Thread(target=self._wait, name=f"wait-{self.pid}", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        _, status, usage = os.wait4(self.pid, 0)
        self.ended = time.monotonic()
        self.status = os.waitstatus_to_exitcode(status)
        self.cpu = usage.ru_utime + usage.ru_stime
        self.cpu_user = usage.ru_utime
        self.max_rss = usage.ru_maxrss * 1024  # KiB on Linux
        self.popen.returncode = self.status
        self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float) -> float:
        """Wall seconds from spawn to exit; RuntimeError on a timeout or a non-zero exit."""
        if not self._done.wait(timeout):
            self.kill()
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(self.args)[:200]}\n"
                               f"{self.output()[-1500:]}")
        if self.status != 0:
            raise RuntimeError(f"exit {self.status}: {' '.join(self.args)[:200]}\n{self.output()[-1500:]}")
        return self.ended - self.started

    def output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.running:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            self._done.wait(10)

    def close(self) -> None:
        self.kill()
        self._err.close()
        self.stderr_path.unlink(missing_ok=True)


def timed_run(args: Sequence[str], *, prefix: Sequence[str] = (), timeout: float = 60,
              capture: bool = False, cpu: list | None = None,
              env: Mapping[str, str] | None = None) -> tuple[float, str]:
    """Run to completion; (wall seconds, combined output). Its CPU seconds go to ``cpu``."""
    t = Timed(args, prefix=prefix, capture=capture, env=env)
    try:
        wall = t.wait(timeout)
        if cpu is not None:
            cpu.append(t.cpu)
        return wall, t.output()
    finally:
        t.close()
