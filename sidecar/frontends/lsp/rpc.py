"""JSON-RPC 2.0 on top of pygls: the one place where incoming messages are validated.

:meth:`SidecarProtocol.receive` takes the body of each framed message (from
:mod:`sidecar.host.transport`) and, before pygls sees it:

1. parses it (``-32700`` if it is not JSON);
2. checks the envelope with :func:`check_envelope`: a JSON object, ``"jsonrpc": "2.0"``, an
   ``id`` that is a string or a number (integer or not), a string ``method``; anything else is
   ``-32600`` (answered with the request's ``id`` when it is valid, else ``id: null``).
   Responses from the client are never answered; a broken one is logged and dropped;
3. refuses requests after ``shutdown`` and a second ``initialize`` (``-32600``);
4. builds the pygls message: ``sidecar/*`` and unknown methods keep their raw params (our
   handlers validate them and name the field), LSP methods are structured with lsprotocol's
   types (``-32602`` listing the bad paths).

``params`` that are absent or an empty array (what some clients send for "no params") are
handled as ``null``. Every rejected message is answered (when it is a request) and logged in
one line, without a traceback. A handler that fails with an unexpected exception is answered
``-32603`` with a short message; the traceback goes to the log only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcMethodNotFound, JsonRpcRequestCancelled
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
)

from sidecar.app import protocol as P
from sidecar.host.framing import frame

if TYPE_CHECKING:
    from .server import SidecarServer

logger = logging.getLogger("sidecar.lsp.rpc")

MsgId = str | int | float

LOCAL_ONLY = "sidecar_local"
"""Attribute of log records that stay in the server's log (not sent as window/logMessage)."""

_NOT_SENT_TO_CLIENT = {LOCAL_ONLY: True}


@dataclass(frozen=True, slots=True)
class Wire:
    """A handler's result already in its wire form (plain JSON data, from
    :func:`~sidecar.app.protocol.to_wire`)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is refused: the error to answer with (``id`` is the request's id when
    it is valid, else None), or only to log when ``answer`` is false (a client response)."""

    code: int
    message: str
    id: MsgId | None = None
    answer: bool = True


def valid_id(value: Any) -> bool:
    """A JSON-RPC id: a string or a (finite) number; not null, a boolean, an object, an
    array."""
    if isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def check_envelope(raw: Any) -> Rejection | None:
    """Check the JSON-RPC 2.0 envelope of a parsed message; None when it is valid.

    Normalizes ``raw`` in place: absent ``params`` and ``params: []`` become ``null``.
    """
    if not isinstance(raw, dict):
        return Rejection(P.E_INVALID_REQUEST, "a message must be a JSON object")
    has_id = "id" in raw
    id_ok = has_id and valid_id(raw["id"])
    reply_id = raw["id"] if id_ok else None
    is_response = "method" not in raw and ("result" in raw or "error" in raw)
    if raw.get("jsonrpc") != "2.0":
        return Rejection(P.E_INVALID_REQUEST, 'jsonrpc must be "2.0"', reply_id,
                         answer=not is_response)
    if is_response:
        if not id_ok:
            return Rejection(P.E_INVALID_REQUEST, "response without a valid id", answer=False)
        return None
    if "method" not in raw:
        return Rejection(P.E_INVALID_REQUEST, "a request needs a method", reply_id)
    if not isinstance(raw["method"], str):
        return Rejection(P.E_INVALID_REQUEST, "method must be a string", reply_id)
    if has_id and not id_ok:
        return Rejection(P.E_INVALID_REQUEST, "id must be a string or a number")
    if raw.get("params") == []:
        raw["params"] = None
    raw.setdefault("params", None)
    return None


def _field_message(message: str) -> str:
    """``required field missing @ $.params.text_document`` → ``… @ params.textDocument``."""
    text, sep, path = message.rpartition(" @ $")
    if not sep:
        return message
    path = ".".join(P.camel(p) for p in path.lstrip(".").split(".") if p)
    return f"{text} @ {path or 'params'}"


