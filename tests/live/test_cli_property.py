"""Both programs' command lines under generated argument vectors: a clear exit, never a traceback.

Each example runs ``discovery.py`` or ``node.py`` (no subcommand, ``get``,
``peers``, ``demo``) as a real process with stdin closed and options drawn
from hostile values: negative ports, 99999, ``abc``, ``http://HOST:PORT`` for
``--discovery``, sizes with unknown units, missing files, missing values,
unknown options, ``--help`` anywhere. It must exit by itself with a status
in {0, 1, 2, 130} and print no ``Traceback``.

Which vectors may start a daemon, and how that is kept bounded:

- ``get`` and ``peers`` run to the end: their URL and discovery are
  loopback ports nothing listens on (127.0.0.1:1), so they fail fast.
- a server (``discovery.py``, ``node.py`` without a subcommand) is always run
  with ``--host 127.0.0.1`` and ``--serve-only``; if it is still running after
  its deadline it must have printed ``listening on`` (it is serving, which is
  right for the options it got), and it is then killed by PID. Still running
  without serving is a failure (a hang).
- ``demo`` is only ever run with ``--help`` or a bad value: a real demo runs
  for a minute (tests/live/test_demo.py covers it).

Host names are never drawn (only IP literals, ``localhost`` and malformed
text), so no example can make a program look a name up beyond this machine.
"""

from __future__ import annotations

import re
import signal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swiftlab.cluster import Process, program, wait_until

#: Statuses a program may end with: done, an error it explained, a usage
#: error (argparse), interrupted.
ALLOWED = {0, 1, 2, 130}
#: Seconds a program gets to exit by itself (or to start serving). Python
#: with requests imported starts in well under a second; the shared test
#: machine can be several times slower.
DEADLINE = 20.0

PORTS = ["-1", "0", "1", "65535", "65536", "99999", "abc", "", " 5000", "5e3", "0x10", "-0", "1" * 30]
HOSTPORTS = ["127.0.0.1:1", "127.0.0.1:abc", "127.0.0.1:-1", "127.0.0.1:99999", "127.0.0.1:",
             ":1", "[::1]:1", "[::1", "::1", "http://127.0.0.1:5000", "http://localhost:5000/",
             "127.0.0.1:1:2", "", "127.0.0.1:5000/path"]
NUMBERS = ["-1", "0", "1", "64", "65", "nan", "inf", "-inf", "abc", "", "1e999", "0.000001", "1" * 40]
SIZES = ["-1", "0", "1", "1K", "1.5M", "1Q", "abc", "", "1e999", "99999999999T", "K", "0x10", "nan"]
CHECKSUMS = ["sha256:" + "0" * 64, "crc32:abc", "sha256:xyz", ":", "", "sha256", "md5:" + "f" * 31]
URLS = ["http://127.0.0.1:1/x.bin", "http://[::1]:1/x", "ftp://127.0.0.1/x", "not a url", "",
        "http://127.0.0.1:99999/", "http://[::1", "file:///etc/passwd", "http://127.0.0.1:1/" + "a" * 9000]
JUNK = ["--no-such-option", "-Z", "--port=", "--", "-", "--help=yes", "\udcff", "é"]


def paths(tmp: str) -> list[str]:
    """Paths a user might give: missing, a directory, a file, empty, unwritable."""
    return [f"{tmp}/missing/x", tmp, f"{tmp}/file", "", "/proc/version", f"{tmp}/new"]


def option(name: str, values: list[str]) -> st.SearchStrategy[list[str]]:
    """``name value``, ``name=value`` or ``name`` with its value missing."""
    value = st.sampled_from(values)
    return st.one_of(value.map(lambda v: [name, v]), value.map(lambda v: [f"{name}={v}"]), st.just([name]))


def common(tmp: str) -> list[st.SearchStrategy[list[str]]]:
    return [option("--port", PORTS), option("--secret-file", paths(tmp)),
            st.sampled_from([["-v"], ["-q"], ["-qq"], ["--version"]])]


