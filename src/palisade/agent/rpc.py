"""The agent's management API: JSON over gRPC on the agent's unix socket (next to Hubble's Observer service).

Two generic methods of service ``palisade.v1.Agent``: ``Call`` (unary: {"method", "params"} -> result) and
``Stream`` (server streaming: {"method", "params"} -> results). Messages are JSON documents, so the API needs no
generated code and can be used from any gRPC client with a JSON codec. Errors travel as gRPC status details
(a JSON object naming the error type) and are rebuilt into Palisade's typed errors on the client side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from palisade.errors import AgentError, NotSupported, PalisadeError, PolicyError, PolicyErrors

SERVICE = "palisade.v1.Agent"

Unary = Callable[[dict[str, Any]], Any]
Streaming = Callable[[dict[str, Any], Callable[[], bool]], Iterator[Any]]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _loads(data: bytes) -> Any:
    return json.loads(data.decode())


def error_to_details(exc: BaseException) -> str:
    if isinstance(exc, PolicyErrors):
        return json.dumps(
            {
                "type": "PolicyErrors",
                "errors": [
                    {"path": e.path, "message": e.message, "source": e.source, "doc": e.doc}
                    for e in exc.errors
                ],
            }
        )
    if isinstance(exc, PolicyError):
        return json.dumps(
            {
                "type": "PolicyErrors",
                "errors": [{"path": exc.path, "message": exc.message, "source": exc.source, "doc": exc.doc}],
            }
        )
    if isinstance(exc, NotSupported):
        return json.dumps({"type": "NotSupported", "feature": exc.feature, "detail": exc.detail})
    return json.dumps({"type": type(exc).__name__, "message": str(exc)})


def details_to_error(details: str) -> PalisadeError:
    try:
        d = json.loads(details)
    except (ValueError, TypeError):
        return AgentError(details or "agent error")
    if d.get("type") == "PolicyErrors":
        return PolicyErrors(
            PolicyError(e["path"], e["message"], source=e.get("source"), doc=e.get("doc"))
            for e in d["errors"]
        )
    if d.get("type") == "NotSupported":
        return NotSupported(d.get("feature", "?"), d.get("detail", ""))
    return AgentError(d.get("message", details))


class AgentService:
    """Server side: a registry of method name -> handler, exposed as a generic gRPC handler."""

    def __init__(self) -> None:
        self.unary: dict[str, Unary] = {}
        self.streaming: dict[str, Streaming] = {}

    def method(self, name: str) -> Callable[[Unary], Unary]:
        def deco(fn: Unary) -> Unary:
            self.unary[name] = fn
            return fn

        return deco

    def stream(self, name: str) -> Callable[[Streaming], Streaming]:
        def deco(fn: Streaming) -> Streaming:
            self.streaming[name] = fn
            return fn

        return deco

    def _call(self, request: dict[str, Any], context: grpc.ServicerContext) -> Any:
        name = request.get("method", "")
        fn = self.unary.get(name)
        if fn is None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                json.dumps({"type": "AgentError", "message": f"unknown method {name!r}"}),
            )
            raise AssertionError("unreachable: abort raises")
        try:
            return {"result": fn(request.get("params") or {})}
        except PalisadeError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error_to_details(exc))
        except Exception as exc:  # a bug: report it, keep serving
            context.abort(
                grpc.StatusCode.INTERNAL,
                json.dumps({"type": "AgentError", "message": f"internal error: {exc!r}"}),
            )

    def _stream(self, request: dict[str, Any], context: grpc.ServicerContext) -> Iterator[Any]:
        name = request.get("method", "")
        fn = self.streaming.get(name)
        if fn is None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                json.dumps({"type": "AgentError", "message": f"unknown stream {name!r}"}),
            )
            raise AssertionError("unreachable: abort raises")
        try:
            for item in fn(request.get("params") or {}, context.is_active):
                yield {"result": item}
        except PalisadeError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, error_to_details(exc))

    def generic_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Call": grpc.unary_unary_rpc_method_handler(
                    self._call, request_deserializer=_loads, response_serializer=_dumps
                ),
                "Stream": grpc.unary_stream_rpc_method_handler(
                    self._stream, request_deserializer=_loads, response_serializer=_dumps
                ),
            },
        )


class AgentClient:
    """Client side, used by the CLI."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._call = self._channel.unary_unary(
            f"/{SERVICE}/Call", request_serializer=_dumps, response_deserializer=_loads
        )
        self._stream = self._channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=_dumps, response_deserializer=_loads
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            self._call({"method": "ping", "params": {}}, timeout=timeout)
            return True
        except grpc.RpcError:
            return False

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self._call({"method": method, "params": params}, timeout=self.timeout)["result"]
        except grpc.RpcError as exc:
            raise _convert(exc, self.socket_path) from None

    def stream(self, method: str, **params: Any) -> Iterator[Any]:
        try:
            for item in self._stream({"method": method, "params": params}):
                yield item["result"]
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise _convert(exc, self.socket_path) from None


def _convert(exc: grpc.RpcError, socket_path: str) -> PalisadeError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return AgentError(
            f"the agent is not running (no answer on {socket_path}); start it with `palisade agent`"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AgentError("the agent did not answer in time")
    return details_to_error(exc.details() or "")
