"""What a new user meets first, without a network: typos, habits of other tools, the
words of the summary, the bar and the notices, and data kept after a checksum mismatch."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from swift import local_nodes, membership, storage, wire
from swift.cli import ProgressBar, node_main, parse_node_args
from swift.download import Report
from swift.engine import target
from swift.engine.board import Board
from swift.engine.options import Options
from swift.getargs import tries_of
from swift.membership import Peer
from swift.nodeapp import summary
from swift.planning import RangeSet, Scheduler
from swift.prompt import get_parser, usage

MiB = 1 << 20
URL = "http://127.0.0.1:1/f.bin"


def usage_error(capsys, *argv: str) -> str:
    """The one line ``node.py ARGV`` writes for a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        parse_node_args(list(argv), prog="node.py")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# -- 6. a mistyped option: which subcommand, and the nearest option --------------------------
def test_a_typo_after_get_names_get_and_suggests_the_nearest_option(capsys):
    err = usage_error(capsys, "get", URL, "--chekcsum", "sha256:00")
    assert err.startswith("node.py get: error: unrecognized arguments: --chekcsum"), err
    assert "did you mean --checksum?" in err and "(see node.py get --help)" in err


def test_a_typo_at_the_prompt_suggests_the_nearest_option_too():
    with pytest.raises(ValueError, match=r"did you mean --no-peers\?"):
        get_parser().parse_args([URL, "--no-pers"])


# -- 10. the prompt's get: the same options as node.py get -----------------------------------
def test_the_prompts_get_takes_limit_rate_and_tries_and_its_usage_lists_every_option():
    args = get_parser().parse_args([URL, "--limit-rate", "2M", "--tries", "3", "--header", "A: b"])
    assert (args.limit_rate, args.tries, args.header) == (2 * MiB, 3, ["A: b"])
    shown = usage()
    for option in ("--header", "--limit-rate", "--tries", "--checksum", "--no-peers", "--referer"):
        assert option in shown, shown


def test_a_prompt_downloads_own_limit_rate_holds_with_the_nodes_the_lower_winning():
    from types import SimpleNamespace
    from swift.nodeapp import NodeApp
    node = lambda rate: SimpleNamespace(_config=SimpleNamespace(limit_rate=rate))  # noqa: E731
    assert NodeApp.rate_limit(node(None), 2 * MiB).rate == 2 * MiB
    assert NodeApp.rate_limit(node(4 * MiB), 2 * MiB).rate == 2 * MiB
    assert NodeApp.rate_limit(node(MiB), 2 * MiB).rate == MiB
    assert NodeApp.rate_limit(node(None), None) is None


# -- 12. a malformed URL is bad usage -------------------------------------------------------
@pytest.mark.parametrize("url", ["http://[::1/x", "http://h:99999/x", "http:///x"])
def test_a_malformed_url_is_a_usage_error_with_status_2(capsys, url):
    assert node_main(["get", url], prog="node.py") == 2
    err = capsys.readouterr().err
    assert "node.py get: error: malformed URL" in err and err.count("\n") == 1, err


# -- 14. habits of curl, wget and aria2c ------------------------------------------------------
def test_habits_with_a_meaning_here_are_taken_as_what_they_mean():
    args = parse_node_args(["get", URL, "-L", "-O", "-f", "-C", "-", "--retry", "2", "-s",
                            "-P", "downloads", "-x", "8"])
    assert args.location and args.remote_name and args.fail and args.continue_
    assert tries_of(args) == 3  # curl's retries come after the first try
    assert (args.quiet, str(args.dir), args.slots) == (1, "downloads", 8)
    args = parse_node_args(["get", URL, "--split", "6", "--silent", "--directory-prefix", "d"])
    assert (args.slots, args.quiet, str(args.dir)) == (6, 1, "d")


@pytest.mark.parametrize("argv,says", [
    (["--max-time", "60"], "--timeout S limits each wait"),
    (["-u", "me:secret"], "credentials in the URL"),
    (["-C", "1000"], "only '-C -' is taken"),
    (["--retry", "x"], "not a whole number"),
])
def test_habits_swift_serves_otherwise_say_what_it_does_instead(capsys, argv, says):
    err = usage_error(capsys, "get", URL, *argv)
    assert says in err and "secret" not in err.replace("kept secret", ""), err


# -- 17. every option before or after the subcommand -------------------------------------------
def test_a_gets_own_options_may_come_before_the_subcommand():
    args = parse_node_args(["--no-peers", "--checksum", "md5:" + "a" * 32, "--header", "A: b",
                            "get", URL, "--header", "C: d"])
    assert args.no_peers and args.checksum == "md5:" + "a" * 32
    assert args.header == ["A: b", "C: d"]
    assert parse_node_args(["--size", "10M", "demo"]).size == 10 * MiB


