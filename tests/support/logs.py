"""The services' own log configuration, captured for a test and undone after it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from imagegen_runtime.telemetry.logs import configure_logging


@contextmanager
def captured_logs(level: str, fmt: str) -> Iterator[io.StringIO]:
    """configure_logging(level, fmt) writing to the buffer it yields; the root logger's
    handlers and level are put back afterwards, however the block ends."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging(level, fmt, stream)
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
