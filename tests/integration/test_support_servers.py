"""The test-support servers do what the rest of the suite relies on.

* ``S3Server``: a real SeaweedFS S3 endpoint on loopback with SigV4 auth
  (or ``ExternalS3`` from S3_TEST_* env for the storage-behaviour tests).
* ``FakeOpenAI``: an OpenAI-compatible HTTP server driven by the real SDK.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import pathlib
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

import openai
import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

try:
    from tests.support import fake_openai as fo
    from tests.support.s3_server import ExternalS3, S3Server, S3ServerError, s3_from_environment_or_start
except ModuleNotFoundError:  # repo root not on sys.path (no pytest `pythonpath` configured)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from tests.support import fake_openai as fo
    from tests.support.s3_server import ExternalS3, S3Server, S3ServerError, s3_from_environment_or_start

pytestmark = pytest.mark.integration

EXTERNAL_S3 = bool(os.environ.get("S3_TEST_ENDPOINT"))
needs_own_s3 = pytest.mark.skipif(
    EXTERNAL_S3, reason="S3_TEST_ENDPOINT is set: the external S3 cannot be stopped/inspected"
)


# ======================================================================== S3
@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = s3_from_environment_or_start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        if not server.external:
            server.stop()


@pytest.fixture
def bucket(s3):
    client = s3.client()
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.make_bucket(name)
    yield name
    for obj in client.list_objects(name, recursive=True):
        client.remove_object(name, obj.object_name)
    client.remove_bucket(name)


def _put(client: Minio, bucket: str, key: str, data: bytes, content_type="image/png") -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)


def _get(client: Minio, bucket: str, key: str) -> bytes:
    resp = client.get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $HTTP_PROXY


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_put_stat_get_roundtrip(s3, bucket):
    client = s3.client()
    data = fo.make_png()
    _put(client, bucket, "images/a.png", data)

    stat = client.stat_object(bucket, "images/a.png")
    assert stat.size == len(data)
    assert stat.content_type == "image/png"
    assert _get(client, bucket, "images/a.png") == data


def test_missing_object_and_bucket_raise_s3error(s3, bucket):
    client = s3.client()
    with pytest.raises(S3Error) as exc:
        client.stat_object(bucket, "nope.png")
    assert exc.value.code == "NoSuchKey"
    assert exc.value.response.status == 404
    with pytest.raises(S3Error) as exc:
        client.get_object(f"missing-{uuid.uuid4().hex[:8]}", "nope.png")
    assert exc.value.code == "NoSuchBucket"


def test_presigned_get_url_serves_the_bytes(s3, bucket):
    client = s3.client()
    data = fo.make_png(3, 3)
    _put(client, bucket, "p.png", data)
    url = client.presigned_get_object(bucket, "p.png", expires=dt.timedelta(minutes=5))
    assert url.startswith(f"{'https' if s3.secure else 'http'}://{s3.endpoint}/")
    assert _http_get(url) == (200, data)


def test_tampered_presigned_url_is_refused(s3, bucket):
    client = s3.client()
    _put(client, bucket, "t.png", b"secret")
    url = client.presigned_get_object(bucket, "t.png", expires=dt.timedelta(minutes=5))
    marker = "X-Amz-Signature="
    i = url.index(marker) + len(marker)
    tampered = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]

    status, body = _http_get(tampered)
    assert status == 403
    assert b"SignatureDoesNotMatch" in body


def test_expired_presigned_url_is_refused(s3, bucket):
    client = s3.client()
    _put(client, bucket, "e.png", b"old")
    # Signed ten minutes ago, valid for one second: already expired, no sleep needed.
    url = client.get_presigned_url(
        "GET", bucket, "e.png",
        expires=dt.timedelta(seconds=1),
        request_date=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10),
    )
    status, body = _http_get(url)
    assert status == 403
    assert b"AccessDenied" in body
    assert b"expired" in body.lower()


def test_wrong_secret_key_is_rejected(s3, bucket):
    bad = Minio(s3.endpoint, access_key=s3.access_key, secret_key="wrong-secret",
                region=s3.region, secure=s3.secure)
    with pytest.raises(S3Error) as exc:
        bad.list_buckets()
    assert exc.value.code == "SignatureDoesNotMatch"
    assert exc.value.response.status == 403
    # HEAD responses carry no body, so minio reports a bare 403 as AccessDenied.
    with pytest.raises(S3Error) as exc:
        bad.stat_object(bucket, "anything")
    assert exc.value.response.status == 403


def test_unknown_access_key_is_rejected(s3):
    bad = Minio(s3.endpoint, access_key="no-such-key", secret_key="whatever",
                region=s3.region, secure=s3.secure)
    with pytest.raises(S3Error) as exc:
        bad.list_buckets()
    assert exc.value.code == "InvalidAccessKeyId"
    assert exc.value.response.status == 403


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by ``pid`` (Linux /proc)."""
    inodes = set()
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A == LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            if width == 4:
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))
            else:
                ip = "ipv6:" + hex_ip
            found.add((ip, int(hex_port, 16)))
    return found


