"""node.py's RPC options: aria2's names and defaults, and the warning for an open RPC."""

from __future__ import annotations

import pytest

from swift.cli import parse_node_args, rpc_unused, rpc_warning


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


@pytest.mark.parametrize("argv,option", [
    (["--serve-only", "get", "http://127.0.0.1:1/x"], "--serve-only"),
    (["get", "http://127.0.0.1:1/x", "--serve-only"], "--serve-only"),
    (["--enable-rpc", "get", "http://127.0.0.1:1/x"], "--enable-rpc"),
    (["--rpc-secret", "t", "get", "http://127.0.0.1:1/x"], "--rpc-secret"),
    (["--rpc-listen-port", "6801", "peers"], "--rpc-listen-port"),
    (["peers", "--rpc-listen-port", "6801"], "--rpc-listen-port"),
])
def test_a_serving_option_with_a_subcommand_is_refused_alike_before_or_after_it(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_node_args(argv, prog="node.py")
    command = "get" if "get" in argv else "peers"
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"node.py {command}: error: {option} is an option of the node (without a "
                          f"subcommand); {command} does not take it"), err


def test_the_secret_from_the_environment_does_not_stop_a_get(monkeypatch):
    monkeypatch.setenv("SWIFT_RPC_SECRET", "from-env")
    assert parse_node_args(["get", "http://127.0.0.1:1/x"]).command == "get"


@pytest.mark.parametrize("argv,named", [
    (["--rpc-secret", "t"], "--rpc-secret does nothing"),
    (["--serve-only", "--rpc-listen-port", "6801", "--rpc-listen-all"],
     "--rpc-listen-port, --rpc-listen-all do nothing"),
    (["--rpc-allow-origin", "http://127.0.0.1:8080"], "--rpc-allow-origin does nothing"),
])
def test_rpc_options_without_enable_rpc_are_said_to_do_nothing_in_one_line(argv, named):
    line = rpc_unused(parse_node_args(argv))
    assert line is not None and line.startswith(named) and "\n" not in line, line
    assert "without --enable-rpc" in line and "add --enable-rpc" in line


def test_rpc_options_with_enable_rpc_or_a_secret_from_the_environment_say_nothing(monkeypatch):
    assert rpc_unused(parse_node_args(["--enable-rpc", "--rpc-secret", "t"])) is None
    assert rpc_unused(parse_node_args([])) is None
    monkeypatch.setenv("SWIFT_RPC_SECRET", "from-env")
    assert rpc_unused(parse_node_args(["--serve-only"])) is None
