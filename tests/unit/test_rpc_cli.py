"""node.py's RPC options: aria2's names and defaults, and the warning for an open RPC."""

from __future__ import annotations

import pytest

from swift.cli import parse_node_args, rpc_warning


def test_the_rpc_is_off_by_default_and_takes_aria2s_defaults(monkeypatch):
    monkeypatch.delenv("SWIFT_RPC_SECRET", raising=False)
    args = parse_node_args([])
    assert (args.enable_rpc, args.rpc_listen_port, args.rpc_secret, args.rpc_listen_all) == \
        (False, 6800, None, False)


def test_the_rpc_options_go_with_serve_only():
    args = parse_node_args(["--serve-only", "--enable-rpc", "--rpc-listen-port", "6801",
                            "--rpc-secret", "t", "--rpc-listen-all",
                            "--rpc-allow-origin", "http://127.0.0.1:8080/"])
    assert args.serve_only and args.enable_rpc and args.rpc_listen_port == 6801
    assert args.rpc_secret == "t" and args.rpc_listen_all
    assert args.rpc_allow_origin == ["http://127.0.0.1:8080"]


def test_the_secret_may_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SWIFT_RPC_SECRET", "from-env")
    assert parse_node_args(["--enable-rpc"]).rpc_secret == "from-env"


@pytest.mark.parametrize("argv", [["--rpc-listen-port", "70000"], ["--rpc-allow-origin", "example.org"],
                                  ["--rpc-allow-origin", "http://a/path"]])
def test_bad_rpc_options_are_one_line_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_node_args(["--enable-rpc", *argv])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_listening_beyond_loopback_without_a_secret_is_warned_in_one_line():
    open_all = parse_node_args(["--enable-rpc", "--rpc-listen-all"])
    open_all.rpc_secret = None
    assert "without --rpc-secret" in rpc_warning(open_all, 6800)
    assert "\n" not in rpc_warning(open_all, 6800)
    assert rpc_warning(parse_node_args(["--enable-rpc", "--rpc-listen-all", "--rpc-secret", "t"]), 6800) is None
    loopback = parse_node_args(["--enable-rpc"])
    loopback.rpc_secret = None
    assert rpc_warning(loopback, 6800) is None