@needs_own_s3
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_seaweedfs_listens_only_on_loopback_on_its_assigned_ports(s3):
    listening = _listening_addresses(s3.pid)
    assert listening, "no listening sockets found"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} <= set(s3.ports.values())
    assert ("127.0.0.1", s3.ports["s3"]) in listening


@needs_own_s3
def test_stop_refuses_connections_and_restart_keeps_data(tmp_path):
    server = S3Server(tmp_path)
    with server:
        client = server.client()
        client.make_bucket("keep")
        _put(client, "keep", "k.png", b"persisted")
        endpoint, ports = server.endpoint, dict(server.ports)
        url = client.presigned_get_object("keep", "k.png", expires=dt.timedelta(minutes=5))
        grpc_sockets = [pathlib.Path(f"/tmp/seaweedfs-{n}-grpc-{ports[n + '_grpc']}.sock")
                        for n in ("master", "volume", "filer", "s3", "admin")]

        server.stop()
        assert not server.is_running
        assert server.last_stop_seconds < 10
        assert not any(p.exists() for p in grpc_sockets)
        # With retries=0 the failure is immediate: urllib3 gives up on the
        # first refused connection and minio lets MaxRetryError through.
        with pytest.raises(urllib3.exceptions.MaxRetryError) as exc:
            client.list_buckets()
        assert isinstance(exc.value.reason, urllib3.exceptions.NewConnectionError)
        assert _http_get_refused(url)

        server.start()
        assert (server.endpoint, server.ports) == (endpoint, ports)
        assert _get(client, "keep", "k.png") == b"persisted"  # same client object works again
        assert _http_get(url) == (200, b"persisted")  # presigned URLs survive a restart

        server.stop(graceful=False)  # crash: SIGKILL
        assert not any(p.exists() for p in grpc_sockets)  # stale sockets cleaned up
        server.start()
        assert _get(client, "keep", "k.png") == b"persisted"
    assert not server.is_running


def _http_get_refused(url: str) -> bool:
    try:
        _OPENER.open(url, timeout=5)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@needs_own_s3
def test_start_failure_raises_with_log_tail(tmp_path):
    server = S3Server(tmp_path, weed_binary="/bin/false", startup_timeout=10)
    with pytest.raises(S3ServerError, match="exited with code 1"):
        server.start()
    assert not server.is_running


@needs_own_s3
def test_first_start_moves_off_a_port_taken_meanwhile(tmp_path, monkeypatch):
    from tests.support import s3_server

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_ports = s3_server.free_ports
    calls = []

    def first_call_returns_taken_port(count, host="127.0.0.1"):
        ports = real_free_ports(count, host)
        calls.append(ports)
        if len(calls) == 1:
            ports[6] = taken  # index 6 is the S3 http port (see S3Server._prepare)
        return ports

    monkeypatch.setattr(s3_server, "free_ports", first_call_returns_taken_port)
    try:
        with S3Server(tmp_path) as server:
            assert len(calls) == 2
            assert server.ports["s3"] != taken
            server.client().list_buckets()
    finally:
        squatter.close()


