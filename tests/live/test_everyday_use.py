"""Everyday use on loopback: a mistyped checksum, Ctrl-C, error lines, the no-secret note,
the node of the requester's own machine, and the prompt's words on a terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess

import pytest

from swift import local_nodes
from swiftlab.cluster import program, wait_until
from swiftlab.origin import make_file

from tests.helpers import MiB, prompt_node, run_get, sha256_file, terminal_node


def origin_bytes(origin, name: str) -> int:
    return origin.stats()["bytes_by_path"].get(f"/{name}", 0)


# -- 1. a mistyped --checksum costs no refetch -------------------------------------------------
def test_a_mistyped_checksum_then_the_right_one_fetches_nothing_again(cluster, origin, origin_root):
    size = 16 * MiB
    digest = make_file(origin_root / "wc.bin", size, seed=180)
    typo = "sha256:" + digest[:-1] + ("0" if digest[-1] != "0" else "1")
    code, out = run_get(cluster, 1, origin.url("/wc.bin"), "--no-peers", "--checksum", typo)
    assert code == 1 and "checksum mismatch" in out, out
    assert "the kept data is checked against it first" in out, out
    origin.reset_stats()
    code, out = run_get(cluster, 1, origin.url("/wc.bin"), "--no-peers", "--checksum", f"sha256:{digest}")
    assert code == 0, out
    assert sha256_file(cluster.workdir / "wc.bin") == digest
    assert origin_bytes(origin, "wc.bin") < MiB, "the kept data was fetched again"  # the probe only
    assert "against the new checksum before fetching anything" in out, out


def test_kept_data_that_fails_the_new_sum_too_is_fetched_anew_in_the_same_run(cluster, origin,
                                                                              origin_root):
    size = 8 * MiB
    digest = make_file(origin_root / "wd.bin", size, seed=181)
    code, out = run_get(cluster, 1, origin.url("/wd.bin"), "--no-peers", "--checksum", "md5:" + "0" * 32)
    assert code == 1, out
    part = cluster.workdir / "wd.bin.part"
    with open(part, "r+b") as f:  # the kept data goes bad on disk
        f.seek(size // 2)
        f.write(b"\xff" * 4096)
    origin.reset_stats()
    code, out = run_get(cluster, 1, origin.url("/wd.bin"), "--no-peers", "--checksum", f"sha256:{digest}")
    assert code == 0, out
    assert sha256_file(cluster.workdir / "wd.bin") == digest
    assert origin_bytes(origin, "wd.bin") >= size  # the whole file: no piece hashes say where
    assert "fetching all of it anew" in out, out


# -- 2. Ctrl-C is one line, not an error ---------------------------------------------------------
def test_ctrl_c_during_a_get_says_one_line_without_error_and_exits_130(cluster, origin, origin_root):
    make_file(origin_root / "slow.bin", 32 * MiB, seed=182)
    origin.configure(conn_rate=MiB)
    get = cluster.get("127.0.0.1:1", origin.url("/slow.bin"), get_extra=["--no-peers"])
    wait_until((cluster.workdir / "slow.bin.part.swift").exists, 20, "the download to run")
    get.send(signal.SIGINT)
    assert get.wait(10) == 130
    out = get.output()
    assert "error" not in out, out
    stops = [line for line in out.splitlines() if "interrupted" in line]
    assert len(stops) == 1 and stops[0].startswith("interrupted; the partial download is kept in "), out


# -- 7. one form for error lines ----------------------------------------------------------------------
def test_both_programs_write_their_errors_in_one_form(cluster, tmp_path):
    missing = str(tmp_path / "no-such-secret")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        runs = [[*program("discovery"), "--host", "127.0.0.1", "--port", str(port)],
                [*program("discovery"), "--port", "0", "--secret-file", missing],
                [*program("node"), "--secret-file", missing, "get", "http://127.0.0.1:1/x"],
                [*program("node"), "--no-zeroconf", "--discovery", "127.0.0.1:9", "--host",
                 "127.0.0.1", "--port", str(port), "--serve-only", "-d", str(tmp_path)]]
        env = {**os.environ, "SWIFT_STATE_DIR": str(tmp_path / "state")}
        for argv in runs:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
            assert out.returncode in (1, 2) and errors, out.stderr
            assert all(line.startswith("error: ") for line in errors), out.stderr
            assert "[Errno" not in out.stderr, out.stderr  # the reason in words, as both say it


# -- 11. the no-secret note is for gets that talk to members ----------------------------------
def test_a_get_with_no_peers_says_nothing_about_a_shared_secret(cluster, origin, origin_root):
    make_file(origin_root / "n.bin", 64 * 1024, seed=183)
    code, out = run_get(cluster, 1, origin.url("/n.bin"), "--no-peers")
    assert code == 0 and "secret" not in out, out
    disc = cluster.discovery()
    code, out = run_get(cluster, disc.port, origin.url("/n.bin"), "-o", str(cluster.workdir / "n2.bin"))
    assert code == 0 and "no shared secret" in out, out  # it asked discovery: said


# -- 16. the node of the requester's own machine --------------------------------------------------
def test_a_get_does_not_take_its_own_machines_node_for_a_helper(cluster, origin, origin_root, tmp_path):
    size = 16 * MiB
    digest = make_file(origin_root / "own.bin", size, seed=184)
    origin.configure(host_rate=8 * MiB)
    disc = cluster.discovery()
    mine = {"SWIFT_STATE_DIR": str(tmp_path / "my-state")}
    (cluster.workdir / "vm").mkdir()
    own = cluster.node(f"127.0.0.1:{disc.port}", name="vm", directory=cluster.workdir / "vm",
                       env=mine, extra=["--allow-private"])
    (cluster.workdir / "kitchen").mkdir()
    cluster.node(f"127.0.0.1:{disc.port}", name="kitchen", directory=cluster.workdir / "kitchen",
                 extra=["--allow-private", "--source-address", "127.0.0.2"])
    report = tmp_path / "report.json"
    proc = cluster.get(f"127.0.0.1:{disc.port}", origin.url("/own.bin"),
                       get_extra=["--report", str(report)], env=mine)
    assert proc.wait(120) == 0, proc.output()
    assert sha256_file(cluster.workdir / "own.bin") == digest
    out = proc.output()
    assert "not using vm as a helper: it runs on this machine" in out, out
    machines = json.loads(report.read_text())["machines"]
    assert f"127.0.0.1:{own.port}" not in machines and "vm" not in machines.values(), machines
    assert "kitchen" in machines.values(), machines  # the other machine still helps
    summary = [line for line in out.splitlines() if line.startswith("done: ")][0]
    assert " vm " not in summary, summary


def test_an_address_of_this_machine_proves_its_node_is_here_but_loopback_does_not():
    out = subprocess.run(["ip", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    found = re.findall(r"\binet6? ([0-9a-f.:]+)/", out.stdout) if out.returncode == 0 else []
    if not found:
        pytest.skip("this machine has no global address")
    assert local_nodes.is_own_address(found[0])
    assert not local_nodes.is_own_address("127.0.0.1") and not local_nodes.is_own_address("::1")
    assert not local_nodes.is_own_address("192.0.2.77")  # TEST-NET-1: nobody's


# -- 8, 9, 6: the prompt on a terminal --------------------------------------------------------------
def test_a_log_line_at_the_prompt_goes_above_the_input_line_in_the_prompts_words(cluster):
    disc = cluster.discovery(lease=1.0)
    with terminal_node(cluster, f"127.0.0.1:{disc.port}") as (proc, type_, screen):
        type_("pe")  # half a command, not yet entered
        disc.kill()  # the next heartbeat finds it gone: a warning while the user types
        wait_until(lambda: "is unreachable" in screen(), 20, "the warning")
        # above the input line, in the prompt's words, and the typed half redrawn after it
        wait_until(lambda: re.search(r"\r\x1b\[Knote: discovery at 127\.0\.0\.1:\d+ is unreachable"
                                     r"[^\n]*\r?\nswift> pe", screen()), 10, "the redrawn input line")
        assert not re.search(r"swift> [^\r\n]*(WARNING|warning)", screen()), repr(screen())
        type_("ers\r")
        wait_until(lambda: "note: discovery at" in screen().split("swift> peers")[-1], 20, "peers")
        type_("get http://127.0.0.1:1/x --chekcsum sha256:00\r")  # 6, at the prompt
        wait_until(lambda: "did you mean --checksum?" in screen(), 10, "the suggestion")
        type_("get --help\r")  # 10: the usage comes from the one parser
        wait_until(lambda: all(o in screen().split("get --help")[-1] for o in
                               ("--header", "--limit-rate", "--tries")), 10, "get's options")
        type_("quit\r")
        assert proc.wait(15) == 0


def test_quit_with_one_download_asks_about_it_and_says_how_to_resume_after_a_restart(
        cluster, origin, origin_root):
    make_file(origin_root / "q.bin", 32 * MiB, seed=185)
    origin.configure(conn_rate=MiB)
    disc = cluster.discovery()
    with prompt_node(cluster, f"127.0.0.1:{disc.port}") as (node, type_):
        type_(origin.url("/q.bin"))
        wait_until((cluster.workdir / "q.bin.part.swift").exists, 20, "the download to run")
        mark = type_("quit")
        node.wait_for(r"\[1\] still running: wait for it \(w\), cancel it and keep its partial file",
                      timeout=10, start=mark)
        mark = type_("c")
        line = node.wait_for(r"\[1\] cancelled; ", timeout=10, start=mark).string
        assert "resume 1" not in line and "the same get, after a restart," in line, line
        assert node.wait(15) == 0
    assert (cluster.workdir / "q.bin.part").exists()