def test_a_subcommands_option_without_it_says_where_it_belongs(capsys):
    err = usage_error(capsys, "--no-peers")
    assert "--no-peers is an option of get" in err, err


# -- 5. the rate of a resumed download -----------------------------------------------------------
def test_a_resumed_summary_gives_this_runs_bytes_and_rate_and_says_so():
    report = Report(url=URL, path="slow.bin", size=120 * MiB, seconds=12.5, mode="parallel",
                    bytes_by_source={"local": 65 * MiB}, resumed_bytes=55 * MiB)
    line = summary(report)
    assert line.startswith("done: slow.bin  120.0 MiB (55.0 MiB resumed); "
                           "this run: 65.0 MiB in 12.5 s (5.2 MiB/s);"), line


# -- 13. one spacing on the bar ----------------------------------------------------------------
def test_the_progress_bar_writes_sizes_as_the_summary_does(monkeypatch):
    monkeypatch.setattr(ProgressBar, "REDRAW", 0)
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update(0, 100 * MiB)
    bar.update(int(81.9 * MiB), 100 * MiB)
    bar._bar.refresh()
    text = out.getvalue()
    bar.close()
    assert "81.9 MiB of 100.0 MiB at " in text, text
    assert not re.search(r"\d(KiB|MiB|GiB|B)\b", text), text  # never "81.9MiB"


# -- 3. a refusal said once --------------------------------------------------------------------
def test_a_discovery_refusal_names_the_address_once(monkeypatch):
    def refuse(host, port, **kw):
        raise wire.AuthError(f"127.0.0.1:{port} refused us: this server requires the shared secret")
    monkeypatch.setattr(wire, "client_connect", refuse)
    client = membership.DiscoveryClient("127.0.0.1", 41010, name="t", secret=None)
    with pytest.raises(membership.DiscoveryError) as exc:
        client.list_peers()
    assert str(exc.value) == ("discovery at 127.0.0.1:41010 refused us: this server requires "
                              "the shared secret"), exc.value


def test_a_discovery_that_is_not_listening_is_named_once_too(monkeypatch):
    def refuse(host, port, **kw):
        raise ConnectionRefusedError(f"127.0.0.1:{port} refused the connection "
                                     f"(is a swift server listening there?)")
    monkeypatch.setattr(wire, "client_connect", refuse)
    client = membership.DiscoveryClient("127.0.0.1", 41010, name="t", secret=None)
    with pytest.raises(membership.DiscoveryError) as exc:
        client.list_peers()
    assert str(exc.value) == ("discovery at 127.0.0.1:41010 is unreachable: it refused the "
                              "connection (is a swift server listening there?)"), exc.value


# -- 4. one helper, one name, and what happened to it ----------------------------------------------
def test_a_helper_that_loses_every_connection_at_once_is_named_as_in_the_summary(tmp_path):
    said: list[str] = []
    key = "127.0.0.2:41002"
    with storage.PartFile.open(tmp_path / "f.part", 8 * MiB) as part:
        board = Board(Scheduler(8 * MiB, piece_size=MiB, min_split=MiB), part, clock=lambda: 0.0,
                      notice=said.append, names={key: "kitchen"})
        pieces = [board.next_piece(key) for _ in range(3)]
        for piece in pieces:  # one SIGKILL: each of its connections is lost
            board.failed(piece.assignment_id, key, "connection lost")
    assert said == ["helper kitchen left out: connection lost, on 3 of its ranges"], said
    assert board.left_out == {key: "connection lost, on 3 of its ranges"}
    assert "repeated" not in " ".join(said)


def test_a_members_lan_copy_left_out_is_named_as_in_the_summary_not_by_its_address(tmp_path):
    said: list[str] = []
    key = "127.0.0.2:41002"
    with storage.PartFile.open(tmp_path / "f.part", 8 * MiB) as part:
        board = Board(Scheduler(8 * MiB, piece_size=MiB, min_split=MiB), part, clock=lambda: 0.0,
                      notice=said.append, names={key: "kitchen"})
        board.exclude(f"copy@{key}", "served 2 pieces that failed their SHA-256 check")
        piece = board.next_piece(key)
        board.failed(piece.assignment_id, key, "the origin refuses it", blame=True)
        board.exclude(key, "the origin refuses it")
    assert said == ["kitchen (LAN copy) left out: served 2 pieces that failed their SHA-256 check",
                    "helper kitchen left out: the origin refuses it"], said


# -- 1. data kept after a checksum mismatch --------------------------------------------------------
class _Probe:
    def __init__(self, size):
        self.url = self.final_url = URL
        self.size = size
        self.validator = type("V", (), {"etag": '"v1"', "last_modified": None})()


