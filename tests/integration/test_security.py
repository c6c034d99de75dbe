"""TLS, mutual TLS and bearer tokens, through both real servers and clients/."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients import (
    AsyncExecutorClient,
    AsyncImagegenClient,
    AsyncPlannerClient,
    ChannelOptions,
    ExecutionFailed,
    ImagegenClient,
    PlanningFailed,
)
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.serving import RunningServer
from imagegen_runtime.telemetry.logs import LOG_FORMATS
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.logs import captured_logs
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.integration

PLANNER_TOKEN = "planner-token-0123456789abcdef"
EXECUTOR_TOKEN = "executor-token-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.asynccontextmanager
async def planner(security: ServerSecurity) -> AsyncIterator[RunningServer]:
    running = await create_planner_server(PlannerSettings(address="127.0.0.1:0", security=security))
    try:
        yield running
    finally:
        await running.stop(None)


@contextlib.asynccontextmanager
async def both(tmp_path: Path, planner_security: ServerSecurity, executor_security: ServerSecurity):  # type: ignore[no-untyped-def]
    settings = ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path / "images", security=executor_security)
    async with planner(planner_security) as running_planner:
        running_executor = await create_executor_server(settings)
        try:
            yield f"127.0.0.1:{running_planner.port}", f"127.0.0.1:{running_executor.port}"
        finally:
            await running_executor.stop(None)


def tls(pki: Pki, **kwargs: str) -> ServerSecurity:
    return ServerSecurity(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), **kwargs)


async def plan_with(target: str, options: ChannelOptions) -> str:
    async with AsyncPlannerClient(target, options=options, timeout=10) as client:
        plan = await client.create_plan("A lantern in the fog", session_id="sec", mode="offline")
    return plan.plan_id


# ---- TLS and mutual TLS ---------------------------------------------------------


async def test_tls_client_succeeds_and_plaintext_client_fails(pki: Pki) -> None:
    async with planner(tls(pki)) as running:
        target = f"127.0.0.1:{running.port}"
        assert len(await plan_with(target, ChannelOptions(root_ca=pki.ca))) == 32
        # the CA as bytes, and the server's name instead of its address
        assert await plan_with(f"localhost:{running.port}", ChannelOptions(root_ca=pki.ca.read_bytes()))
        with pytest.raises(PlanningFailed) as plaintext:
            await plan_with(target, ChannelOptions())
        assert plaintext.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(PlanningFailed) as untrusted:  # the system roots do not know the test CA
            await plan_with(target, ChannelOptions(tls=True))
        assert untrusted.value.code == grpc.StatusCode.UNAVAILABLE


async def test_server_name_override_checks_the_certificate_against_that_name(pki: Pki) -> None:
    async with planner(tls(pki)) as running:
        target = f"127.0.0.1:{running.port}"
        assert await plan_with(target, ChannelOptions(root_ca=pki.ca, server_name="localhost"))
        with pytest.raises(PlanningFailed) as wrong_name:
            await plan_with(target, ChannelOptions(root_ca=pki.ca, server_name="planner.elsewhere.test"))
        assert wrong_name.value.code == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki: Pki) -> None:
    async with planner(tls(pki, tls_client_ca_file=str(pki.ca))) as running:
        target = f"127.0.0.1:{running.port}"
        trusted = ChannelOptions(root_ca=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key)
        assert await plan_with(target, trusted)
        for options in (
            ChannelOptions(root_ca=pki.ca),  # no client certificate
            replace(trusted, client_cert=pki.stranger_cert, client_key=pki.stranger_key),  # another CA's
        ):
            with pytest.raises(PlanningFailed) as refused:
                await plan_with(target, options)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE


async def test_the_sync_clients_do_tls_and_tokens_through_both_services(pki: Pki, tmp_path: Path) -> None:
    """The blocking clients (in a worker thread, the servers on this loop): over TLS
    the token goes as call credentials, over plaintext through the interceptor."""
    for name, security, base in (
        ("tls", tls(pki), ChannelOptions(root_ca=pki.ca)),
        ("plaintext", ServerSecurity(), ChannelOptions()),
    ):
        async with both(
            tmp_path / name, replace(security, auth_token=PLANNER_TOKEN), replace(security, auth_token=EXECUTOR_TOKEN)
        ) as (planner_target, executor_target):

            def calls() -> None:
                with ImagegenClient(
                    planner_target, executor_target,
                    planner_options=replace(base, token=PLANNER_TOKEN),
                    executor_options=replace(base, token=EXECUTOR_TOKEN),
                ) as client:  # fmt: skip
                    generation = client.generate("A lantern in the fog", session_id=f"sync-{name}", mode="offline")
                    assert client.executor.get_image(generation.result.storage_path).data[:4] == b"\x89PNG"
                with ImagegenClient(planner_target, executor_target, planner_options=base) as anonymous:
                    with pytest.raises(PlanningFailed) as refused:
                        anonymous.planner.create_plan("x", session_id="s")
                    assert (refused.value.code, refused.value.reason) == (
                        grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS",
                    )  # fmt: skip

            await asyncio.to_thread(calls)


# ---- bearer tokens ----------------------------------------------------------------


@pytest.fixture
async def tokened(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async with both(
        tmp_path, ServerSecurity(auth_token=PLANNER_TOKEN), ServerSecurity(auth_token=EXECUTOR_TOKEN)
    ) as targets:
        yield targets


@pytest.mark.parametrize(
    ("token", "reason"), [(None, "MISSING_CREDENTIALS"), ("not-the-token-0123456789", "INVALID_CREDENTIALS")]
)
async def test_a_missing_or_wrong_token_is_unauthenticated_on_unary_and_streaming_rpcs(
    tokened: tuple[str, str], token: str | None, reason: str
) -> None:
    planner_target, executor_target = tokened
    async with AsyncImagegenClient(
        planner_target, executor_target,
        planner_options=ChannelOptions(token=PLANNER_TOKEN), executor_options=ChannelOptions(token=EXECUTOR_TOKEN),
    ) as good:  # fmt: skip
        generation = await good.generate("A crown of thorns", session_id="tok", mode="offline")
        plan = generation.plan
        assert [e.stage async for e in good.executor.stream_execute_plan(plan)][-1] > 0
        assert (await good.executor.get_image(generation.result.storage_path)).data[:4] == b"\x89PNG"

    async with AsyncPlannerClient(planner_target, options=ChannelOptions(token=token)) as bad_planner:
        with pytest.raises(PlanningFailed) as unary:
            await bad_planner.create_plan("A crown of thorns", session_id="tok")
    async with AsyncExecutorClient(executor_target, options=ChannelOptions(token=token)) as bad_executor:
        with pytest.raises(ExecutionFailed) as streaming:
            [event async for event in bad_executor.stream_execute_plan(plan)]
        with pytest.raises(ExecutionFailed) as image:
            await bad_executor.get_image(generation.result.storage_path)
        with pytest.raises(ExecutionFailed) as executed:
            await bad_executor.execute_plan(plan)
    for failure in (unary, streaming, image, executed):
        assert (failure.value.code, failure.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert streaming.value.plan == plan  # the client still hands back the plan it was given


async def test_the_executors_token_does_not_open_the_planner(tokened: tuple[str, str]) -> None:
    planner_target, _ = tokened
    with pytest.raises(PlanningFailed) as refused:
        await plan_with(planner_target, ChannelOptions(token=EXECUTOR_TOKEN))
    assert refused.value.reason == "INVALID_CREDENTIALS"


async def test_health_needs_no_token_and_reflection_does(tokened: tuple[str, str]) -> None:
    for target in tokened:
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                [answer async for answer in reflection]
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reflection_answers_with_the_token(tokened: tuple[str, str]) -> None:
    planner_target, _ = tokened
    async with grpc.aio.insecure_channel(planner_target) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=[("authorization", f"Bearer {PLANNER_TOKEN}")], timeout=5,
        )  # fmt: skip
        (answer,) = [answer async for answer in reflection]
    assert "imagegen.v1.PlannerService" in {s.name for s in answer.list_services_response.service}


@pytest.mark.parametrize("fmt", LOG_FORMATS)
async def test_tokens_are_never_logged(tokened: tuple[str, str], fmt: str) -> None:
    """Every line the processes write (the services' own log configuration, at DEBUG,
    every field of a JSON line as well as its message) is free of any token."""
    planner_target, executor_target = tokened
    wrong = "wrong-token-that-must-not-leak-42"
    with captured_logs("DEBUG", fmt) as stream:
        assert await plan_with(planner_target, ChannelOptions(token=PLANNER_TOKEN))
        for token in (wrong, "Bearer-less"):
            with pytest.raises(PlanningFailed):
                await plan_with(planner_target, ChannelOptions(token=token))
        async with AsyncImagegenClient(
            planner_target, executor_target,
            planner_options=ChannelOptions(token=PLANNER_TOKEN), executor_options=ChannelOptions(token=EXECUTOR_TOKEN),
        ) as good:  # fmt: skip
            plan = (await good.generate("A lantern in the fog", session_id="sec", mode="offline")).plan
        wrong_executor = AsyncExecutorClient(executor_target, options=ChannelOptions(token=wrong), timeout=10)
        async with wrong_executor as bad:
            with pytest.raises(ExecutionFailed):
                await bad.execute_plan(plan)
        # A server writes a call's closing line after the caller has its answer: wait for
        # the three refusals' lines (bounded) before reading what was logged.
        for _ in range(500):
            refusals = [l for l in stream.getvalue().splitlines() if "imagegen.rpc" in l and "UNAUTHENTICATED" in l]
            if len(refusals) >= 3:
                break
            await asyncio.sleep(0.01)
    lines = stream.getvalue().splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        # the refusals were logged, so the lines checked below include the auth path's
        assert sum(r.get("code") == "UNAUTHENTICATED" for r in records) == 3, lines
    else:
        assert sum("UNAUTHENTICATED" in line for line in lines) == 3, lines
    for secret in (PLANNER_TOKEN, EXECUTOR_TOKEN, wrong, "Bearer-less"):
        assert not [line for line in lines if secret in line], f"{secret} was logged"
    settings = PlannerSettings(security=ServerSecurity(auth_token=PLANNER_TOKEN))
    assert PLANNER_TOKEN not in repr(settings) and PLANNER_TOKEN not in repr(ChannelOptions(token=PLANNER_TOKEN))


# ---- the plaintext health port for probes -------------------------------------------


async def test_a_tls_server_serves_health_alone_in_plaintext_on_its_health_port(pki: Pki) -> None:
    async with planner(tls(pki, health_address="127.0.0.1:0", auth_token=PLANNER_TOKEN)) as running:
        assert running.health_port and running.health_port != running.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            answer = await check(health_pb2.HealthCheckRequest(service="imagegen.v1.PlannerService"), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(PlanningFailed) as only_health:
                async with AsyncPlannerClient(channel) as client:
                    await client.create_plan("x", session_id="s")
            assert only_health.value.code == grpc.StatusCode.UNIMPLEMENTED
            await running.health.enter_graceful_shutdown()  # what stop() does first: probes see the drain
            answer = await check(health_pb2.HealthCheckRequest(service="imagegen.v1.PlannerService"), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_refused_call_still_returns_its_request_id(tokened: tuple[str, str]) -> None:
    planner_target, _ = tokened
    async with grpc.aio.insecure_channel(planner_target) as channel:
        call = planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(
            planner_service_pb2.CreatePlanRequest(prompt="A crown", session_id="tok"),
            metadata=(("x-request-id", "req-no-token"),),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(caught.value.trailing_metadata() or ())["x-request-id"] == "req-no-token"
