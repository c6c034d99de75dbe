"""Shared fixtures: real grpc.aio servers on 127.0.0.1 port 0, torn down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor_service.config import ExecutorSettings
from executor_service.server import create_server as create_executor_server
from imagegen.serving import RunningServer
from planner_service.config import PlannerSettings
from planner_service.server import create_server as create_planner_server
from tests.support.fake_openai import FakeOpenAI

PUBLIC_BASE = "http://game.test/api/images"


@dataclass
class Services:
    planner: RunningServer
    executor: RunningServer
    store_dir: Path

    @property
    def planner_target(self) -> str:
        return f"127.0.0.1:{self.planner.port}"

    @property
    def executor_target(self) -> str:
        return f"127.0.0.1:{self.executor.port}"


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store_dir = tmp_path / "images"
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
    executor = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=store_dir, public_base_url=PUBLIC_BASE)
    )
    yield Services(planner, executor, store_dir)
    await planner.stop(None)
    await executor.stop(None)


@pytest.fixture(autouse=True)
def no_real_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the real cloud: a developer's OPENAI_API_KEY would otherwise configure the
    planner's LLM in every service started from the environment (the CLI tests' too)."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PLANNER_MODE", "PLANNER_LLM_API_KEY", "PLANNER_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible server on loopback for the real openai SDK, scripted per test."""
    server = FakeOpenAI().start()
    yield server
    server.stop()
