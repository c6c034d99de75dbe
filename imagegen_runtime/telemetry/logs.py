"""Log configuration, once per process, and the fields every line carries.

A call's request id, method, session id and plan id live in a ContextVar set by
the server interceptor for the duration of the call (each gRPC call runs in its
own asyncio task, so calls never see each other's), and CallContextFilter copies
them onto every record logged meanwhile, from any logger. With tracing on, the
current trace and span ids are added too, so a log line leads to its trace.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import IO, Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
DEFAULT_LOG_FORMAT = "json"

# The fields of the call being served; empty outside a call.
call_fields: ContextVar[dict[str, Any]] = ContextVar("imagegen_call_fields", default={})  # noqa: B039 - never mutated

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def bind(**fields: Any) -> None:
    """Add fields to the current call's log context (e.g. a plan_id learnt mid-call)."""
    call_fields.set({**call_fields.get(), **{k: v for k, v in fields.items() if v not in (None, "")}})


class CallContextFilter(logging.Filter):
    """Puts the current call's fields and trace ids on every record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in call_fields.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, then any extra fields."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 in UTC, to the microsecond
    )


def configure_logging(level: str, fmt: str = DEFAULT_LOG_FORMAT, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes fmt ("json" or "text")
    to stream (stderr); returns it, so a caller (a test) can remove it again."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(CallContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