def _structure_detail(exc: Exception) -> str:
    """What is wrong with the params, from a cattrs structuring error."""
    try:
        from cattrs import transform_error

        return "; ".join(_field_message(m) for m in transform_error(exc, path="$"))
    except Exception:
        return f"{type(exc).__name__}: {exc}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class SidecarProtocol(LanguageServerProtocol):
    """pygls protocol with: the validation of incoming messages (:meth:`receive`), raw-dict
    params for ``sidecar/*`` methods (validated by us, so errors can name fields), short
    internal errors, a hook after each response is written, and an ``exit`` that stops the
    server cleanly instead of ``sys.exit`` inside the event loop."""

    _server: SidecarServer

    initialize_received = False
    """Set by the first ``initialize`` request whose params are accepted."""

    # ---------------------------------------------------------------- incoming messages
    def receive(self, body: bytes) -> None:
        """Validate and dispatch the body of one framed message."""
        try:
            raw = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self.reject(Rejection(P.E_PARSE_ERROR, "parse error: the body is not JSON"),
                        f"{type(exc).__name__}: {exc}")
            return
        problem = check_envelope(raw)
        if problem is not None:
            self.reject(problem)
            return
        method = raw.get("method")
        is_request = method is not None and "id" in raw
        if is_request and self._shutdown and method != lsp.EXIT:
            self.reject(Rejection(P.E_INVALID_REQUEST, "server is shutting down", raw["id"]))
            return
        if method == lsp.INITIALIZE and (self.initialize_received or not is_request):
            self.reject(Rejection(P.E_INVALID_REQUEST, "already initialized", raw.get("id"))
                        if is_request else
                        Rejection(P.E_INVALID_REQUEST, "initialize is a request", answer=False))
            return
        try:
            message = self.structure_message(raw)
        except Exception as exc:
            detail = _structure_detail(exc)
            self.reject(Rejection(P.E_INVALID_PARAMS, f"invalid params: {detail}",
                                  raw.get("id"), answer=is_request),
                        f"{method}: {detail}" if not is_request else "")
            return
        if method == lsp.INITIALIZE and is_request:
            self.initialize_received = True
        try:
            self.handle_message(message)
        except Exception:
            logger.exception("failed to handle a message")

    def structure_message(self, data: dict[str, Any]) -> Any:
        """The pygls message for a validated envelope (raises on params that do not fit
        the LSP type of the method)."""
        method = data.get("method")
        if method is None:
            if "error" in data:
                return self._converter.structure(data, lsp.ResponseErrorMessage)
            result_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
            return self._converter.structure(data, result_type)
        message_type = None if method.startswith("sidecar/") else self.get_message_type(method)
        if message_type is None:
            if "id" in data:
                return JsonRPCRequestMessage(id=data["id"], method=method, jsonrpc="2.0",
                                             params=data["params"])
            return JsonRPCNotification(method=method, jsonrpc="2.0", params=data["params"])
        return self._converter.structure(data, message_type)

    def reject(self, problem: Rejection, detail: str = "") -> None:
        """Answer (if it is a request) and log, in one line, a message that is refused."""
        logger.warning("rejected message (%d %s)%s", problem.code, problem.message,
                       f": {detail}" if detail else "", extra=_NOT_SENT_TO_CLIENT)
        if problem.answer:
            self.send_error(problem.id, problem.code, problem.message)

    def send_error(self, msg_id: MsgId | None, code: int, message: str) -> None:
        """An error response written directly (``id: null`` included, which pygls omits)."""
        if self.writer is not None:
            self.writer.write(frame({"jsonrpc": "2.0", "id": msg_id,
                                     "error": {"code": code, "message": message}}))

    # ---------------------------------------------------------------- requests
    def _send_response(self, msg_id: Any, result: Any | None = None,
                       error: lsp.ResponseError | None = None) -> None:
        """A :class:`Wire` result is written as it is (pygls would walk it again with its
        converter, which costs more than the operation for a history of runs)."""
        if error is None and isinstance(result, Wire):
            self._result_types.pop(msg_id, None)
            if self.writer is not None:
                self.writer.write(frame({"jsonrpc": "2.0", "id": msg_id,
                                         "result": result.value}, ascii=True))
            return
        super()._send_response(msg_id, result, error)

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        try:
            handler = self._get_handler(method_name)
        except JsonRpcMethodNotFound as exc:
            logger.warning("rejected message (%d %s)", exc.code, exc.message,
                           extra=_NOT_SENT_TO_CLIENT)
            self._send_response(msg_id, None, exc.to_response_error())
            return
        self._ctx_msg_id.set(msg_id)
        try:
            self._execute_handler(msg_id, handler,
                                  partial(self._send_handler_result, msg_id=msg_id),
                                  args=(params,))
        except Exception as exc:
            self._send_response(msg_id, None, self._internal_error(exc, msg_id, method_name))
            self._server._response_sent(msg_id)

    def _send_handler_result(self, future: Any, *, msg_id: Any) -> None:
        self._request_futures.pop(msg_id, None)
        if future.cancelled():
            error = JsonRpcRequestCancelled(
                f"request {msg_id!r} was cancelled").to_response_error()
            self._send_response(msg_id, error=error)
        elif (exc := future.exception()) is None:
            self._send_response(msg_id, result=future.result())
        elif isinstance(exc, JsonRpcException):
            self._send_response(msg_id, error=exc.to_response_error())
        else:
            self._send_response(msg_id, error=self._internal_error(exc, msg_id))
        self._server._response_sent(msg_id)

    def _internal_error(self, exc: BaseException, msg_id: Any,
                        method: str | None = None) -> lsp.ResponseError:
        """A bug in a handler: the traceback goes to the log, the client gets one line."""
        logger.error("request %r%s failed", msg_id, f" ({method})" if method else "",
                     exc_info=exc)
        return lsp.ResponseError(
            code=P.E_INTERNAL,
            message=f"internal error ({type(exc).__name__}); the server log has the details")

    @lsp_method(lsp.INITIALIZE)
    def lsp_initialize(self, *args: Any) -> Any:
        """pygls' ``initialize``, plus the protocol version in the server's capabilities
        (``experimental.sidecar.protocolVersion``)."""
        result = yield from super().lsp_initialize(*args)
        result.capabilities.experimental = {"sidecar": {"protocolVersion": P.PROTOCOL_VERSION}}
        return result

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> None:  # type: ignore[override]
        self._server._request_stop(0 if self._shutdown else 1)


__all__ = ["LOCAL_ONLY", "Rejection", "SidecarProtocol", "check_envelope", "frame", "valid_id"]
