"""What the server's interceptor (imagegen_runtime.interceptor) records of each call:
its request id, the ids its log lines carry, the one line that closes it, its final
status code, and FinishedCall for the metrics.

Everything a log line takes from a request or its metadata is bounded: the request
id is a sane token of at most 128 characters or is replaced, and every other field
(session_id, plan_id) is cut to MAX_LOG_FIELD_CHARS characters with any
non-printable character replaced, so no caller can bloat or forge a line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import grpc
from grpc._cython import cygrpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

log = logging.getLogger("imagegen.rpc")

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
# What a caller's id may look like: anything else is replaced, so a log line
# cannot be forged or bloated through metadata.
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{MAX_REQUEST_ID_CHARS}}}")
# The longest value of any other field a log line takes from a request.
MAX_LOG_FIELD_CHARS = 128
_CUT_MARK = "..."
# Probes call these every few seconds: their lines are DEBUG, not INFO.
QUIET_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# A client's deadline passes a moment before the server's (the server's starts when
# the call arrives), so the client's cancellation can arrive while the server still
# has this much time left: a call cancelled with less left than this ran out of time.
DEADLINE_SLACK_SECONDS = 0.05

# go-grpc-prometheus' grpc_type label, by (request streaming, response streaming).
CALL_KINDS = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


class FinishedCall(NamedTuple):
    service: str  # "imagegen.v1.ExecutorService"
    method: str  # "ExecutePlan"
    kind: str  # CALL_KINDS: unary, server_stream, client_stream, bidi_stream
    code: grpc.StatusCode
    seconds: float


class CallObserver(Protocol):
    def call_finished(self, call: FinishedCall) -> None: ...


def request_id_from(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The caller's x-request-id when it is a sane token, else a new uuid4."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            if isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS and _REQUEST_ID.fullmatch(value):
                return value
            break
    return str(uuid.uuid4())


def log_field(value: str) -> str:
    """value as a log line may carry it: at most MAX_LOG_FIELD_CHARS characters (cut ones
    end in "..."), line breaks and other non-printable characters replaced by "?"."""
    if len(value) <= MAX_LOG_FIELD_CHARS and value.isprintable():
        return value
    if len(value) > MAX_LOG_FIELD_CHARS:
        value = value[: MAX_LOG_FIELD_CHARS - len(_CUT_MARK)] + _CUT_MARK
    return value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)


_ID_FIELDS = ("session_id", "plan_id")
# Where the contract puts them: on the message, on its plan, on its result's plan (later wins).
_ID_PATHS: tuple[tuple[str, ...], ...] = ((), ("plan",), ("result", "plan"))


def message_ids(message: Any) -> dict[str, str]:
    """session_id and plan_id from a request or response, wherever the contract puts them
    (on the message, on its plan, on its result's plan), bounded as log fields."""
    found: dict[str, str] = {}
    for path in _ID_PATHS:
        holder = message
        for name in path:
            holder = getattr(holder, name, None)
        for name in _ID_FIELDS:
            value = getattr(holder, name, None)
            if isinstance(value, str) and value:
                found[name] = log_field(value)
    return found


IdReader = Callable[[Any], dict[str, str]]


def id_reader(descriptor: Descriptor | None) -> IdReader | None:
    """message_ids for messages of one type, the fields looked up once (None: the type has
    none of them); message_ids itself when the type is not known."""
    if descriptor is None:
        return message_ids
    getters: list[tuple[str, tuple[str, ...]]] = []
    for path in _ID_PATHS:
        holder: Descriptor | None = descriptor
        for name in path:
            field = holder.fields_by_name.get(name) if holder is not None else None
            holder = (
                field.message_type
                if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE
                else None
            )
        if holder is None:
            continue
        for name in _ID_FIELDS:
            field = holder.fields_by_name.get(name)
            if field is not None and field.type == FieldDescriptor.TYPE_STRING:
                getters.append((name, (*path, name)))
    if not getters:
        return None

    def read(message: Any) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, path in getters:
            value = message
            for step in path:
                value = getattr(value, step)
            if value:
                found[name] = log_field(value)
        return found

    return read


def cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """What a call cancelled under the server was: DEADLINE_EXCEEDED when its deadline
    has passed (or was at most DEADLINE_SLACK_SECONDS away), else CANCELLED (the client
    cancelled, or the server stopped)."""
    try:
        remaining = context.time_remaining()
    except Exception:  # noqa: BLE001 - the call is over; no deadline to read
        remaining = None
    if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


# What grpc.aio raises from context.write once the call is over (the client cancelled, or
# its deadline passed), before context.cancelled() says so. grpc gives it no public name;
# tests/integration/test_interceptor_hostile_input.py fails if this one goes.
_WRITE_AFTER_END: tuple[type[BaseException], ...] = tuple(
    error for error in (getattr(cygrpc, "ExecuteBatchError", None),) if isinstance(error, type)
)


def peer_gone(error: BaseException, context: grpc.aio.ServicerContext) -> bool:
    """Whether error only says the call ended under the handler (a cancellation, not a fault)."""
    return context.cancelled() or isinstance(error, _WRITE_AFTER_END)


def final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status code the caller got, from how the handler ended."""
    if isinstance(error, asyncio.CancelledError):
        return cancelled_code(context)
    code = context.code()
    if code is not None:
        return code  # set by abort (the error mapping's included) or set_code, whoever left since
    if error is not None and peer_gone(error, context):
        return cancelled_code(context)  # a write into a call the caller had left
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