def test_external_s3_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("S3_TEST_ENDPOINT", "http://minio.example:9000")
    monkeypatch.setenv("S3_TEST_ACCESS_KEY", "ak")
    monkeypatch.setenv("S3_TEST_SECRET_KEY", "sk")
    monkeypatch.setenv("S3_TEST_REGION", "eu-west-1")
    monkeypatch.delenv("S3_TEST_SECURE", raising=False)
    ext = s3_from_environment_or_start(tmp_path)
    assert isinstance(ext, ExternalS3) and ext.external
    assert (ext.endpoint, ext.access_key, ext.secret_key, ext.region, ext.secure) == (
        "minio.example:9000", "ak", "sk", "eu-west-1", False)
    assert isinstance(ext.client(), Minio)
    with pytest.raises(S3ServerError, match="cannot start or stop"):
        ext.stop()
    with pytest.raises(S3ServerError, match="cannot start or stop"):
        ext.start()
    assert not list(tmp_path.iterdir())  # nothing was started

    monkeypatch.delenv("S3_TEST_SECRET_KEY")
    with pytest.raises(S3ServerError, match="S3_TEST_SECRET_KEY"):
        s3_from_environment_or_start(tmp_path)


# ================================================================ FakeOpenAI
@pytest.fixture
def fake():
    with fo.FakeOpenAI() as server:
        yield server


def _client(fake, **kwargs) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", **kwargs)


async def _chat(client):
    return await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "plan a dragon"}])


def test_fake_binds_loopback_ephemeral_port(fake):
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    assert fake.port > 0


@pytest.mark.asyncio
async def test_chat_tool_call_is_parsed_and_request_recorded(fake):
    fake.script_chat(fo.chat_tool_call("plan_image", {"prompt": "a red dragon", "n": 2}))
    async with _client(fake) as client:
        resp = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "plan"}],
            tools=[{"type": "function", "function": {"name": "plan_image",
                                                     "parameters": {"type": "object"}}}],
            tool_choice={"type": "function", "function": {"name": "plan_image"}},
        )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "plan_image"
    assert json.loads(call.function.arguments) == {"prompt": "a red dragon", "n": 2}
    assert resp._request_id.startswith("req_fake")

    (req,) = fake.requests
    assert (req.method, req.path) == ("POST", fo.CHAT_PATH)
    assert req.headers["authorization"] == "Bearer test"
    assert req.body["model"] == "gpt-test"
    assert req.body["tools"][0]["function"]["name"] == "plan_image"
    fake.assert_all_consumed()


@pytest.mark.asyncio
async def test_chat_tool_call_with_raw_string_arguments(fake):
    fake.script_chat(fo.chat_tool_call("plan_image", '{"prompt": "unterminated'))
    async with _client(fake) as client:
        resp = await _chat(client)
    assert resp.choices[0].message.tool_calls[0].function.arguments == '{"prompt": "unterminated'


@pytest.mark.asyncio
async def test_chat_content_is_parsed(fake):
    fake.script_chat(fo.chat_content("A dwarf cleric in chain mail."))
    async with _client(fake) as client:
        resp = await _chat(client)
    assert resp.choices[0].message.content == "A dwarf cleric in chain mail."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls is None


@pytest.mark.asyncio
async def test_images_b64_is_decoded(fake):
    png = fo.make_png(4, 4)
    fake.script_images(fo.images_b64(png, revised_prompt="a revised dragon"), fo.images_b64(png))
    async with _client(fake) as client:
        first = await client.images.generate(model="gpt-image-1", prompt="dragon", size="1024x1024")
        second = await client.images.generate(model="gpt-image-1", prompt="dragon")
    assert base64.b64decode(first.data[0].b64_json) == png
    assert first.data[0].revised_prompt == "a revised dragon"
    assert second.data[0].revised_prompt is None
    assert first.usage.total_tokens > 0
    assert [r.body["prompt"] for r in fake.image_requests] == ["dragon", "dragon"]
    assert fake.image_requests[0].body["size"] == "1024x1024"


@pytest.mark.asyncio
async def test_429_raises_rate_limit_error_with_retry_after(fake):
    fake.script_chat(fo.error(429, "Rate limit reached", headers={"Retry-After": "7"}))
    async with _client(fake) as client:
        with pytest.raises(openai.RateLimitError) as exc:
            await _chat(client)
    assert exc.value.status_code == 429
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.message.endswith("Rate limit reached")


