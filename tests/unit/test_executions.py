"""The executions use case's pure parts: previews downsized to the catalogue's bounds,
page tokens bound to their session, names, the progress throttle, and the settings that
size it."""

from __future__ import annotations

import base64
import io
import random

import pytest
from PIL import Image

from executor_service.config import ExecutorSettings
from executor_service.executions import Executions, ProgressSteps, _listing, execution_id
from executor_service.ports import PageCursor
from executor_service.previews import downsize
from imagegen.catalogue import MAX_PREVIEW_BYTES, MAX_PREVIEW_SIDE, PROGRESS_STEP_PERCENT
from imagegen.errors import InvalidRequest
from imagegen_runtime.settings import ConfigError


def _noise(width: int, height: int, fmt: str = "PNG") -> bytes:
    """An image that compresses badly: the worst case for the byte bound."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (width, height), bytes(rng.getrandbits(8) for _ in range(width * height * 3)))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(("width", "height"), [(1536, 1024), (1024, 1536), (300, 40)])
def test_a_preview_fits_the_catalogue_bounds_keeping_its_shape(width: int, height: int) -> None:
    preview = downsize(_noise(width, height), "image/png")
    assert preview is not None and len(preview.image_data) <= MAX_PREVIEW_BYTES
    assert max(preview.width, preview.height) <= MAX_PREVIEW_SIDE
    assert abs(preview.width / preview.height - width / height) < 0.05
    with Image.open(io.BytesIO(preview.image_data)) as image:
        assert image.format == "WEBP" and image.size == (preview.width, preview.height)


def test_a_partial_image_that_does_not_decode_gives_no_preview() -> None:
    assert downsize(b"\x89PNG\r\n\x1a\nnot really", "image/png") is None
    assert downsize(b"", "image/webp") is None


def test_a_page_token_round_trips_and_is_bound_to_its_session() -> None:
    executions = Executions(None, None, page_token_key=b"k" * 32)  # type: ignore[arg-type]  # tokens only
    cursor = PageCursor(1_796_000_000_123_456, "ab" * 16)
    token = executions._page_tokens.issue((cursor.create_us, cursor.execution_id), _listing("table-1"))
    assert executions._open_token(token, "table-1") == cursor
    forged = base64.urlsafe_b64encode(f"table-1\n-5\n{'0123456789abcdef' * 2}".encode()).decode()
    images = executions._page_tokens.issue((cursor.create_us, cursor.execution_id), "table-1/")
    other_key = Executions(None, None, page_token_key=b"x" * 32)  # type: ignore[arg-type]
    foreign = other_key._page_tokens.issue((cursor.create_us, cursor.execution_id), _listing("table-1"))
    for bad_session, bad_token in (
        ("table-2", token), ("table-1", "not-a-token"), ("table-1", "x" * 600), ("table-1", forged),
        ("table-1", images), ("table-1", foreign), ("table-1", token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]),
    ):
        with pytest.raises(InvalidRequest) as caught:
            executions._open_token(bad_token, bad_session)
        assert caught.value.violations[0].field == "page_token"


@pytest.mark.parametrize("name", ["", "executions/", "executions/ABC", "operations/" + "a" * 32, "executions/" + "a" * 33])
def test_a_malformed_execution_name_is_refused_on_name(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        execution_id(name)
    assert caught.value.violations[0].field == "name"


def test_execution_settings_are_read_and_checked() -> None:
    settings = ExecutorSettings.from_env({"EXECUTOR_EXECUTION_TTL_SECONDS": "60", "EXECUTOR_EXECUTION_WORKERS": "4"})
    assert (settings.execution_ttl_seconds, settings.execution_workers) == (60, 4)
    for variable, value in (("EXECUTOR_EXECUTION_TTL_SECONDS", "0"), ("EXECUTOR_EXECUTION_WORKERS", "0")):
        with pytest.raises(ConfigError, match=variable):
            ExecutorSettings.from_env({variable: value})


def test_progress_is_recorded_in_whole_percent_steps_and_never_100_while_rendering() -> None:
    recorded: list[int] = []
    steps = ProgressSteps(recorded.append)
    for n in range(1001):  # a sampler of 1000 steps, each told
        steps(n / 1000)
    assert recorded == list(range(PROGRESS_STEP_PERCENT, 100, PROGRESS_STEP_PERCENT))


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), float("-inf"), -0.5, 0.01, 1.0, 7.0])
def test_progress_that_is_not_a_step_forward_below_100_is_not_recorded(fraction: float) -> None:
    recorded: list[int] = []
    steps = ProgressSteps(recorded.append)
    steps(fraction)
    assert recorded == []


def test_progress_going_back_is_not_recorded_until_it_passes_the_last_step() -> None:
    recorded: list[int] = []
    steps = ProgressSteps(recorded.append)
    for fraction in (0.4, 0.1, 0.3, 0.42, 0.45, 0.999):  # a second sampler starting over, then done
        steps(fraction)
    assert recorded == [40, 45, 99]