def node_options(tmp: str) -> list[st.SearchStrategy[list[str]]]:
    return common(tmp) + [option("--discovery", HOSTPORTS), option("--slots", NUMBERS),
                          option("--peer-timeout", NUMBERS), option("--dir", paths(tmp)),
                          option("--name", ["", "a\nb", "x" * 300, "é"]),
                          option("--advertise", ["127.0.0.1", "", "::1", "1.2.3"]),
                          option("--source-address", ["127.0.0.1", "", "::1", "999.1.1.1", "abc"]),
                          st.just(["--allow-private"])]


def get_options(tmp: str) -> list[st.SearchStrategy[list[str]]]:
    return [option("-o", paths(tmp)), option("--checksum", CHECKSUMS), option("--report", paths(tmp)),
            option("--piece-size", SIZES), st.sampled_from([["--force"], ["--restart"], ["--no-peers"]])]


@st.composite
def vectors(draw, tmp: str) -> tuple[str, list[str]]:
    """(program, argv): options from the tables above, shuffled, with junk sprinkled in."""
    prog = draw(st.sampled_from(["discovery", "node"]))
    if prog == "discovery":
        opts = common(tmp) + [option("--lease", NUMBERS)]
        argv = sum(draw(st.lists(st.one_of(opts), max_size=4)), [])
        command = None
    else:
        argv = sum(draw(st.lists(st.one_of(node_options(tmp)), max_size=5)), [])
        command = draw(st.sampled_from([None, "get", "peers", "demo"]))
        if command is not None:
            argv.append(command)
        if command == "get":
            argv += draw(st.sampled_from(URLS).map(lambda u: [u]) | st.just([]))
            argv += sum(draw(st.lists(st.one_of(get_options(tmp)), max_size=4)), [])
        elif command == "demo":
            argv += draw(st.sampled_from([["--help"], ["-h"], ["--size", "1Q"], ["--rate", "abc"],
                                          ["--size", "-1"], ["--rate"]]))
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(JUNK + ["--help", "-h"])))
    if prog == "node" and not any(a.startswith("--discovery") for a in argv):
        argv = ["--discovery", "127.0.0.1:1", *argv]  # never the default: something may listen there
    if command is None:
        argv = ["--host", "127.0.0.1", *(["--serve-only"] if prog == "node" else []), *argv]
    return prog, argv


def run(prog: str, argv: list[str], cwd) -> tuple[int | None, str]:
    """Exit status (None if killed while serving) and combined output."""
    proc = Process([*program(prog), *argv], name=prog, cwd=cwd,
                   env={"SWIFT_DISCOVERY": "", "SWIFT_SECRET_FILE": ""})
    try:
        try:
            wait_until(lambda: proc.popen.poll() is not None or "listening on" in proc.output(),
                       DEADLINE, f"{prog} {argv} to exit or serve")
        except TimeoutError:
            raise AssertionError(f"{prog} {argv!r} neither exited nor served within {DEADLINE:g} s:\n"
                                 f"{proc.output()[-2000:]}") from None
        if proc.popen.poll() is None:  # serving, as these options ask: stop it
            proc.send(signal.SIGTERM)
            try:
                return proc.wait(10), proc.output()
            except Exception:  # noqa: BLE001 - it must still end; SIGKILL below
                return None, proc.output()
        return proc.wait(10), proc.output()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "file").write_text("not a secret\n")
    return tmp


def test_generated_command_lines_end_clearly_without_a_traceback(scratch):
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(vectors(str(scratch)))
    def check(vector):
        prog, argv = vector
        code, out = run(prog, argv, scratch)
        assert "Traceback" not in out, f"{prog} {argv!r} printed a traceback:\n{out[-3000:]}"
        assert code is None or code in ALLOWED or code == -signal.SIGTERM, \
            f"{prog} {argv!r} exited {code}:\n{out[-2000:]}"
        if code is None or code == -signal.SIGTERM:
            assert re.search(r"listening on", out), out

    check()
