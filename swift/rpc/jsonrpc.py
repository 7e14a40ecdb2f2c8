"""JSON-RPC 2.0 as aria2 speaks it: requests in, responses out, no I/O.

Rules (JSON-RPC 2.0, https://www.jsonrpc.org/specification, and aria2's
manual, "RPC interface"):

* A body is one request object or a batch (a non-empty array of them). The
  answer to a batch is an array of the answers, in order, leaving out the
  notifications (requests without ``id``); a body of notifications only has
  no answer (``None``).
* Errors have aria2's shape, ``{"code": 1, "message": "..."}``: the
  protocol's own codes for a body that is not JSON (-32700), a request that
  is not a request (-32600), a method that does not exist (-32601) and
  parameters of the wrong shape (-32602); code 1 for a method that ran and
  failed, as aria2 answers (a GID not found, an option not supported, a
  wrong secret: ``Unauthorized``). A message is one line for a person and
  never holds a traceback.
* The secret: with ``--rpc-secret TOKEN`` set, every method's first parameter
  must be the string ``token:TOKEN`` (aria2's convention), compared in
  constant time; it is taken off before the method sees its parameters.
  ``system.listMethods`` and ``system.listNotifications`` need no token, as in
  aria2 1.35. ``system.multicall`` carries no token itself: each call in it
  carries its own.
* Bounds: :data:`MAX_BATCH` requests in a batch or a multicall; the body's
  size is bounded by the server (:data:`swift.rpc.policy.MAX_BODY`).
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["RpcError", "Dispatcher", "notification", "PARSE_ERROR", "INVALID_REQUEST",
           "METHOD_NOT_FOUND", "INVALID_PARAMS", "FAILED", "MAX_BATCH"]

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
#: aria2's code for every method that ran and failed (``Unauthorized`` included).
FAILED = 1

#: Most requests in one batch or one ``system.multicall``: a front end asks for
#: a few lists and a status per download at once (AriaNg: tens); a thousand is
#: far beyond that and keeps one body from holding the server for long.
MAX_BATCH = 1000

#: Methods that answer without the secret (aria2 1.35: they say nothing about downloads).
NO_TOKEN = frozenset({"system.listMethods", "system.listNotifications"})

Method = Callable[[list], Any]


class RpcError(Exception):
    """A failed call: ``code`` (see the module's table) and a one-line message."""

    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class _Request:
    id: Any
    method: str
    params: list
    notification: bool


def notification(method: str, params: list) -> str:
    """A server-to-client notification (``aria2.onDownloadComplete`` and the like), as text."""
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params})


def _response(id_: Any, *, result: Any = None, error: RpcError | None = None) -> dict:
    if error is not None:
        return {"jsonrpc": "2.0", "id": id_, "error": error.as_dict()}
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def _request(obj: Any) -> _Request | RpcError:
    """One request object checked; an RpcError (INVALID_REQUEST) saying what is wrong."""
    if not isinstance(obj, dict):
        return RpcError("a request must be a JSON object", INVALID_REQUEST)
    if obj.get("jsonrpc") not in ("2.0", None):  # aria2 accepts requests without it
        return RpcError("only JSON-RPC 2.0 is spoken here (\"jsonrpc\": \"2.0\")", INVALID_REQUEST)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return RpcError("a request needs a \"method\" string", INVALID_REQUEST)
    params = obj.get("params", [])
    if not isinstance(params, list):  # aria2's methods take positional parameters only
        return RpcError("\"params\" must be an array (aria2's methods take positional parameters)",
                        INVALID_REQUEST)
    id_ = obj.get("id")
    if isinstance(id_, bool) or (id_ is not None and not isinstance(id_, (str, int, float))):
        return RpcError("\"id\" must be a string or a number", INVALID_REQUEST)
    return _Request(id_, method, params, notification="id" not in obj)


