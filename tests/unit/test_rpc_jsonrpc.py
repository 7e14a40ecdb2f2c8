"""swift.rpc.jsonrpc: JSON-RPC 2.0 with aria2's errors, batches, multicall and token."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from swift.rpc.jsonrpc import (FAILED, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
                               PARSE_ERROR, MAX_BATCH, Dispatcher, RpcError, notification)

from tests.helpers import examples


def echo_dispatcher(secret: str | None = None) -> Dispatcher:
    def fail(params):
        raise RpcError("GID 0000000000000009 is not found")

    def bug(params):
        raise KeyError("internal detail")

    return Dispatcher({"test.echo": lambda params: params, "test.fail": fail, "test.bug": bug},
                      secret, unsupported={"aria2.shutdown": "stop it where it runs"})


def answer(d: Dispatcher, obj) -> object:
    text = d.handle(json.dumps(obj) if not isinstance(obj, (bytes, str)) else obj)
    return None if text is None else json.loads(text)


def call(method: str, params: list, id_=1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def test_a_call_answers_with_its_id_and_result():
    assert answer(echo_dispatcher(), call("test.echo", [1, "a"], id_="x")) == \
        {"jsonrpc": "2.0", "id": "x", "result": [1, "a"]}


def test_a_body_that_is_not_json_is_a_parse_error_with_a_null_id():
    got = answer(echo_dispatcher(), b"{not json")
    assert got["id"] is None and got["error"]["code"] == PARSE_ERROR


def test_malformed_requests_are_invalid_requests_never_tracebacks():
    d = echo_dispatcher()
    for bad in ([], 5, "text", {"id": 1}, {"id": 2, "method": 7}, {"id": 3, "method": "test.echo", "params": {"a": 1}},
                {"jsonrpc": "1.0", "id": 4, "method": "test.echo"}, {"id": [1], "method": "test.echo"}):
        got = json.loads(d.handle(json.dumps(bad)))
        assert got["error"]["code"] == INVALID_REQUEST, bad
        assert "Traceback" not in got["error"]["message"]


def test_an_unknown_method_is_method_not_found():
    assert answer(echo_dispatcher(), call("aria2.nothing", []))["error"]["code"] == METHOD_NOT_FOUND


def test_an_unsupported_aria2_method_says_why_with_code_1():
    err = answer(echo_dispatcher(), call("aria2.shutdown", []))["error"]
    assert err == {"code": FAILED, "message": "aria2.shutdown is not supported: stop it where it runs"}


def test_a_failing_method_answers_with_aria2s_error_shape():
    assert answer(echo_dispatcher(), call("test.fail", []))["error"] == \
        {"code": 1, "message": "GID 0000000000000009 is not found"}


def test_a_bug_in_a_method_is_one_line_without_its_details():
    err = answer(echo_dispatcher(), call("test.bug", []))["error"]
    assert err["code"] == FAILED and "internal detail" not in err["message"] and "\n" not in err["message"]


def test_a_batch_answers_each_request_in_order_and_leaves_out_notifications():
    got = answer(echo_dispatcher(), [call("test.echo", [1], 1), {"jsonrpc": "2.0", "method": "test.echo"},
                                     call("nope", [], 3)])
    assert [a["id"] for a in got] == [1, 3]
    assert got[0]["result"] == [1] and got[1]["error"]["code"] == METHOD_NOT_FOUND


def test_notifications_alone_get_no_answer():
    assert echo_dispatcher().handle(json.dumps({"jsonrpc": "2.0", "method": "test.echo"})) is None


def test_an_empty_or_oversized_batch_is_refused():
    d = echo_dispatcher()
    assert answer(d, [])["error"]["code"] == INVALID_REQUEST
    assert answer(d, [call("test.echo", [])] * (MAX_BATCH + 1))["error"]["code"] == INVALID_REQUEST


def test_with_a_secret_the_token_is_required_and_taken_off():
    d = echo_dispatcher("s3cret")
    assert answer(d, call("test.echo", ["token:s3cret", 7]))["result"] == [7]
    for params in ([7], ["token:wrong", 7], ["token:", 7]):
        assert answer(d, call("test.echo", params))["error"] == {"code": 1, "message": "Unauthorized"}


def test_without_a_secret_a_token_given_anyway_is_taken_off():
    assert answer(echo_dispatcher(), call("test.echo", ["token:x", 1]))["result"] == [1]


def test_list_methods_needs_no_token_and_names_every_method():
    names = answer(echo_dispatcher("s"), call("system.listMethods", []))["result"]
    assert {"test.echo", "system.multicall", "system.listMethods"} <= set(names)


def test_an_unsupported_method_says_unauthorized_to_a_caller_without_the_token():
    assert answer(echo_dispatcher("s"), call("aria2.shutdown", []))["error"]["message"] == "Unauthorized"


def test_multicall_wraps_results_and_carries_each_calls_own_token():
    d = echo_dispatcher("s")
    got = answer(d, call("system.multicall", [[
        {"methodName": "test.echo", "params": ["token:s", 1]},
        {"methodName": "test.echo", "params": [2]},
        {"methodName": "test.fail", "params": ["token:s"]},
        {"methodName": "system.multicall", "params": []},
        "junk"]]))["result"]
    assert got[0] == [[1]]
    assert got[1] == {"code": 1, "message": "Unauthorized"}
    assert got[2]["message"].endswith("is not found")
    assert got[3]["code"] == INVALID_PARAMS and got[4]["code"] == INVALID_PARAMS


def test_multicall_with_the_wrong_shape_is_invalid_params():
    assert answer(echo_dispatcher(), call("system.multicall", [{"a": 1}]))["error"]["code"] == INVALID_PARAMS


def test_a_notification_is_a_request_without_an_id():
    assert json.loads(notification("aria2.onDownloadComplete", [{"gid": "0" * 16}])) == \
        {"jsonrpc": "2.0", "method": "aria2.onDownloadComplete", "params": [{"gid": "0" * 16}]}


@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["jsonrpc", "id", "method", "params", "x"]), inner, max_size=5),
    max_leaves=12).map(lambda obj: json.dumps(obj).encode())))
def test_any_body_gets_json_rpc_answers_or_none_never_an_exception(body):
    text = echo_dispatcher("s").handle(body)
    if text is not None:
        got = json.loads(text)
        for one in got if isinstance(got, list) else [got]:
            assert one["jsonrpc"] == "2.0" and ("result" in one) != ("error" in one)
