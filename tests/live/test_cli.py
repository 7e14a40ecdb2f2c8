"""The command lines of node.py and discovery.py, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from swift.demo import DEFAULT_SIZE
from swift.units import human_bytes
from swiftlab.cluster import program, wait_until
from swiftlab.origin import make_file

from tests.helpers import MiB, sha256_file


def run(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- usage errors ---------------------------------------------------------------------------
BAD_NODE_ARGS = [
    ["--port", "-1"], ["--port", "65536"], ["--port", "x"], ["--discovery", "127.0.0.1:abc"],
    ["--discovery", "http://127.0.0.1:5000"], ["--discovery", "[::1"], ["--slots", "0"],
    ["--slots", "65"], ["--peer-timeout", "0"], ["--peer-timeout", "-5"], ["--host", "a:b:c:d:z"],
    ["--source-address", "not-an-ip"], ["--advertise", "http://h"],
    ["get", "http://h/x", "--checksum", "sha256:nothex"], ["get", "http://h/x", "--slots", "-2"],
    ["get", "http://h/x", "--discovery", "h:0"], ["get"], ["demo", "--size", "12Q"],
    ["demo", "--rate", "0"], ["demo", "--size", "-1M"], ["peers", "--discovery", "https://h:1"],
    ["get", "http://h/x", "--piece-size", "lots"], ["nosuchcommand"],
]


@pytest.mark.parametrize("args", BAD_NODE_ARGS, ids=" ".join)
def test_a_bad_node_option_is_a_one_line_usage_error(args):
    out = run(*program("node"), *args)
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("node.py") and "error:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["--port", "99999"], ["--port", "-1"], ["--lease", "0"],
                                  ["--lease", "soon"], ["--host", "http://0.0.0.0"]], ids=" ".join)
def test_a_bad_discovery_option_is_a_one_line_usage_error(args):
    out = run(*program("discovery"), *args)
    assert out.returncode == 2, out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_a_url_given_as_discovery_says_what_to_type_instead():
    out = run(*program("node"), "--discovery", "http://10.1.2.3:5000", "peers")
    assert "give HOST:PORT without a scheme, e.g. '10.1.2.3:5000'" in out.stderr


# -- help --------------------------------------------------------------------------------
def test_node_help_mentions_the_prompt_and_lists_each_subcommand():
    out = run(*program("node"), "--help").stdout
    assert "prompt" in out
    for command in ("get", "peers", "demo"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in out.splitlines()), out


def test_demo_help_gives_the_real_default_size():
    out = run(*program("node"), "demo", "--help").stdout
    assert human_bytes(DEFAULT_SIZE) in " ".join(out.split())


# -- options where people put them, quiet and verbose ----------------------------------------
def test_options_work_after_the_subcommand_and_dir_is_created(cluster, origin, origin_root):
    digest = make_file(origin_root / "a.bin", 3 * MiB, seed=21)
    target = cluster.workdir / "new" / "deeper"
    out = run(*program("node"), "get", origin.url("/a.bin"), "--dir", str(target), "--slots", "2",
              "--no-peers", "-q", "--discovery", f"127.0.0.1:{closed_port()}")
    assert out.returncode == 0, out
    assert sha256_file(target / "a.bin") == digest
    assert (out.stdout, out.stderr) == ("", ""), "-q prints nothing on success"


def test_quiet_still_reports_errors_on_stderr(cluster, origin):
    out = run(*program("node"), "-q", "get", origin.url("/missing.bin"), "--no-peers",
              "-d", str(cluster.workdir))
    assert out.returncode == 1
    assert out.stdout == ""
    assert "404" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_verbose_shows_each_request_status_line_and_the_machine(cluster, origin, origin_root):
    make_file(origin_root / "v.bin", 2 * MiB, seed=22)
    out = run(*program("node"), "get", origin.url("/v.bin"), "-v", "--no-peers",
              "-d", str(cluster.workdir))
    assert out.returncode == 0, out
    lines = [line for line in out.stderr.splitlines() if '"GET /v.bin HTTP/1.1" 206' in line]
    assert lines and all(line.startswith("[local]") for line in lines), out.stderr


def test_the_missing_secret_is_one_short_line(cluster, origin, origin_root):
    make_file(origin_root / "s.bin", 4096, seed=23)
    out = run(*program("node"), "--discovery", f"127.0.0.1:{closed_port()}", "get", origin.url("/s.bin"),
              "-d", str(cluster.workdir))
    assert out.returncode == 0, out
    lines = [line for line in out.stderr.splitlines() if "no shared secret" in line]
    assert lines == ["note: no shared secret (--secret-file): discovery and peers are not authenticated"]


def test_the_summary_names_helpers_by_their_name_in_binary_units(cluster, origin, origin_root):
    digest = make_file(origin_root / "n.bin", 24 * MiB, seed=24)
    origin.configure(conn_rate=4 * MiB)
    disc = cluster.discovery()
    helper_dir = cluster.workdir / "h"
    helper_dir.mkdir()
    helper = cluster.node(f"127.0.0.1:{disc.port}", name="kitchen", directory=helper_dir,
                          extra=["--allow-private"])
    report = cluster.workdir / "r.json"
    code = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/n.bin"),
                       get_extra=["--report", str(report), "-v"])
    assert code.wait(60) == 0, code.output()
    assert sha256_file(cluster.workdir / "n.bin") == digest
    done = [line for line in code.output().splitlines() if line.startswith("done:")]
    assert len(done) == 1 and "kitchen " in done[0] and "MiB/s" in done[0], done
    assert "MB" not in done[0].replace("MiB", "")
    assert json.loads(report.read_text())["size"] == 24 * MiB
    # -v says which machine fetched which range, helpers by name
    assert f"kitchen (127.0.0.1:{helper.port}) fetched bytes " in code.output()


def test_the_progress_bar_uses_binary_units_and_this_runs_rate():
    import io
    from swift.cli import ProgressBar
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update(64 * MiB, 256 * MiB)  # resumed: 64 MiB were there before this run
    bar._bar.start_t -= 4.0  # as if this run had started four seconds ago
    bar._bar.last_print_t -= 4.0
    bar.update(96 * MiB, 256 * MiB)
    bar._bar.refresh()
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert line.startswith(" 38%|") and "96.0 MiB of 256.0 MiB at " in line, line
    rate = float(re.search(r"at ([0-9.]+) MiB/s", line).group(1))
    assert 7.5 < rate <= 8.0, line  # 32 MiB in 4 s: the resumed 64 MiB do not count
    assert "MB" not in line.replace("MiB", ""), line
    bar.close()


# -- signals -----------------------------------------------------------------------------
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_get_within_two_seconds_and_the_same_command_resumes(cluster, origin, origin_root,
                                                                           sig, status):
    digest = make_file(origin_root / "slow.bin", 32 * MiB, seed=25)
    origin.configure(conn_rate=MiB)
    argv = [*program("node"), "get", origin.url("/slow.bin"), "--no-peers", "-d", str(cluster.workdir)]
    proc = cluster.start(argv, name="get")
    record = cluster.workdir / "slow.bin.part.swift"

    def recorded() -> bool:
        try:
            return bool(json.loads(record.read_text()).get("done"))
        except (OSError, ValueError):
            return False

    wait_until(recorded, 20, "a resume record with data")
    started = time.monotonic()
    proc.send(sig)
    assert proc.wait(10) == status, proc.output()
    assert time.monotonic() - started < 2.0
    assert "Traceback" not in proc.output()
    assert "the partial download is kept in" in proc.output() and "error" not in proc.output()
    origin.configure(conn_rate=None)
    again = cluster.start(argv, name="again")
    assert again.wait(60) == 0, again.output()
    assert "resumed" in again.output()
    assert sha256_file(cluster.workdir / "slow.bin") == digest


def test_daemons_exit_130_on_ctrl_c_and_0_on_sigterm(cluster):
    disc = cluster.discovery()
    started = time.monotonic()
    disc.send(signal.SIGINT)
    assert disc.wait(5) == 130
    assert time.monotonic() - started < 2.0
    helper = cluster.node(f"127.0.0.1:{closed_port()}", name="alone")
    started = time.monotonic()
    helper.send(signal.SIGTERM)
    assert helper.wait(5) == 0
    assert time.monotonic() - started < 2.0


def test_sigterm_ends_a_node_within_two_seconds_when_discovery_hangs(cluster):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        proc = cluster.start([*program("node"), "--discovery", f"127.0.0.1:{silent.getsockname()[1]}",
                              "--host", "127.0.0.1", "--port", "0", "--serve-only",
                              "--dir", str(cluster.workdir)], name="stuck")
        proc.wait_for("listening on", timeout=20)
        started = time.monotonic()
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.output()
        assert time.monotonic() - started < 2.0


# -- what scripts expect ---------------------------------------------------------------------
def test_several_urls_and_a_list_file_one_after_another_with_a_summary_each(cluster, origin, origin_root):
    a = make_file(origin_root / "a.bin", 3 * MiB, seed=41)
    b = make_file(origin_root / "b.bin", 2 * MiB, seed=42)
    c = make_file(origin_root / "c.bin", 1000, seed=43)
    urls = cluster.workdir / "urls.txt"
    urls.write_text(f"# a list\n{origin.url('/b.bin')}\n\n   # indented comment\n"
                    f"{origin.url('/c.bin').removeprefix('http://')}\n")
    report = cluster.workdir / "r.json"
    out = run(*program("node"), "get", origin.url("/a.bin"), "-i", str(urls), "--no-peers",
              "-d", str(cluster.workdir / "d"), "--report", str(report))
    assert out.returncode == 0, out
    done = [line for line in out.stdout.splitlines() if line.startswith("done: ")]
    assert [line.split()[1].rsplit("/", 1)[1] for line in done] == ["a.bin", "b.bin", "c.bin"]
    for name, digest in (("a.bin", a), ("b.bin", b), ("c.bin", c)):
        assert sha256_file(cluster.workdir / "d" / name) == digest
    data = json.loads(report.read_text())
    assert [d["ok"] for d in data] == [True, True, True]


def test_one_failed_url_of_several_fails_the_command_and_is_in_the_report(cluster, origin, origin_root):
    make_file(origin_root / "ok.bin", 4096, seed=44)
    report = cluster.workdir / "r.json"
    out = run(*program("node"), "get", origin.url("/missing.bin"), origin.url("/ok.bin"), "--no-peers",
              "-d", str(cluster.workdir), "--report", str(report))
    assert out.returncode == 1, out
    assert (cluster.workdir / "ok.bin").exists(), "the next URL is still fetched"
    first, second = json.loads(report.read_text())
    assert first["ok"] is False and "404" in first["error"]
    assert second["ok"] is True


def test_a_complete_file_is_not_fetched_again(cluster, origin, origin_root):
    digest = make_file(origin_root / "same.bin", 2 * MiB, seed=45)
    argv = [*program("node"), "get", origin.url("/same.bin"), "--no-peers", "-d", str(cluster.workdir),
            "--checksum", f"sha256:{digest}"]
    first = run(*argv)
    assert first.returncode == 0 and "sha256 checksum verified" in first.stdout, first
    before = origin.stats()["requests_by_path"]["/same.bin"]
    again = run(*argv, "--report", str(cluster.workdir / "r.json"))
    assert again.returncode == 0, again
    assert again.stdout.startswith("already complete: ") and "sha256 checksum verified" in again.stdout
    assert sorted(p.name for p in cluster.workdir.iterdir()) == ["r.json", "same.bin"]
    data = json.loads((cluster.workdir / "r.json").read_text())
    assert data["already_complete"] is True and data["checksum_verified"] is True
    assert origin.stats()["requests_by_path"]["/same.bin"] == before + 1, "one probe, no data"


def test_already_complete_needs_proof_that_it_is_this_file(cluster, origin, origin_root):
    """Same name and size is no proof: another URL's file of that name, or the file
    replaced on the server by one of the same size, is fetched (under a free name)."""
    (origin_root / "a").mkdir()
    (origin_root / "b").mkdir()
    a = make_file(origin_root / "a" / "data.bin", 2 * MiB, seed=46)
    b = make_file(origin_root / "b" / "data.bin", 2 * MiB, seed=47)
    base = [*program("node"), "get", "--no-peers", "-d", str(cluster.workdir)]
    first = run(*base, origin.url("/a/data.bin"))
    assert first.returncode == 0, first
    again = run(*base, origin.url("/a/data.bin"))  # the same URL, unchanged: its mark says so
    assert again.returncode == 0 and again.stdout.startswith("already complete: "), again
    other = run(*base, origin.url("/b/data.bin"))
    assert other.returncode == 0 and "already complete" not in other.stdout, other
    assert "saving as data (1).bin" in other.stderr, other
    assert sha256_file(cluster.workdir / "data.bin") == a
    assert sha256_file(cluster.workdir / "data (1).bin") == b
    # the server's file replaced by another of the same size: its validators differ
    replaced = make_file(origin_root / "a" / "data.bin", 2 * MiB, seed=48)
    os.utime(origin_root / "a" / "data.bin", (1_900_000_000, 1_900_000_000))
    changed = run(*base, origin.url("/a/data.bin"))
    assert changed.returncode == 0 and "already complete" not in changed.stdout, changed
    assert sha256_file(cluster.workdir / "data (2).bin") == replaced


def test_a_failed_download_still_writes_its_report_with_the_error(cluster, origin, origin_root):
    make_file(origin_root / "bad.bin", 2 * MiB, seed=46)
    report = cluster.workdir / "r.json"
    out = run(*program("node"), "get", origin.url("/bad.bin"), "--no-peers", "-d", str(cluster.workdir),
              "--checksum", "sha256:" + "0" * 64, "--report", str(report))
    assert out.returncode == 1
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["checksum_verified"] is False
    assert "checksum mismatch" in data["error"]


def test_tries_bounds_the_attempts_on_a_failing_server(cluster, origin, origin_root):
    make_file(origin_root / "flaky.bin", 4096, seed=47)
    origin.configure("/flaky.bin", fail=503)
    started = time.monotonic()
    out = run(*program("node"), "get", origin.url("/flaky.bin"), "--no-peers", "--tries", "1",
              "-d", str(cluster.workdir))
    assert out.returncode == 1 and "503" in out.stderr, out
    assert time.monotonic() - started < 5, "one try: no backoff"


def test_proxy_option_sends_requests_through_the_proxy(cluster, origin, origin_root):
    """The test origin answers proxy-form requests (absolute URL) for its own files."""
    digest = make_file(origin_root / "p.bin", 4096, seed=48)
    out = run(*program("node"), "get", "http://proxied.invalid/p.bin", "--no-peers",
              "--proxy", origin.url("/").rstrip("/"), "-d", str(cluster.workdir), "-v")
    if out.returncode != 0 and "proxied.invalid" in out.stderr and "404" in out.stderr:
        pytest.skip("the test origin does not serve proxy-form requests")
    assert out.returncode == 0, out
    assert sha256_file(cluster.workdir / "p.bin") == digest


@pytest.mark.parametrize("helpers,plain", [(2, False), (0, True)])
def test_output_dash_streams_the_file_in_order_to_stdout(cluster, origin, origin_root, helpers, plain):
    """Out-of-order arrival (helpers, several connections) still comes out in order."""
    digest = make_file(origin_root / "s.bin", 24 * MiB, seed=49)
    origin.configure(conn_rate=4 * MiB)
    if plain:
        origin.configure("/s.bin", ignore_ranges=True)
    disc = cluster.discovery()
    for i in range(helpers):
        d = cluster.workdir / f"h{i}"
        d.mkdir()
        cluster.node(f"127.0.0.1:{disc.port}", name=f"h{i}", directory=d, extra=["--allow-private"])
    out = subprocess.run([*program("node"), "--discovery", f"127.0.0.1:{disc.port}", "get",
                          origin.url("/s.bin"), "-o", "-", "-d", str(cluster.workdir)],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import hashlib
    assert hashlib.sha256(out.stdout).hexdigest() == digest
    assert b"(standard output)" in out.stderr
    assert [p.name for p in cluster.workdir.iterdir() if p.is_file()] == [], "nothing left behind"


def test_output_dash_into_a_closed_pipe_is_one_error_line(cluster, origin, origin_root):
    make_file(origin_root / "big.bin", 16 * MiB, seed=50)
    origin.configure(conn_rate=4 * MiB)
    node = subprocess.Popen([*program("node"), "get", origin.url("/big.bin"), "--no-peers", "-o", "-",
                             "-d", str(cluster.workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = node.stdout.read(1000)
    node.stdout.close()
    err = node.stderr.read().decode()
    assert node.wait(20) == 1
    assert len(head) == 1000
    assert "standard output was closed" in err and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err  # one line, and nothing claims a kept partial download
    assert "kept" not in err or "nothing is kept" in err, err
    assert [p.name for p in cluster.workdir.iterdir()] == [], "nothing left behind"


def test_output_dash_with_a_wrong_checksum_claims_nothing_kept(cluster, origin, origin_root):
    make_file(origin_root / "w.bin", 2 * MiB, seed=52)
    out = run(*program("node"), "get", origin.url("/w.bin"), "--no-peers", "-o", "-",
              "--checksum", "sha256:" + "0" * 64, "-d", str(cluster.workdir), timeout=60,
              errors="replace")  # standard output carries the file's binary bytes
    assert out.returncode == 1, out
    assert "checksum mismatch" in out.stderr and "nothing is kept (-o - does not resume)" in out.stderr
    assert "the data is kept at" not in out.stderr, out.stderr
    assert [p.name for p in cluster.workdir.iterdir()] == [], "nothing left behind"


def test_limit_rate_paces_the_whole_download(cluster, origin, origin_root):
    digest = make_file(origin_root / "paced.bin", 6 * MiB, seed=51)
    started = time.monotonic()
    out = run(*program("node"), "get", origin.url("/paced.bin"), "--no-peers", "--limit-rate", "2M",
              "-d", str(cluster.workdir), timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 0, out
    assert sha256_file(cluster.workdir / "paced.bin") == digest
    assert 2.3 < took < 8, took  # 6 MiB at 2 MiB/s, less the first quarter second's burst


def test_limit_rate_on_a_helper_bounds_what_it_spends_for_others(cluster, origin, origin_root):
    make_file(origin_root / "shared.bin", 24 * MiB, seed=52)
    origin.configure(conn_rate=2 * MiB)
    disc = cluster.discovery()
    helper_dir = cluster.workdir / "h"
    helper_dir.mkdir()
    helper = cluster.node(f"127.0.0.1:{disc.port}", name="frugal", directory=helper_dir,
                          extra=["--allow-private", "--limit-rate", "512K"])
    report = cluster.workdir / "r.json"
    code = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/shared.bin"),
                       get_extra=["--report", str(report)])
    assert code.wait(120) == 0, code.output()
    data = json.loads(report.read_text())
    spent = data["bytes_by_source"].get(f"127.0.0.1:{helper.port}", 0)
    assert spent <= 512 * 1024 * data["seconds"] * 1.2 + 1 * MiB, (spent, data["seconds"])


def test_timeout_fails_a_stalled_read_in_seconds(cluster, origin, origin_root):
    make_file(origin_root / "stall.bin", 4 * MiB, seed=53)
    origin.configure("/stall.bin", stall_after=1000)
    started = time.monotonic()
    out = run(*program("node"), "get", origin.url("/stall.bin"), "--no-peers", "--timeout", "1",
              "--connect-timeout", "1", "--tries", "1", "-d", str(cluster.workdir), timeout=60)
    assert out.returncode == 1, out
    assert time.monotonic() - started < 6
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 3, out.stderr


@pytest.mark.parametrize("argv", [["get", "--no-peers", "http://127.0.0.1:1/x"],
                                  ["--serve-only", "--host", "127.0.0.1", "--port", "0"]])
def test_a_missing_requirement_is_one_line_not_a_traceback(argv):
    """Run with a Python that lacks requests (a stock system python): say how to set up."""
    node_py = program("node")[-1]
    code = ("import runpy, sys; sys.modules['requests'] = None; "  # 'import requests' now fails
            f"sys.argv = [{node_py!r}, '--discovery', '127.0.0.1:1', *{argv!r}]; "
            f"runpy.run_path({node_py!r}, run_name='__main__')")
    out = run(sys.executable, "-c", code)
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: swift needs the package 'requests'") and ".venv/bin/python" in last, last