class Dispatcher:
    """Methods by name, the secret, and the handling of one body.

    ``unsupported`` maps method names swift knows but does not do to the
    reason, said instead of "no method". ``methods`` maps a name (``aria2.tellStatus``) to a callable taking the
    positional parameters (the token already taken off) and returning a
    JSON-serialisable result, or raising :class:`RpcError`. Any other
    exception is a bug: it is logged with its traceback and answered with
    code 1 and a one-line message.
    """

    def __init__(self, methods: dict[str, Method], secret: str | None = None,
                 unsupported: dict[str, str] | None = None):
        self._methods = dict(methods)
        self._secret = secret
        self._unsupported = dict(unsupported or {})
        self._methods.setdefault("system.listMethods", lambda params: sorted(self._methods))
        self._methods.setdefault("system.listNotifications", lambda params: list(NOTIFICATIONS))
        self._methods["system.multicall"] = self._multicall

    @property
    def names(self) -> list[str]:
        return sorted(self._methods)

    # -- one body --------------------------------------------------------------------
    def handle(self, body: bytes | str) -> str | None:
        """The answer to ``body`` as JSON text, or None when there is nothing to answer."""
        answer = self.handle_obj(body)
        return None if answer is None else json.dumps(answer)

    def handle_obj(self, body: bytes | str) -> dict | list | None:
        """:meth:`handle` before encoding: a response object, a list of them, or None."""
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _response(None, error=RpcError("the body is not JSON", PARSE_ERROR))
        if isinstance(obj, list):
            if not obj:
                return _response(None, error=RpcError("an empty batch", INVALID_REQUEST))
            if len(obj) > MAX_BATCH:
                return _response(None, error=RpcError(
                    f"a batch of {len(obj)} requests; at most {MAX_BATCH}", INVALID_REQUEST))
            answers = [a for a in (self._one(item) for item in obj) if a is not None]
            return answers or None
        return self._one(obj)

    def _one(self, obj: Any) -> dict | None:
        req = _request(obj)
        if isinstance(req, RpcError):
            id_ = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)) else None
            return _response(id_, error=req)
        try:
            result = self.call(req.method, req.params)
        except RpcError as exc:
            return None if req.notification else _response(req.id, error=exc)
        return None if req.notification else _response(req.id, result=result)

    # -- one call --------------------------------------------------------------------
    def call(self, method: str, params: list) -> Any:
        """Run ``method`` with ``params`` (the token checked and taken off); RpcError if it fails."""
        fn = self._methods.get(method)
        if fn is None and method in self._unsupported:
            self._authorized(params)  # an unauthorized caller learns nothing
            raise RpcError(f"{method} is not supported: {self._unsupported[method]}")
        if fn is None:
            raise RpcError(f"no method {method!r} (system.listMethods lists the ones swift has)",
                           METHOD_NOT_FOUND)
        if method not in NO_TOKEN and method != "system.multicall":
            params = self._authorized(params)
        try:
            return fn(params)
        except RpcError:
            raise
        except Exception as exc:  # a bug: the trace in the log, one line to the client
            log.exception("JSON-RPC method %s failed", method)
            raise RpcError(f"internal error in {method}: {type(exc).__name__}") from exc

    def _authorized(self, params: list) -> list:
        """``params`` without its leading ``token:...``; RpcError("Unauthorized") if it is wrong."""
        token = params[0] if params and isinstance(params[0], str) and params[0].startswith("token:") \
            else None
        if self._secret is not None:
            given = token[len("token:"):] if token is not None else ""
            if not hmac.compare_digest(given.encode(), self._secret.encode()):
                raise RpcError("Unauthorized")
        return params[1:] if token is not None else params

    def _multicall(self, params: list) -> list:
        """aria2's ``system.multicall``: ``[[{"methodName": m, "params": [...]}, ...]]``.

        Each result is ``[result]`` or an error struct ``{"code", "message"}``.
        """
        if len(params) != 1 or not isinstance(params[0], list):
            raise RpcError("system.multicall takes one array of {methodName, params}", INVALID_PARAMS)
        calls = params[0]
        if len(calls) > MAX_BATCH:
            raise RpcError(f"a multicall of {len(calls)} calls; at most {MAX_BATCH}", INVALID_PARAMS)
        results: list = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("methodName"), str) \
                    or not isinstance(call.get("params", []), list):
                results.append(RpcError("each call is {\"methodName\": ..., \"params\": [...]}",
                                        INVALID_PARAMS).as_dict())
                continue
            if call["methodName"] == "system.multicall":
                results.append(RpcError("system.multicall cannot be nested", INVALID_PARAMS).as_dict())
                continue
            try:
                results.append([self.call(call["methodName"], call.get("params", []))])
            except RpcError as exc:
                results.append(exc.as_dict())
        return results


#: The notifications a WebSocket client receives, each with ``[{"gid": GID}]``.
NOTIFICATIONS = ("aria2.onDownloadStart", "aria2.onDownloadPause", "aria2.onDownloadStop",
                 "aria2.onDownloadComplete", "aria2.onDownloadError")
