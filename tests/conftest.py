"""Shared fixtures: real grpc.aio servers on 127.0.0.1 port 0, the scripted OpenAI
server, S3 and Valkey, torn down after each test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as redis

from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen_runtime.serving import RunningServer
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.fake_openai import FakeOpenAI
from tests.support.s3_server import ExternalS3, S3Server, s3_from_environment_or_start
from tests.support.valkey_server import ValkeyServer

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server | ExternalS3]:
    """One S3 endpoint for the whole run: SeaweedFS on loopback, or the service named
    by S3_TEST_ENDPOINT / S3_TEST_ACCESS_KEY / S3_TEST_SECRET_KEY (a real MinIO)."""
    server = s3_from_environment_or_start(tmp_path_factory.mktemp("s3"))
    yield server
    if not server.external:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server | ExternalS3) -> Iterator[str]:
    """A bucket name of this test's own; not created (stores create their bucket),
    emptied and removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    yield name
    client = s3_server.client()
    if client.bucket_exists(name):
        for item in client.list_objects(name, recursive=True):
            client.remove_object(name, item.object_name)
        client.remove_bucket(name)


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A valkey-server of this test's own on 127.0.0.1 (tests/support/valkey_server.py)."""
    with ValkeyServer(tmp_path / "valkey") as server:
        yield server


@pytest.fixture
async def raw(valkey_server: ValkeyServer) -> AsyncIterator[redis.Redis]:
    """A plain client of valkey_server, as an operator's (or a dead replica's): to look at
    what the services left in Valkey."""
    client = redis.Redis.from_url(valkey_server.url)
    yield client
    await client.aclose()
