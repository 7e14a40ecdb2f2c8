"""The README's three-machine recipe, as a new user runs it: a fresh clone on each
of three hosts in network namespaces, then the README's own command lines.

The recipe ("Three machines, step by step") writes every command as
``machine$ command``. This test clones the repository once per machine (its
committed state, as a user gets it), reads those lines from the README and
runs each on its machine, in order, like one shell session per machine:

- ``export`` lines stay in force for that machine's later commands;
- ``discovery.py`` and ``--serve-only`` lines are daemons: started, and
  waited for until they listen;
- every other line must end with exit status 0.

Three things a namespace host cannot do as a real machine would are stood in
for, and nothing else: the placeholders ``HOST`` (kitchen's address), ``NAS``
(the origin host, serving a file made for the test) and ``HEX`` (its sha256)
are filled in; ``ssh M 'mkdir ...' && scp -p FILE M:PATH`` becomes a copy
into M's home directory with the same mode; and, since no package may come
from the internet, each new virtual environment is made without its bundled
pip and sees this interpreter's packages, pip included (a ``.pth`` file), and
its ``pip install`` gets ``--no-index``, so pip still checks requirements.txt,
against what is installed. The firewall lines
are not run (a namespace host has no firewall).

Each machine's internet link is capped at 40 Mbit/s, so the download is
worth sharing: it must arrive right (the README's ``--checksum`` and our own
sha256), with all three machines in the summary's "by machine".

Root only (skipped otherwise), and needs git. About 20 s under a load of 10 on two cores, most of it the
three installs and the start-up of five Python programs.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swiftlab import netlab
from swiftlab.cluster import ROOT, Cluster, Process, wait_until
from tests.helpers import MiB, sha256_file

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not netlab.available(), reason=netlab.unavailable_reason() or "no netns"),
              pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                 reason="needs git and a git checkout to clone")]

SECTION = "### Three machines, step by step"
MACHINES = ("desk", "kitchen", "attic")
RATE_MBIT = 40.0
ORIGIN_PORT = 8080
SIZE = "32M"
LINE = re.compile(rf"^\s*({'|'.join(MACHINES)})\$ (.+)$")
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
COPY = re.compile(r"^ssh (\w+) 'mkdir -p -m 700 (~/\S+)' && scp -p (\S+) (\w+):(\S+)$")


def recipe_lines() -> list[tuple[str, str]]:
    """``(machine, command)`` of every ``machine$ command`` line of the README's recipe."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"the README has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    return [(m.group(1), m.group(2).strip()) for line in section.splitlines() if (m := LINE.match(line))]


@dataclass
class Machine:
    """One of the recipe's machines: a namespace host, a home, a clone, a shell's exports."""

    host: netlab.Host
    home: Path
    exports: list[str] = field(default_factory=list)

    @property
    def checkout(self) -> Path:
        return self.home / "swift"

    def script(self, command: str, *, daemon: bool = False) -> str:
        return "; ".join([*self.exports, f"cd {shlex.quote(str(self.checkout))}",
                          ("exec " if daemon else "") + command])

    def argv(self, command: str, bin_dir: Path, *, daemon: bool = False) -> list[str]:
        """The command as a login shell on this machine would run it: a clean environment."""
        return [*self.host.prefix, "env", "-i", f"HOME={self.home}", f"PATH={bin_dir}:/usr/bin:/bin",
                "LANG=C.UTF-8", "bash", "-c", self.script(command, daemon=daemon)]


