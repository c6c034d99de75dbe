"""ChannelOptions -> channel arguments and service config, without a network."""

from __future__ import annotations

import json

import grpc
import pytest

from clients import ChannelOptions, RetryPolicy
from clients import channels as ch
from clients._common import create_plan_request
from imagegen import catalogue
from imagegen.v1.planner_service_pb2 import PlanningMode
from imagegen_runtime import serving


def args(options: ChannelOptions) -> dict[str, object]:
    return dict(ch.grpc_options(options))


def test_the_defaults_balance_keep_alive_and_retry_only_unavailable() -> None:
    options = args(ChannelOptions())
    config = json.loads(str(options["grpc.service_config"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert {n["service"] for n in method["name"]} == {"imagegen.v1.PlannerService", "imagegen.v1.ExecutorService"}
    assert method["retryPolicy"] == {
        "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "5s",
        "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"],
    }  # fmt: skip
    assert options["grpc.enable_retries"] == 1
    assert (options["grpc.keepalive_time_ms"], options["grpc.keepalive_timeout_ms"]) == (30_000, 10_000)
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_receive_message_length"] == dict(serving.SERVER_OPTIONS)["grpc.max_receive_message_length"]
    assert "grpc.ssl_target_name_override" not in options


def test_client_keepalive_and_server_enforcement_agree() -> None:
    """A client pinging more often than the server allows gets GOAWAY too_many_pings."""
    server = dict(serving.SERVER_OPTIONS)
    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.http2.min_ping_interval_without_data_ms"] == catalogue.MIN_PING_INTERVAL_SECONDS * 1000
    assert args(ChannelOptions())["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    with pytest.raises(ValueError, match="refuse pings"):
        ChannelOptions(keepalive_time=5)


def test_options_turn_things_off_and_override() -> None:
    options = args(ChannelOptions(retry=None, keepalive_time=0, load_balancing="pick_first", server_name="localhost"))
    config = json.loads(str(options["grpc.service_config"]))
    assert config == {"loadBalancingConfig": [{"pick_first": {}}]}
    assert options["grpc.enable_retries"] == 0
    assert "grpc.keepalive_time_ms" not in options
    assert options["grpc.ssl_target_name_override"] == "localhost"
    retry = json.loads(str(args(ChannelOptions(retry=RetryPolicy(max_attempts=5, initial_backoff=0.25)))["grpc.service_config"]))
    assert retry["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5
    assert retry["methodConfig"][0]["retryPolicy"]["initialBackoff"] == "0.25s"


@pytest.mark.parametrize("attempts", [1, 6])
def test_retry_attempts_stay_within_what_grpc_allows(attempts: int) -> None:
    with pytest.raises(ValueError, match="2 to 5"):
        RetryPolicy(max_attempts=attempts)


def test_tls_is_on_with_any_tls_option() -> None:
    assert not ChannelOptions().secure and not ChannelOptions(token="t" * 16).secure
    assert ChannelOptions(tls=True).secure and ChannelOptions(root_ca=b"pem").secure
    assert ChannelOptions(client_cert=b"c", client_key=b"k").secure
    with pytest.raises(ValueError, match="both client_cert and client_key"):
        ChannelOptions(client_cert=b"c")


def test_the_token_is_not_in_the_options_repr() -> None:
    assert "secret-token" not in repr(ChannelOptions(token="secret-token"))
    assert "secret-token" not in repr(ch.BearerToken("secret-token"))
    assert all("secret-token" not in repr(i) for i in ch.aio_bearer_token("secret-token"))


def test_a_ready_channel_takes_no_options() -> None:
    from clients import PlannerClient

    with grpc.insecure_channel("127.0.0.1:1") as channel, pytest.raises(ValueError, match="ready channel"):
        PlannerClient(channel, options=ChannelOptions())


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, PlanningMode.PLANNING_MODE_UNSPECIFIED),
        ("offline", PlanningMode.PLANNING_MODE_OFFLINE),
        ("LLM", PlanningMode.PLANNING_MODE_LLM),
        ("auto", PlanningMode.PLANNING_MODE_AUTO),
        (PlanningMode.PLANNING_MODE_OFFLINE, PlanningMode.PLANNING_MODE_OFFLINE),
    ],
)
def test_create_plan_requests_carry_the_mode(mode: str | int | None, expected: int) -> None:
    assert create_plan_request("x", session_id="s", mode=mode).mode == expected


@pytest.mark.parametrize("mode", ["unspecified", "magic"])
def test_an_unknown_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="auto, llm, offline"):
        create_plan_request("x", session_id="s", mode=mode)
