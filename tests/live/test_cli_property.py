"""Both programs' command lines under generated argument vectors: a clear exit, never a traceback.

Each example runs ``discovery.py`` or ``node.py`` (no subcommand, ``get``,
``peers``, ``demo``) as a real process with stdin closed and options drawn
from hostile values: negative ports, 99999, ``abc``, ``http://HOST:PORT`` for
``--discovery``, sizes with unknown units, missing files, missing values,
unknown options, ``--help`` anywhere. It must exit by itself with a status
in {0, 1, 2, 130} and print no ``Traceback``.

Which vectors may start a daemon, and how that is kept bounded:

- an option left without its value swallows the subcommand's word
  (``--name get``) and starts a prompt node: every node vector carries
  ``--host 127.0.0.1``, and a prompt node the test ends with SIGTERM exits
  143 (128 + SIGTERM), a daemon 0;
- ``get`` and ``peers`` run to the end: their URL and discovery are
  loopback ports nothing listens on (127.0.0.1:1), so they fail fast.
- a server (``discovery.py``, ``node.py`` without a subcommand) is always run
  with ``--host 127.0.0.1`` and ``--serve-only``; if it is still running after
  its deadline it must have printed ``listening on`` (it is serving, which is
  right for the options it got), and it is then killed by PID. Still running
  without serving is a failure (a hang).
- ``demo`` is only ever run with ``--help`` or a bad value: a real demo runs
  for a minute (tests/live/test_demo.py covers it).

Host names are never looked up: a value that a program would take for one
(``http://127.0.0.1:5000`` before the argparse types refuse it, ``abc`` as a
source address) only goes into a vector that also holds ``--help``, so the
program exits while parsing (with status 2 on the bad value if it comes
first, or 0 for the help). No example can send a packet beyond this machine.
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
#: Values a program would resolve as a host name if it took them (see the docstring).
NAMES = {"http://127.0.0.1:5000", "http://localhost:5000/", "127.0.0.1:1:2", "abc", "999.1.1.1", "1.2.3"}
#: Arguments after which argparse stops: the program exits while parsing.
ENDS_PARSING = {"--help", "-h", "--no-such-option", "-Z", "--help=yes"}


def names_a_host(argv: list[str]) -> bool:
    return any(a in NAMES or a.split("=", 1)[-1] in NAMES for a in argv)


def paths(tmp: str) -> list[str]:
    """Paths a user might give: missing, a directory, a file, empty, unwritable."""
    return [f"{tmp}/missing/x", tmp, f"{tmp}/file", "", "/proc/version", f"{tmp}/new"]


def option(name: str, values: list[str]) -> st.SearchStrategy[list[str]]:
    """``name value``, ``name=value`` or ``name`` with its value missing."""
    value = st.sampled_from(values)
    return st.one_of(value.map(lambda v: [name, v]), value.map(lambda v: [f"{name}={v}"]), st.just([name]))


def common(tmp: str) -> list[st.SearchStrategy[list[str]]]:
    return [option("--port", PORTS), option("--secret-file", paths(tmp)),
            option("--pool", ["swift", "", "a b", "x" * 40, "é", "-x", "pool=1"]),
            st.sampled_from([["-v"], ["-q"], ["-qq"], ["--version"], ["--no-zeroconf"]])]


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
    if names_a_host(argv) and not ENDS_PARSING & set(argv):
        argv.append("--help")
    if prog == "node" and not any(a.startswith("--discovery") for a in argv):
        argv = ["--discovery", "127.0.0.1:1", *argv]  # never the default: something may listen there
    if command is None:
        argv = ["--host", "127.0.0.1", *(["--serve-only"] if prog == "node" else []), *argv]
    elif prog == "node":
        # an option left without its value takes the subcommand's word as its value
        # (``--name get``): that vector starts a prompt node, which must listen on
        # loopback too
        argv = ["--host", "127.0.0.1", *argv]
    return prog, argv


def run(prog: str, argv: list[str], cwd) -> tuple[int | None, str, bool]:
    """Exit status (None if killed while serving), combined output, and whether
    it was serving and the test ended it with SIGTERM."""
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
                return proc.wait(10), proc.output(), True
            except Exception:  # noqa: BLE001 - it must still end; SIGKILL below
                return None, proc.output(), True
        return proc.wait(10), proc.output(), False
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
        code, out, terminated = run(prog, argv, scratch)
        assert "Traceback" not in out, f"{prog} {argv!r} printed a traceback:\n{out[-3000:]}"
        # a daemon ends 0 on our SIGTERM, a prompt node 143 (128 + SIGTERM, as a shell says it)
        allowed = {None, 0, 128 + signal.SIGTERM, -signal.SIGTERM} if terminated else ALLOWED
        assert code in allowed, f"{prog} {argv!r} exited {code}:\n{out[-2000:]}"
        if terminated:
            assert re.search(r"listening on", out), out

    check()
