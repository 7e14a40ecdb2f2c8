"""Start real swift processes on this machine: for tests, the demo and the benchmark.

Every process is started in its own session and owned by a ``Cluster``,
which kills whatever is still running, by PID, when it closes (also on
Ctrl-C or a failed assertion). Waiting is always on a condition (a line
in the process's output) with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

#: The source checkout: ``discovery.py``, ``node.py``, ``swift/`` and ``swiftlab/``.
ROOT = Path(__file__).resolve().parent.parent


def _child_env(env: dict | None) -> dict:
    """The environment of a child: ours, unbuffered, with the checkout first on
    ``PYTHONPATH`` so ``python3 -m swiftlab.origin`` runs from any directory."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}


def program(name: str) -> list[str]:
    """The command that runs ``discovery.py`` / ``node.py`` from this checkout or install."""
    script = ROOT / f"{name}.py"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "swift", name]


def wait_until(condition: Callable[[], object], timeout: float, what: str = "condition",
               interval: float = 0.05):
    """Poll ``condition`` until it is truthy; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose combined output is collected line by line."""

    def __init__(self, args: Sequence[str], *, name: str, env: dict | None = None,
                 cwd: str | Path | None = None, stdin=subprocess.DEVNULL):
        self.name = name
        self.args = list(args)
        self.popen = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=stdin, text=True, bufsize=1, cwd=cwd,
                                      env=_child_env(env),
                                      start_new_session=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()
        self.port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before "
                                       f"printing /{pattern}/:\n{self.output()[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no /{pattern}/ within {timeout:g} s:\n"
                                       f"{self.output()[-3000:]}")
                self._cond.wait(min(left, 0.5))

    def send(self, sig: int) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL by PID (resumed first if frozen), and its process group with it.

        Each process was started in its own session, so its group id is its
        PID: the group kill also takes children it left behind (an nginx
        master's workers, say), which would otherwise hold our pipe open.
        """
        if self.popen.poll() is None:
            self.send(signal.SIGCONT)
            self.send(signal.SIGKILL)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us this
            pass
        self._reader.join(5)
        if self.popen.stdout and not self._reader.is_alive():
            # closing a pipe another thread still reads from would block on its lock
            self.popen.stdout.close()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit status."""
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class Cluster:
    """Owns a set of processes; closing it kills every one still alive."""

    def __init__(self, workdir: Path, *, secret_file: Path | None = None, prefix: Sequence[str] = ()):
        self.workdir = Path(workdir)
        self.secret_file = secret_file
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", "h1"]
        self.processes: list[Process] = []
        self._state_root: Path | None = None
        self._nodes = 0

    def _own_state(self, name: str | None) -> dict:
        """A node's own state directory, as each real machine has one: the lab's
        "machines" share one host, and a get must not take them for nodes of its
        own machine (``swift.local_nodes``). The same name gets the same one."""
        if self._state_root is None:
            self._state_root = Path(tempfile.mkdtemp(prefix="swift-lab-state-"))
        self._nodes += 1
        return {"SWIFT_STATE_DIR": str(self._state_root / (name or f"node-{self._nodes}"))}

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, args: Sequence[str], *, name: str, prefix: Sequence[str] | None = None,
              **kw) -> Process:
        """Start a process that :meth:`close` will kill.

        SIGINT and SIGTERM are held back from the moment of the fork until the
        process is on our list: a Ctrl-C in between (the demo's user, a test)
        would otherwise leave a child nobody kills, writing into a directory
        already removed. The child inherits the mask; swift's programs and the
        test origin unblock both signals first thing.
        """
        held = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            proc = Process([*(self.prefix if prefix is None else prefix), *args], name=name, **kw)
            self.processes.append(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return proc

    def discovery(self, *, host: str = "127.0.0.1", port: int = 0, lease: float | None = None,
                  extra: Sequence[str] = (), prefix: Sequence[str] | None = None) -> Process:
        args = [*program("discovery"), "--host", host, "--port", str(port), *extra]
        if lease is not None:
            args += ["--lease", str(lease)]
        if self.secret_file:
            args += ["--secret-file", str(self.secret_file)]
        proc = self.start(args, name="discovery", prefix=prefix)
        proc.port = int(proc.wait_for(r"listening on \S+:(\d+)").group(1))
        return proc

    def node(self, discovery: str, *, host: str = "127.0.0.1", port: int = 0, name: str | None = None,
             serve_only: bool = True, directory: Path | None = None, extra: Sequence[str] = (),
             prefix: Sequence[str] | None = None, stdin=subprocess.DEVNULL,
             env: dict | None = None) -> Process:
        directory = directory or self.workdir
        args = [*program("node"), "--discovery", discovery, "--host", host, "--port", str(port),
                "--dir", str(directory), *extra]
        if name:
            args += ["--name", name]
        if self.secret_file:
            args += ["--secret-file", str(self.secret_file)]
        if serve_only:
            args.append("--serve-only")
        if not (env and "SWIFT_STATE_DIR" in env):
            env = {**self._own_state(name), **(env or {})}
        proc = self.start(args, name=name or "node", prefix=prefix, stdin=stdin, env=env)
        proc.port = int(proc.wait_for(r"listening on \S+:(\d+)").group(1))
        return proc

    def get(self, discovery: str, url: str, *, extra: Sequence[str] = (), get_extra: Sequence[str] = (),
            prefix: Sequence[str] | None = None, env: dict | None = None) -> Process:
        args = [*program("node"), "--discovery", discovery, "--dir", str(self.workdir), *extra,
                "get", url, *get_extra]
        if self.secret_file:
            args[len(program("node")):len(program("node"))] = ["--secret-file", str(self.secret_file)]
        return self.start(args, name="get", prefix=prefix, env=env)

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.kill()
        self.processes.clear()
        if self._state_root is not None:
            shutil.rmtree(self._state_root, ignore_errors=True)
            self._state_root = None