def _rejected_part(tmp_path, size=4096, rejected="sha256:" + "0" * 64):
    final = tmp_path / "f.bin"
    storage.part_path(final).write_bytes(b"x" * size)
    control = storage.ResumeFile(final, storage.FileIdentity(URL, URL, size, '"v1"', None))
    control.save(RangeSet([(0, size)]), rejected)
    return final, control


def test_data_kept_after_a_mismatch_is_checked_against_a_new_sum_before_any_fetch(tmp_path):
    final, control = _rejected_part(tmp_path)
    said: list[str] = []
    opts = Options(directory=tmp_path, checksum="sha256:" + "1" * 64)
    done = target.resume_point(control, _Probe(4096), final, opts, said.append)
    assert done == RangeSet([(0, 4096)]) and storage.part_path(final).exists()
    assert any("against the new checksum before fetching anything" in s for s in said), said


@pytest.mark.parametrize("again", ["SHA256:" + "0" * 64, None])
def test_the_same_sum_or_none_fetches_the_kept_data_anew(tmp_path, again):
    final, control = _rejected_part(tmp_path)
    said: list[str] = []
    done = target.resume_point(control, _Probe(4096), final, Options(directory=tmp_path, checksum=again),
                               said.append)
    assert done == RangeSet() and not storage.part_path(final).exists()
    assert any("fetching it anew" in s for s in said), said


def test_a_record_with_a_rejected_sum_round_trips_and_old_records_still_load(tmp_path):
    final, control = _rejected_part(tmp_path)
    assert control.load().rejected == "sha256:" + "0" * 64
    data = json.loads(storage.record_path(final).read_text())
    del data["rejected"]
    storage.record_path(final).write_text(json.dumps(data))
    assert control.load().rejected is None


# -- 16. the node of this machine ---------------------------------------------------------------------
def test_a_running_nodes_mark_makes_it_this_machine_and_a_dead_ones_does_not(tmp_path):
    mark = local_nodes.mark_running("127.0.0.1", 6000, tmp_path)
    peers = [Peer("127.0.0.1", 6000, "vm"), Peer("127.0.0.1", 6001, "kitchen")]
    assert local_nodes.this_machine(peers, tmp_path) == {"127.0.0.1:6000"}
    data = json.loads(mark.read_text())
    mark.write_text(json.dumps({**data, "pid": 2 ** 22 + 7}))  # beyond pid_max: no such process
    assert local_nodes.this_machine(peers, tmp_path) == set()
    mark.write_text(json.dumps({**data, "namespace": "net:[1]"}))  # another namespace "host"
    assert local_nodes.this_machine(peers, tmp_path) == set()
    mark.write_text(json.dumps(data))
    local_nodes.clear_mark(mark)
    assert not mark.exists() and os.listdir(tmp_path) == []


def test_the_note_on_this_machines_nodes_speaks_of_one_or_of_several(monkeypatch):
    from swift.cli import _Helpers
    peers = [Peer("127.0.0.1", 6000, "vm"), Peer("127.0.0.1", 6001, "kitchen"),
             Peer("127.0.0.1", 6002, "attic")]

    class Lookup:
        def peers(self, stop=None):
            return peers

    for mine, said in (({"127.0.0.1:6000"}, "not using vm as a helper: it runs on this machine "
                                              "and shares its link"),
                       ({"127.0.0.1:6000", "127.0.0.1:6002"},
                        "not using attic, vm as helpers: they run on this machine and share "
                        "its link")):
        monkeypatch.setattr(local_nodes, "this_machine", lambda _peers, mine=mine: mine)
        notes: list[str] = []
        left = _Helpers(Lookup(), notes.append).peers()
        assert notes == [said]
        assert [p.key for p in left] == [p.key for p in peers if p.key not in mine]


@pytest.mark.parametrize("argv", [["demo", "--size", "0"], ["--size", "0K", "demo"]])
def test_an_empty_demo_file_is_a_usage_error_not_the_default_size(capsys, argv):
    err = usage_error(capsys, *argv)
    assert "the demo file cannot be empty" in err, err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_advertising_the_any_address_is_a_usage_error(capsys, host):
    err = usage_error(capsys, "--advertise", host, "--serve-only")
    assert "is no address a peer can connect to" in err, err


def test_an_advertised_name_or_address_is_taken_as_given():
    assert parse_node_args(["--advertise", "desk.lan"]).advertise == "desk.lan"
    assert parse_node_args(["--advertise", "[fd00::5]"]).advertise == "fd00::5"