def offline_install(machine: Machine, command: str, bin_dir: Path) -> subprocess.CompletedProcess:
    """The README's install line, with no package from the internet (see the module docstring).

    ``python3 -m venv`` runs with ``--without-pip``: its bundled pip (``ensurepip``,
    4-5 s of CPU each) is replaced by this interpreter's, which the new
    environment sees through the ``.pth`` file, called as ``.venv/bin/pip``.
    """
    venv, pip = command.split(" && ")
    assert venv.endswith("-m venv .venv") and pip.startswith(".venv/bin/pip install "), command

    def run(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(machine.argv(cmd, bin_dir), capture_output=True, text=True, timeout=120)

    made = run(venv.replace("-m venv ", "-m venv --without-pip ", 1))
    if made.returncode:
        return made
    site = next(machine.checkout.glob(".venv/lib/python3*/site-packages"))
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "swift-test-offline.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    shim = machine.checkout / ".venv/bin/pip"
    shim.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    shim.chmod(0o755)
    return run(pip.replace("pip install ", "pip install --no-index ", 1))


def start_origin(cluster: Cluster, host: netlab.Host, root: Path) -> str:
    """The test origin on ``host``, serving ``big.iso``; returns its sha256."""
    proc = cluster.start([sys.executable, "-m", "swiftlab.origin", "--root", str(root), "--host", host.ip,
                          "--port", str(ORIGIN_PORT), "--make", f"big.iso:{SIZE}"],
                         name="origin", prefix=host.prefix, cwd=str(ROOT))
    proc.wait_for(r"origin listening", timeout=60)
    return next(m.group(1) for line in proc.lines if (m := re.match(r"made big\.iso sha256 ([0-9a-f]{64})", line)))


def test_readme_recipe_from_a_fresh_clone_gives_a_right_file_from_all_three_machines(tmp_path):
    lines = recipe_lines()
    kinds = {"install": 0, "daemon": 0, "peers": 0, "get": 0}
    for machine in MACHINES:
        assert (machine, INSTALL) in lines, f"the recipe installs on {machine} with {INSTALL!r}"
    bin_dir = tmp_path / "bin"  # `python3` on the machines' PATH: this interpreter
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)

    (tmp_path / "work").mkdir()
    with netlab.Lab() as lab, Cluster(tmp_path / "work") as cluster:
        origin = lab.origin()
        machines = {name: Machine(lab.host(name, uplink_rate_mbit=RATE_MBIT), tmp_path / name)
                    for name in MACHINES}
        digest = start_origin(cluster, origin, tmp_path / "nas")
        fill = {"HOST": machines["kitchen"].host.ip, "NAS": f"{origin.ip}:{ORIGIN_PORT}", "HEX": digest}

        # root may clone a checkout another user owns: git refuses that unless told it is safe
        git_config = tmp_path / "gitconfig"
        git_config.write_text("[safe]\n\tdirectory = *\n")
        git_env = {**os.environ, "GIT_CONFIG_GLOBAL": str(git_config)}
        for m in machines.values():
            m.home.mkdir()
            subprocess.run(["git", "clone", "-q", str(ROOT), str(m.checkout)], check=True, timeout=60, env=git_env)
        # the three installs are independent: run them side by side
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            installs = {name: pool.submit(offline_install, machines[name], cmd, bin_dir)
                        for name, cmd in lines if cmd == INSTALL}
            for name, future in installs.items():
                done = future.result()
                assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"
                kinds["install"] += 1

        daemons: list[Process] = []
        results: dict[str, subprocess.CompletedProcess] = {}
        for name, command in lines:
            m = machines[name]
            command = re.sub(r"\b(HOST|NAS|HEX)\b", lambda g: fill[g.group(1)], command)
            if command == INSTALL:
                continue
            if command.startswith("export "):
                m.exports.append(command)
            elif copy := COPY.match(command):
                target = machines[copy.group(1)]
                directory = target.home / copy.group(2).removeprefix("~/")
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                source = m.home / copy.group(3).removeprefix("~/")
                shutil.copy2(source, target.home / copy.group(5))
            elif "discovery.py" in command or "--serve-only" in command:
                proc = cluster.start(m.argv(command, bin_dir, daemon=True), name=f"{name}: {command}")
                proc.wait_for(r"listening on", timeout=60)
                daemons.append(proc)
                kinds["daemon"] += 1
            elif command.endswith("node.py peers"):
                def both_listed() -> subprocess.CompletedProcess | None:
                    out = subprocess.run(m.argv(command, bin_dir), capture_output=True, text=True, timeout=30)
                    listed = {row.split()[1] for row in out.stdout.splitlines() if len(row.split()) == 3}
                    return out if out.returncode == 0 and {"kitchen", "attic"} <= listed else None
                results["peers"] = wait_until(both_listed, 30, "kitchen and attic in `peers`", interval=0.3)
                kinds["peers"] += 1
            else:
                done = subprocess.run(m.argv(command, bin_dir), capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{name}$ {command}\n{done.stdout}\n{done.stderr}"
                if " get " in command:
                    results["get"] = done
                    kinds["get"] += 1
        assert kinds == {"install": 3, "daemon": 3, "peers": 1, "get": 1}, kinds

        secrets = {(m.home / ".config/swift/secret").read_bytes() for m in machines.values()}
        assert len(secrets) == 1 and len(secrets.pop().strip()) >= 32  # one secret, everywhere
        for proc in daemons:  # with it, every member talks over the private channel
            assert "no shared secret" not in proc.output(), proc.output()
        assert "no shared secret" not in results["get"].stderr

        got = results["get"]
        print(f"\n{results['peers'].stdout}{got.stdout}{got.stderr}")
        assert sha256_file(machines["desk"].checkout / "big.iso") == digest
        summary = re.search(r"by machine: ([^;\n]+)", got.stdout + got.stderr)
        assert summary, got.stdout + got.stderr
        by_machine = dict(re.fullmatch(r"(\S+) ([\d.]+) (\w+)", part.strip()).group(1, 2)
                          for part in summary.group(1).split(","))
        assert set(by_machine) == {"local", "kitchen", "attic"}, by_machine
        assert all(float(amount) > 0 for amount in by_machine.values()), by_machine
        assert "sha256 checksum verified" in got.stdout + got.stderr
        for proc in daemons:
            assert proc.stop() == 0, proc.output()  # SIGTERM: the normal stop
    assert lab.namespaces() == []


def test_the_recipe_names_each_step_the_test_runs():
    """The recipe's lines as the test reads them: a change to the README shows here first."""
    lines = recipe_lines()
    commands = [cmd for _, cmd in lines]
    assert sum(cmd == INSTALL for cmd in commands) == 3
    assert sum(bool(COPY.match(cmd)) for cmd in commands) == 2
    assert sum(cmd.startswith("export SWIFT_SECRET_FILE=") for cmd in commands) == 3
    assert ("kitchen", ".venv/bin/python discovery.py") in lines
    assert any(m == "desk" and "get http://NAS/" in cmd and "--checksum sha256:HEX" in cmd for m, cmd in lines)
