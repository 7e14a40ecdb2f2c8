"""What a process on this machine holds, read from ``/proc`` (Linux only).

Used by the soak test, the memory benchmark and the live fuzzing: threads
(``/proc/PID/status`` ``Threads``), open file descriptors (the entries of
``/proc/PID/fd``), resident memory (``VmRSS``) and its peak since the
process started (``VmHWM``, "high water mark"; the kernel keeps it, so a
sampler that polls it only misses a peak reached in the last interval
before the process exits).

Reading another process's ``/proc`` entries needs the same user or root;
a process that has exited raises ``ProcessLookupError``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

#: How often a ``PeakSampler`` reads VmHWM. 50 ms costs well under 1 % of a
#: core for a dozen processes and is shorter than any allocation burst we
#: care about (a leak grows for seconds, not milliseconds).
SAMPLE_INTERVAL = 0.05


@dataclass(frozen=True)
class Usage:
    """One reading of a process: counts, and memory in bytes."""

    threads: int
    fds: int
    rss: int
    peak_rss: int


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}") from None


def _kib(value: str) -> int:
    """``'  123 kB'`` -> bytes."""
    number, unit = value.split()
    assert unit == "kB", unit
    return int(number) * 1024


def usage(pid: int) -> Usage:
    """Threads, fds, RSS and peak RSS of ``pid`` now."""
    status = _status(pid)
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}") from None
    return Usage(threads=int(status["Threads"]), fds=fds, rss=_kib(status.get("VmRSS", "0 kB")),
                 peak_rss=_kib(status.get("VmHWM", "0 kB")))


def peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` in bytes (its largest resident size so far)."""
    return _kib(_status(pid).get("VmHWM", "0 kB"))


class PeakSampler:
    """Polls the peak RSS of some processes on a thread of its own until ``stop()``.

    ``peaks[pid]`` is the largest VmHWM read while the process lived. With
    ``ceiling`` (bytes) and ``on_ceiling``, a process whose peak passes the
    ceiling is reported once (the memory benchmark kills it there, so a
    regression that grows without bound cannot take the machine with it).
    Use as a context manager; the thread is stopped and joined on exit.
    """

    def __init__(self, pids: Iterable[int] = (), *, interval: float = SAMPLE_INTERVAL,
                 ceiling: int | None = None, on_ceiling: Callable[[int, int], None] | None = None):
        self.interval = interval
        self.ceiling = ceiling
        self.on_ceiling = on_ceiling
        self.peaks: dict[int, int] = {}
        self.over: set[int] = set()
        self._pids: set[int] = set(pids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
        self._sample(pid)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _sample(self, pid: int) -> None:
        try:
            value = peak_rss(pid)
        except (ProcessLookupError, PermissionError):
            return
        with self._lock:
            if value > self.peaks.get(pid, 0):
                self.peaks[pid] = value
            crossed = self.ceiling is not None and value > self.ceiling and pid not in self.over
            if crossed:
                self.over.add(pid)
        if crossed and self.on_ceiling:
            self.on_ceiling(pid, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                pids = list(self._pids)
            for pid in pids:
                self._sample(pid)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
