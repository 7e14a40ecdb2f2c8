"""Running the tests as root without network namespaces, as the README says: ``-m "not root"``.

Run as root, the README's test command builds network namespaces (the test
LANs of tests/netns/, and one empty namespace in tests/live/). The README
says so, and that ``-m "not root"`` leaves every one of them out. This
checks it the way it could go wrong, as root: every ``ip`` the collection
runs goes through a recording shim on ``PATH`` (the lab and the tests call
``ip`` by name), and each collected test's code and fixtures are searched for
a namespace. Collecting, not running: ``tests/netns/test_netns.py`` builds a
trial lab at import, so a collection that adds no namespace and selects no
test that would, runs none. A control collection without ``-m`` shows the
probe sees both kinds.

Root only (otherwise no namespace is ever built); about 10-15 s, a collection
of the whole suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlab.cluster import ROOT
from tests.helpers import is_root

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not is_root() or shutil.which("ip") is None, reason="needs root and iproute2")]

PROBE = '''
import inspect, os

def _source(fn):
    try:
        return inspect.getsource(fn) if fn else ""
    except (OSError, TypeError):
        return ""

def pytest_collection_finish(session):
    with open(os.environ["SWIFT_PROBE_OUT"], "w") as out:
        for item in session.items:
            code = [_source(getattr(item, "function", None))]
            fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
            code += [_source(d.func) for defs in fixtures.values() for d in defs]  # and what they use
            mark = "NS" if any(w in c for c in code for w in ("netns", "netlab")) else "--"
            marks = ",".join(sorted({m.name for m in item.iter_markers()})) or "-"
            out.write(f"{mark} {item.nodeid} {marks}\\n")
'''


def collect(tmp_path: Path, *args: str) -> tuple[list[str], list[str]]:
    """Collect with ``args`` through the ``ip`` shim: (the ``ip`` commands run, the selected tests)."""
    shim_dir, log, out = tmp_path / "bin", tmp_path / "ip.log", tmp_path / "items.txt"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "ip"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("ip")} "$@"\n')
    shim.chmod(0o755)
    (tmp_path / "swift_netns_probe.py").write_text(PROBE)
    for path in (log, out):
        path.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}", "SWIFT_PROBE_OUT": str(out),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "swift_netns_probe",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ip_commands = log.read_text().splitlines() if log.exists() else []
    return ip_commands, out.read_text().splitlines()


def test_not_root_collects_no_namespace_and_selects_no_test_that_builds_one(tmp_path):
    ip_commands, items = collect(tmp_path, "-m", "not root")
    assert not [c for c in ip_commands if c.startswith("netns add") or " netns add " in f" {c}"], ip_commands
    assert not [i for i in items if i.startswith("NS ")], [i for i in items if i.startswith("NS ")]
    assert len(items) > 1000, f"only {len(items)} tests selected"  # the rest of the suite still runs
    assert any("tests/live/" in i for i in items) and any("tests/unit/" in i for i in items)


def test_without_the_mark_the_probe_sees_namespaces_and_each_such_test_is_marked_root(tmp_path):
    """Control: without ``-m``, the same probe sees the trial lab and the namespace tests, and every
    test of tests/netns/ (which tests/netns/conftest.py leaves out whole) carries the ``root`` mark."""
    ip_commands, items = collect(tmp_path, "tests/netns", "tests/live/test_e2e.py")
    assert any(c.startswith("netns add") for c in ip_commands), ip_commands
    rows = [(line[:2], *line[3:].rsplit(" ", 1)) for line in items]  # a test id may hold spaces
    flagged = {nodeid.split("::")[-1] for mark, nodeid, _ in rows if mark == "NS"}
    assert {"test_dns_failure", "test_cut_cable_and_killed_node_mid_download"} <= flagged, flagged
    in_folder = [(nodeid, marks) for _, nodeid, marks in rows if nodeid.startswith("tests/netns/")]
    assert len(in_folder) >= 8, items
    assert all("root" in marks.split(",") for _, marks in in_folder), in_folder
    assert all("root" in marks.split(",") for mark, _, marks in rows if mark == "NS"), rows
