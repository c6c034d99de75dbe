"""The blocking and asyncio clients stay in step: the same public methods with the
same parameters (name, default, kind), the same public attributes, and the same
behaviour where the two could drift (a channel built for a client that cannot be
finished is closed again). What is inherently async differs only in name."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import grpc
import pytest

import clients.aio
import clients.channels
import clients.sync
from clients import (
    AsyncExecutorClient,
    AsyncImagegenClient,
    AsyncImageStream,
    AsyncPlannerClient,
    ChannelOptions,
    ExecutorClient,
    ImagegenClient,
    ImageStream,
    PlannerClient,
)
from imagegen.v1.executor_service_pb2 import GetImageResponse

PAIRS = [
    (PlannerClient, AsyncPlannerClient),
    (ExecutorClient, AsyncExecutorClient),
    (ImagegenClient, AsyncImagegenClient),
    (ImageStream, AsyncImageStream),
]
# The async name -> the sync name, where the protocols name them differently.
ASYNC_NAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__"}
PROTOCOL = {"__init__", "__enter__", "__exit__", "__iter__", *ASYNC_NAMES}
MISSING_FILE = "/nonexistent/imagegen-test-ca.pem"


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Every public method (and protocol method) cls defines or inherits from this project."""
    methods: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__[:-1]):  # object's own methods left out
        for name, member in vars(klass).items():
            if callable(member) and (not name.startswith("_") or name in PROTOCOL):
                methods[ASYNC_NAMES.get(name, name)] = member
    return methods


def parameters(method: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.default, p.kind) for p in inspect.signature(method).parameters.values()]


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=[sync.__name__ for sync, _ in PAIRS])
def test_both_clients_have_the_same_methods_and_parameters(sync_cls: type, async_cls: type) -> None:
    sync_methods, async_methods = public_methods(sync_cls), public_methods(async_cls)
    assert sorted(sync_methods) == sorted(async_methods)
    for name, sync_method in sync_methods.items():
        async_method = async_methods[name]
        assert parameters(sync_method) == parameters(async_method), name
        assert not inspect.iscoroutinefunction(sync_method) and not inspect.isasyncgenfunction(sync_method), name
        if name == "__init__":
            assert not inspect.iscoroutinefunction(async_method), name
        elif inspect.isgeneratorfunction(sync_method):
            assert inspect.isasyncgenfunction(async_method), name
        else:
            assert inspect.iscoroutinefunction(async_method), name


def public_attributes(instance: object) -> set[str]:
    return {name for name in vars(instance) if not name.startswith("_")}


async def test_both_clients_have_the_same_public_attributes() -> None:
    first = GetImageResponse(mime_type="image/png", total_size=3, chunk_data=b"abc", content_sha256="ab" * 32)
    assert public_attributes(ImageStream(None, first)) == public_attributes(AsyncImageStream(None, first)) == {
        "mime_type", "total_size", "content_sha256", "reference_images"
    }
    sync_client = ImagegenClient("127.0.0.1:1", "127.0.0.1:2")
    async_client = AsyncImagegenClient("127.0.0.1:1", "127.0.0.1:2")
    try:
        assert public_attributes(sync_client) == public_attributes(async_client) == {"planner", "executor"}
    finally:
        sync_client.close()
        await async_client.close()


class Channels:
    """Records every channel a client module builds, to check each is closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        self.built: list[Any] = []
        build = getattr(module, name)

        def recording(target: str, options: ChannelOptions | None = None) -> Any:
            channel = build(target, options)
            self.built.append(channel)
            return channel

        monkeypatch.setattr(module, name, recording)


async def closed(channel: grpc.Channel | grpc.aio.Channel) -> bool:
    """Whether a call on channel is refused because the channel is closed."""
    call = channel.unary_unary("/imagegen.v1.PlannerService/CreatePlan")
    try:
        if isinstance(channel, grpc.aio.Channel):
            await asyncio.wait_for(call(b"", timeout=0.1), 1)
        else:
            call(b"", timeout=0.1)
    except (ValueError, grpc.aio.UsageError) as error:  # sync: ValueError; asyncio: UsageError
        return "closed" in str(error).lower()
    except grpc.RpcError:
        return False
    return False


# The client, its module, and the name under which that module builds its channels.
CLIENTS = {
    "sync": (ImagegenClient, clients.sync, "sync_channel"),
    "asyncio": (AsyncImagegenClient, clients.aio, "aio_channel"),
}


async def close(closeable: Any) -> None:
    result = closeable.close()
    if inspect.isawaitable(result):
        await result


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    "executor_options",
    [ChannelOptions(root_ca=MISSING_FILE), ChannelOptions(token="t" * 32)],
    ids=["unreadable CA file", "options with a ready channel"],
)
async def test_when_the_executor_client_cannot_be_built_the_planner_channel_is_closed(
    monkeypatch: pytest.MonkeyPatch, kind: str, executor_options: ChannelOptions
) -> None:
    client_cls, module, factory = CLIENTS[kind]
    channels = Channels(monkeypatch, module, factory)
    ready = executor_options.root_ca is None  # a ready channel takes no options: ValueError
    executor_target = getattr(clients.channels, factory)("127.0.0.1:2") if ready else "127.0.0.1:2"
    with pytest.raises(ValueError if ready else FileNotFoundError):
        client_cls("127.0.0.1:1", executor_target, executor_options=executor_options)
    planner_channel = channels.built[0]
    assert await closed(planner_channel)
    if ready:  # the caller's channel is the caller's to close
        assert not await closed(executor_target)
        await close(executor_target)


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_built_client_closes_what_it_built_and_nothing_else(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    client_cls, module, factory = CLIENTS[kind]
    channels = Channels(monkeypatch, module, factory)
    ready = getattr(clients.channels, factory)("127.0.0.1:2")
    await close(client_cls("127.0.0.1:1", ready))
    assert len(channels.built) == 1  # the planner's; the executor's is the test's ready one
    assert await closed(channels.built[0])
    assert not await closed(ready)
    await close(ready)
