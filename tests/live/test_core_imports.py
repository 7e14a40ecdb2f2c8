"""The pure core imports no sockets, threads or clocks (DESIGN.md, "Layers").

Each core module is imported in a fresh interpreter in which importing
``socket``, ``threading``, ``time``, ``select``, ``ssl`` or ``requests`` raises
(a meta-path finder placed first, after those names are dropped from
``sys.modules``, since the interpreter itself may have loaded ``time`` at
start-up). A core module that pulls one in, directly or through anything it
imports, fails here with the chain that led to it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The pure core. A listed module whose file does not exist yet is skipped.
CORE = ["protocol", "handshake", "fetchjob", "auth", "planning", "names", "units", "addresses",
        "errors", "dnssd", "content", "metalink", "piecehash", "mirrors", "checksums"]
BLOCKED = ["socket", "threading", "time", "select", "ssl", "requests"]

PROBE = textwrap.dedent("""
    import sys, traceback
    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"core module imported {{name}}")
            return None

    for name in BLOCKED:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, Blocker())
    try:
        __import__("swift.{module}")
    except ImportError:
        traceback.print_exc()
        sys.exit(3)
    leaked = sorted(n for n in BLOCKED if n in sys.modules)
    if leaked:
        print("leaked:", leaked)
        sys.exit(4)
""")


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_sockets_threads_or_clocks(module):
    if not (ROOT / "swift" / f"{module}.py").exists():
        pytest.skip(f"swift/{module}.py does not exist yet")
    probe = PROBE.format(blocked=BLOCKED, module=module)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"swift.{module}:\n{result.stdout}{result.stderr}"


def test_the_blocker_catches_a_module_that_imports_a_clock():
    """The probe can fail: swift.wire (an I/O shell) imports socket, threading and time."""
    probe = PROBE.format(blocked=BLOCKED, module="wire")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 3 and "core module imported" in result.stderr


def test_help_and_usage_errors_load_neither_the_http_stack_nor_the_engine():
    """`node.py --help` and its usage errors must start at once (<= 0.15 s):
    requests alone costs about 0.1 s to import, the engine and the wire more."""
    probe = textwrap.dedent("""
        import sys
        from swift import cli
        cli.node_parser("node.py").format_help()
        heavy = sorted(m for m in ("requests", "urllib3", "ssl", "http.cookiejar", "swift.download",
                                   "swift.engine", "swift.wire", "swift.nodeapp", "zeroconf", "ifaddr",
                                   "swift.mdns") if m in sys.modules)
        print(heavy)
        sys.exit(1 if heavy else 0)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_get_without_peers_loads_none_of_the_peer_machinery():
    """Start-up counts against a one-link download's rate (bench/uncapped.py): the
    wire, the protocol, discovery's client and the job server cost about 80 ms of
    CPU to import and a ``get --no-peers`` never uses them."""
    probe = textwrap.dedent("""
        import sys
        from swift import cli, download, nodeapp
        peer_side = sorted(m for m in ("swift.protocol", "swift.wire", "swift.membership",
                                       "swift.fetchjob", "swift.handshake", "swift.node_server",
                                       "swift.server", "swift.engine.sources.peer")
                           if m in sys.modules)
        print(peer_side)
        sys.exit(1 if peer_side else 0)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
