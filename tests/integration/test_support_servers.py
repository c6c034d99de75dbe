"""One smoke check per test double in tests/support: each does the one thing the
rest of the suite builds on, through the same SDK imagegen uses.

What imagegen does with those doubles (S3 errors, presigned URLs, SigV4 refusals,
a store that goes away, OpenAI errors, timeouts, retries, malformed answers) is
tested against them in test_minio_store, test_health, test_openai_images,
test_openai_agent and test_llm_planning_service; the doubles' own corner cases
are not tested here.

* ``S3Server`` (or ``ExternalS3`` from S3_TEST_*): an S3 endpoint for minio.
* ``FakeOpenAI``: an OpenAI-compatible HTTP server for the openai SDK.
* ``HeldProvider``: an image provider that counts renders and can be held.
* ``make_pki``: a CA with server and client certificates, and a stranger.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import openai
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from minio import Minio

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from tests.support import fake_openai as fo
from tests.support.executor_server import HeldProvider
from tests.support.pki import make_pki
from tests.support.s3_server import ExternalS3, S3Server

pytestmark = pytest.mark.integration


def test_the_s3_server_stores_and_serves_an_object(s3_server: S3Server | ExternalS3, s3_bucket: str) -> None:
    client: Minio = s3_server.client()
    client.make_bucket(s3_bucket)
    data = fo.make_png(3, 3)
    client.put_object(s3_bucket, "images/a.png", io.BytesIO(data), len(data), content_type="image/png")
    assert client.stat_object(s3_bucket, "images/a.png").content_type == "image/png"
    response = client.get_object(s3_bucket, "images/a.png")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()


async def test_the_fake_openai_answers_an_images_and_a_chat_request(fake_openai: fo.FakeOpenAI) -> None:
    png = fo.make_png(4, 4)
    fake_openai.script_images(fo.images_b64(png, revised_prompt="a revised dragon"))
    # The imagegen tests' "disconnect" cases expect what a 500 gets: the drop must not be a 500.
    fake_openai.script_chat(fo.chat_tool_call("plan_image", {"prompt": "a red dragon"}), fo.disconnect())
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as client:
        images = await client.images.generate(model="gpt-image-1", prompt="dragon", size="1024x1024")
        chat = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "plan a dragon"}],
            tools=[{"type": "function", "function": {"name": "plan_image", "parameters": {}}}],
        )
        with pytest.raises(openai.APIConnectionError) as dropped:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "?"}]
            )
    assert base64.b64decode(images.data[0].b64_json) == png
    assert images.data[0].revised_prompt == "a revised dragon"
    (call,) = chat.choices[0].message.tool_calls
    assert (chat.choices[0].finish_reason, call.function.name) == ("tool_calls", "plan_image")
    assert json.loads(call.function.arguments) == {"prompt": "a red dragon"}
    assert not isinstance(dropped.value, (openai.APITimeoutError, openai.APIStatusError))
    # what the tests read back: every request, with its path, headers and body
    assert [(r.method, r.path) for r in fake_openai.requests] == [
        ("POST", fo.IMAGES_PATH), ("POST", fo.CHAT_PATH), ("POST", fo.CHAT_PATH)
    ]
    assert fake_openai.image_requests[0].body["prompt"] == "dragon"
    assert fake_openai.chat_requests[0].body["messages"][0]["content"] == "plan a dragon"
    assert fake_openai.chat_requests[0].headers["authorization"] == "Bearer test"
    fake_openai.assert_all_consumed()


async def test_the_held_provider_holds_counts_and_sees_a_cancellation() -> None:
    plan = ImageGenerationPlan()
    provider = HeldProvider(b"\x89PNG held", hold=True)
    async with asyncio.timeout(5):
        render = asyncio.ensure_future(provider.render(plan))
        await provider.started.wait()
        assert not render.done()  # held
        provider.release.set()
        assert (await render).data == b"\x89PNG held"
        provider.release.clear()
        provider.started.clear()
        cancelled = asyncio.ensure_future(provider.render(plan))
        await provider.started.wait()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert provider.cancelled.is_set() and provider.calls == 2


def test_the_pki_issues_server_and_client_certificates_and_a_strangers(tmp_path: Path) -> None:
    """The mTLS test's refusal of the stranger proves something only if the stranger's
    certificate is a well-formed one from another CA."""
    pki = make_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    server, client, stranger = (
        x509.load_pem_x509_certificates(path.read_bytes())[0]
        for path in (pki.server_cert, pki.client_cert, pki.stranger_cert)
    )
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    assert stranger.issuer != ca.subject
    with pytest.raises((ValueError, TypeError, InvalidSignature)):
        stranger.verify_directly_issued_by(ca)
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in stranger.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    ).value
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
