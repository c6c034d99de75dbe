"""Channels to the services, built in one place from a small options object.

    options = ChannelOptions(root_ca="ca.pem", token=os.environ["PLANNER_TOKEN"])
    channel = aio_channel("dns:///planner.imagegen.svc.cluster.local:50051", options)

What a channel gets (docs/architecture.md, "Clients"):
- TLS when a root CA, a client certificate or tls=True is given (mutual TLS with
  the client certificate and key); server_name overrides the name checked
  against the server's certificate.
- The bearer token: on TLS as call credentials, which gRPC itself refuses to
  send over plaintext; on plaintext (local runs, or a mesh that encrypts
  between pods) as an `authorization` header added by a client interceptor.
- round_robin over every address the target resolves to (`dns:///` names of
  headless Services), keepalive pings that the servers accept
  (imagegen.catalogue.MIN_PING_INTERVAL_SECONDS), and a service config whose
  retry policy retries only UNAVAILABLE, a bounded number of times with
  exponential backoff. Every RPC of both services is safe to retry: planning has
  no side effects, and an execution of the same plan stores the same object. The
  services mark the UNAVAILABLE they report themselves (a provider, store or LLM
  down, already retried) with retry pushback -1, so only the transport's is replayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from imagegen.catalogue import DEFAULT_KEEPALIVE_SECONDS, MAX_MESSAGE_BYTES, MIN_PING_INTERVAL_SECONDS

SERVICES = ("imagegen.v1.PlannerService", "imagegen.v1.ExecutorService")
Pem = bytes | str | Path  # PEM bytes, or the path of a PEM file


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy for every RPC of both services (gRPC caps attempts at 5)."""

    max_attempts: int = 4  # the first call included
    initial_backoff: float = 0.1  # seconds; each retry waits a random time up to the current backoff
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts={self.max_attempts}: gRPC allows 2 to 5")
        if self.initial_backoff <= 0 or self.max_backoff <= 0 or self.backoff_multiplier <= 0:
            raise ValueError("retry backoffs and multiplier must be greater than 0")

    def as_json(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }


@dataclass(frozen=True)
class ChannelOptions:
    """How to reach one service; the defaults are right for Kubernetes with plaintext."""

    tls: bool = False  # TLS with the system's root certificates when no root_ca is given
    root_ca: Pem | None = None  # the CA that signed the server's certificate
    client_cert: Pem | None = None  # mutual TLS: this client's certificate (chain) ...
    client_key: Pem | None = None  # ... and its private key
    server_name: str | None = None  # the name to check the server's certificate against
    token: str | None = field(default=None, repr=False)  # the service's bearer token; never printed
    load_balancing: str = "round_robin"  # or "pick_first"
    keepalive_time: float = DEFAULT_KEEPALIVE_SECONDS  # seconds between pings on an idle connection; 0: no pings
    keepalive_timeout: float = 10.0  # seconds to wait for a ping's answer before reconnecting
    retry: RetryPolicy | None = RetryPolicy()  # None: no retries
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both client_cert and client_key")
        # The servers answer pings this often and no more: faster gets GOAWAY too_many_pings.
        if self.keepalive_time and self.keepalive_time < MIN_PING_INTERVAL_SECONDS:
            raise ValueError(
                f"keepalive_time={self.keepalive_time}: the servers refuse pings more often than every "
                f"{MIN_PING_INTERVAL_SECONDS:g} s"
            )

    @property
    def secure(self) -> bool:
        return self.tls or self.root_ca is not None or self.client_cert is not None


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def service_config(options: ChannelOptions) -> dict[str, Any]:
    config: dict[str, Any] = {"loadBalancingConfig": [{options.load_balancing: {}}]}
    if options.retry is not None:
        config["methodConfig"] = [
            {"name": [{"service": name} for name in SERVICES], "retryPolicy": options.retry.as_json()}
        ]
    return config


def grpc_options(options: ChannelOptions) -> list[tuple[str, Any]]:
    """The channel arguments for options (credentials and the token aside)."""
    args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.service_config", json.dumps(service_config(options))),
        ("grpc.enable_retries", 1 if options.retry is not None else 0),
    ]
    if options.keepalive_time:
        args += [
            ("grpc.keepalive_time_ms", round(options.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", round(options.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging an idle connection
        ]
    if options.server_name:
        args.append(("grpc.ssl_target_name_override", options.server_name))
    return args


def channel_credentials(options: ChannelOptions) -> grpc.ChannelCredentials:
    """TLS credentials, with the token as call credentials when there is one."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem(options.root_ca),
        private_key=_pem(options.client_key),
        certificate_chain=_pem(options.client_cert),
    )
    if options.token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(options.token)
        )
    return credentials


def sync_channel(target: str, options: ChannelOptions | None = None) -> grpc.Channel:
    """A blocking channel to target ("host:port", "dns:///name:port", "ipv4:a:p,b:p")."""
    options = options or ChannelOptions()
    args = grpc_options(options)
    if options.secure:
        return grpc.secure_channel(target, channel_credentials(options), options=args)
    channel = grpc.insecure_channel(target, options=args)
    return grpc.intercept_channel(channel, BearerToken(options.token)) if options.token else channel


def aio_channel(target: str, options: ChannelOptions | None = None) -> grpc.aio.Channel:
    """An asyncio channel to target; see sync_channel."""
    options = options or ChannelOptions()
    args = grpc_options(options)
    if options.secure:
        return grpc.aio.secure_channel(target, channel_credentials(options), options=args)
    interceptors = aio_bearer_token(options.token) if options.token else None
    return grpc.aio.insecure_channel(target, options=args, interceptors=interceptors)


# ---- the token on plaintext channels ------------------------------------------


def _with_token(metadata: Sequence[tuple[str, Any]] | None, header: tuple[str, str]) -> list[tuple[str, Any]]:
    return [*(item for item in metadata or () if item[0] != "authorization"), header]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(***)"

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method, details.timeout, _with_token(details.metadata, self._header),
            details.credentials, getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioToken:
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"

    def _details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return d._replace(metadata=grpc.aio.Metadata(*_with_token(d.metadata, self._header)))  # type: ignore[attr-defined]

    async def _intercept(self, continuation, client_call_details, request_or_iterator):  # type: ignore[no-untyped-def]
        """Every kind of call alike: on with the token in its metadata."""
        return await continuation(self._details(client_call_details), request_or_iterator)


# One class per call kind: an aio channel files each interceptor under one kind only.
class _AioUnaryUnaryToken(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _AioToken._intercept


class _AioUnaryStreamToken(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _AioToken._intercept


class _AioStreamUnaryToken(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _AioToken._intercept


class _AioStreamStreamToken(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _AioToken._intercept


def aio_bearer_token(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add `authorization: Bearer <token>` to every call of an aio channel."""
    return [cls(token) for cls in (_AioUnaryUnaryToken, _AioUnaryStreamToken, _AioStreamUnaryToken, _AioStreamStreamToken)]