@pytest.mark.parametrize("argv,option", [(["get", URL, "--enable-rpc"], "--enable-rpc"),
                                         (["peers", "--serve-only"], "--serve-only"),
                                         (["get", URL, "--rpc-secret=x"], "--rpc-secret")])
def test_a_nodes_own_option_after_a_subcommand_says_so_instead_of_a_far_guess(capsys, argv, option):
    err = usage_error(capsys, *argv)
    assert f"{option} is an option of the node (without a subcommand); {argv[0]} does not take it" in err
    assert "did you mean" not in err, err


@pytest.mark.parametrize("argv", [["peers", "--checksum", "md5:" + "a" * 32], ["demo", "--no-peers"]])
def test_a_gets_option_after_another_subcommand_is_not_called_the_nodes(capsys, argv):
    err = usage_error(capsys, *argv)
    assert "unrecognized arguments" in err and "option of the node" not in err, err


@pytest.mark.parametrize("name", ["ev\x1b[31mil", "two\nlines", "n" * 256])
def test_a_name_no_hello_could_carry_is_a_usage_error_not_an_unreachable_discovery(capsys, name):
    err = usage_error(capsys, "--name", name, "--serve-only")
    assert "not a node name" in err and "\x1b" not in err, err


def test_a_long_name_within_the_limit_is_taken():
    assert parse_node_args(["--name", "kitchen " + "n" * 247]).name == "kitchen " + "n" * 247


# -- aria2c's -s N, and a typo at the prompt said as node.py get says it --------------------------
@pytest.mark.parametrize("argv", [["get", URL, "-s", "4"], ["-s", "4", "get", URL], ["get", "-s4", URL],
                                  ["get", URL, "-s=16"], ["-s", "2"]])
def test_aria2cs_split_count_is_one_line_saying_what_swift_does_instead(capsys, argv):
    err = usage_error(capsys, *argv)
    count = next(w for w in argv if w.lstrip("-s=").isdigit()).lstrip("-s=")
    assert f"error: -s {count} is aria2c's --split" in err, err
    assert "swift splits the file among the machines by itself" in err
    assert "for curl's --silent, give -s alone" in err and "unrecognized" not in err


def test_curls_silent_s_alone_is_still_taken():
    assert parse_node_args(["get", URL, "-s"]).quiet == 1
    assert parse_node_args(["-s", "get", URL, "--slots", "4"]).quiet == 1


def test_aria2cs_split_count_at_the_prompt_says_the_same_without_curls_habit():
    with pytest.raises(ValueError) as exc:
        get_parser().parse_args([URL, "-s", "4"])
    assert str(exc.value).startswith("-s 4 is aria2c's --split"), exc.value
    assert "node's --slots N" in str(exc.value) and "give -s alone" not in str(exc.value)


@pytest.mark.parametrize("words", [["--chekcsum", "sha256:" + "0" * 64, URL],
                                   [URL, "--chekcsum", "sha256:" + "0" * 64],
                                   ["--chekcsum=sha256:" + "0" * 64, URL]])
def test_a_typo_at_the_prompt_is_said_first_and_as_node_py_get_says_it(capsys, words):
    with pytest.raises(ValueError) as exc:
        get_parser().parse_args(words)
    at_prompt = str(exc.value)
    on_command_line = usage_error(capsys, "get", *words)
    assert at_prompt.startswith("unrecognized arguments: --chekcsum"), at_prompt
    assert at_prompt.endswith("did you mean --checksum?"), at_prompt
    assert f"node.py get: error: {at_prompt} (see node.py get --help)" == on_command_line
    assert URL not in at_prompt


# -- -d DIR -o NAME: DIR/NAME, as aria2c -----------------------------------------------------------
def test_a_gets_relative_output_goes_inside_its_download_directory(monkeypatch, tmp_path):
    import swift.cli as cli
    seen = {}
    monkeypatch.setattr(cli, "_get", lambda args, secret: seen.setdefault("output", args.output) and 0)
    assert node_main(["--no-zeroconf", "get", URL, "--no-peers", "-q", "-d", str(tmp_path / "dl"),
                      "-o", "x.bin"], prog="node.py") == 0
    assert seen["output"] == tmp_path / "dl" / "x.bin"
    seen.clear()
    assert node_main(["get", URL, "--no-peers", "-q", "-o", "x.bin"], prog="node.py") == 0
    assert seen["output"] == Path("x.bin")


def test_a_gets_output_climbing_out_of_its_download_directory_is_a_usage_error(capsys, tmp_path):
    assert node_main(["get", URL, "--no-peers", "-d", str(tmp_path), "-o", "../x.bin"],
                     prog="node.py") == 2
    err = capsys.readouterr().err
    assert "climbs out of the download directory" in err and err.count("\n") == 1, err