@pytest.mark.asyncio
async def test_401_raises_authentication_error(fake):
    fake.script_chat(fo.error(401, "Incorrect API key provided"))
    async with _client(fake) as client:
        with pytest.raises(openai.AuthenticationError) as exc:
            await _chat(client)
    assert exc.value.code == "invalid_api_key"
    assert exc.value.type == "invalid_request_error"


@pytest.mark.asyncio
async def test_400_moderation_raises_bad_request_with_code(fake):
    fake.script_images(fo.error(400, "Your request was rejected by the safety system.",
                                type="image_generation_user_error", code="moderation_blocked"))
    async with _client(fake) as client:
        with pytest.raises(openai.BadRequestError) as exc:
            await client.images.generate(model="gpt-image-1", prompt="forbidden")
    assert exc.value.code == "moderation_blocked"
    assert exc.value.body["code"] == "moderation_blocked"  # body is the inner "error" object
    assert exc.value.type == "image_generation_user_error"


@pytest.mark.asyncio
async def test_500_raises_internal_server_error(fake):
    fake.script_chat(fo.error(500, "The server had an error"))
    async with _client(fake) as client:
        with pytest.raises(openai.InternalServerError):
            await _chat(client)


@pytest.mark.asyncio
async def test_empty_queue_fails_loudly(fake):
    async with _client(fake) as client:
        with pytest.raises(openai.InternalServerError, match="no scripted reply") as exc:
            await _chat(client)
    assert exc.value.code == "no_scripted_reply"
    assert [r.path for r in fake.unscripted] == [fo.CHAT_PATH]
    with pytest.raises(AssertionError, match="unscripted"):
        fake.assert_all_consumed()


@pytest.mark.asyncio
async def test_sdk_retries_are_visible_in_recorded_requests(fake):
    fake.script_chat(fo.error(500, "flaky", headers={"retry-after-ms": "1"}), fo.chat_content("ok"))
    async with _client(fake, max_retries=1) as client:
        resp = await _chat(client)
    assert resp.choices[0].message.content == "ok"
    assert len(fake.chat_requests) == 2


@pytest.mark.asyncio
async def test_timeout_raises_api_timeout_error(fake):
    fake.script_chat(fo.delay(5, fo.chat_content("too late")))
    began = time.monotonic()
    async with _client(fake, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await _chat(client)
    assert time.monotonic() - began < 4


@pytest.mark.asyncio
async def test_disconnect_raises_api_connection_error(fake):
    fake.script_chat(fo.disconnect())
    async with _client(fake) as client:
        with pytest.raises(openai.APIConnectionError) as exc:
            await _chat(client)
    assert not isinstance(exc.value, openai.APITimeoutError)


@pytest.mark.asyncio
async def test_stop_is_fast_with_a_pending_delayed_reply():
    import asyncio

    server = fo.FakeOpenAI().start()
    try:
        server.script_chat(fo.delay(60, fo.chat_content("never")))
        async with _client(server) as client:
            pending = asyncio.ensure_future(_chat(client))
            await asyncio.to_thread(server.wait_for_requests, 1, timeout=10)
            began = time.monotonic()
            await asyncio.to_thread(server.stop)
            assert time.monotonic() - began < 2
            with pytest.raises(openai.APIConnectionError):
                await pending
    finally:
        server.stop()
    assert not server.is_running


def test_sync_client_and_reset(fake):
    fake.script_chat(fo.chat_content("one"), fo.chat_content("unused"))
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client:
        resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert resp.choices[0].message.content == "one"
    assert fake.pending() == 1 and len(fake.requests) == 1
    fake.reset()
    assert fake.pending() == 0 and fake.requests == [] and fake.unscripted == []


def test_callable_reply_sees_the_request(fake):
    fake.script_chat(lambda req: fo.chat_content(f"echo {req.body['messages'][0]['content']}"))
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as client:
        resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "echo hi"


def test_restart_keeps_the_port():
    server = fo.FakeOpenAI()
    with server:
        base_url = server.base_url
    with server:
        assert server.base_url == base_url
