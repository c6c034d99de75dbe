"""ExecutorSettings.from_env for EXECUTOR_MINIO_PUBLIC_ENDPOINT (the host image URLs are
signed for) and EXECUTOR_GETIMAGE_BUFFER_BYTES (GetImage's image bytes in flight)."""

from __future__ import annotations

import pytest

from executor_service.config import DEFAULT_IMAGE_BUFFER_BYTES, ExecutorSettings
from imagegen.catalogue import IMAGE_CHUNK_BYTES
from imagegen_runtime.settings import ConfigError

MINIO = {
    "EXECUTOR_STORE": "minio", "EXECUTOR_MINIO_ENDPOINT": "minio.storage.svc:9000",
    "EXECUTOR_MINIO_ACCESS_KEY": "imagegen", "EXECUTOR_MINIO_SECRET_KEY": "s3cret-value",
}


def test_by_default_urls_name_the_internal_endpoint_and_the_buffer_is_32_mib() -> None:
    settings = ExecutorSettings.from_env(MINIO)
    assert (settings.minio_public_endpoint, settings.minio_public_secure) == ("", False)
    assert settings.getimage_buffer_bytes == DEFAULT_IMAGE_BUFFER_BYTES == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("value", "endpoint", "secure"),
    [
        ("https://images.example.com", "images.example.com", True),
        ("https://images.example.com/", "images.example.com", True),
        ("HTTPS://Images.Example.COM:8443", "images.example.com:8443", True),  # lowercased, as browsers send it
        ("http://localhost:9000", "localhost:9000", False),
        ("127.0.0.1:9000", "127.0.0.1:9000", False),  # no scheme: plain HTTP, whatever EXECUTOR_MINIO_SECURE says
        ("https://[2001:db8::1]:9000", "[2001:db8::1]:9000", True),
    ],
)
def test_the_public_endpoint_is_a_host_and_its_own_tls_from_the_scheme(value: str, endpoint: str, secure: bool) -> None:
    settings = ExecutorSettings.from_env(
        {**MINIO, "EXECUTOR_MINIO_SECURE": "true", "EXECUTOR_MINIO_PUBLIC_ENDPOINT": value}
    )
    assert (settings.minio_public_endpoint, settings.minio_public_secure) == (endpoint, secure)
    assert (settings.minio_endpoint, settings.minio_secure) == ("minio.storage.svc:9000", True)  # unchanged


@pytest.mark.parametrize(
    "value",
    [
        "https://images.example.com/s3",  # a path: S3 URLs start at the host's root
        "https://images.example.com/?x=1",
        "ftp://images.example.com",
        "https://",
        "images.example.com:0",
        "images.example.com:70000",
        "images.example.com:http",
        "user:password@images.example.com",
    ],
)
def test_a_public_endpoint_that_cannot_work_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="EXECUTOR_MINIO_PUBLIC_ENDPOINT"):
        ExecutorSettings.from_env({**MINIO, "EXECUTOR_MINIO_PUBLIC_ENDPOINT": value})


def test_the_getimage_buffer_is_read() -> None:
    settings = ExecutorSettings.from_env({"EXECUTOR_GETIMAGE_BUFFER_BYTES": "134217728"})
    assert settings.getimage_buffer_bytes == 128 * 1024 * 1024


@pytest.mark.parametrize("value", ["lots", "-1", "0", str(IMAGE_CHUNK_BYTES - 1)])
def test_a_getimage_buffer_below_one_message_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="EXECUTOR_GETIMAGE_BUFFER_BYTES"):
        ExecutorSettings.from_env({"EXECUTOR_GETIMAGE_BUFFER_BYTES": value})
    assert ExecutorSettings.from_env(
        {"EXECUTOR_GETIMAGE_BUFFER_BYTES": str(IMAGE_CHUNK_BYTES)}
    ).getimage_buffer_bytes == IMAGE_CHUNK_BYTES


@pytest.mark.parametrize(
    "value",
    ["http://127.0.0.1:8000/images", "https://game.example.com/api/images", "http://[::1]:8000/images/",
     "http://backend.imagegen.svc.cluster.local:8000/images", "https://game.example.com"],
)
def test_the_public_base_url_is_an_http_url_with_a_host(value: str) -> None:
    assert ExecutorSettings.from_env({"EXECUTOR_PUBLIC_BASE_URL": value}).public_base_url == value


@pytest.mark.parametrize(
    "value",
    ["ftp://game.example.com/images", "images", "/api/images", "http:///images", "http://h:0/images",
     "http://h:99999/images", "http://h:x/images", "https://game.example.com/images?sig=1",
     "https://game.example.com/images#top", "https://user:pw@game.example.com/images", "http://h/im ages"],
)
def test_a_public_base_url_that_makes_no_working_proxy_url_is_refused_by_name(value: str) -> None:
    # proxy_url is this + "/" + key: a query, fragment or another scheme gives links that never open.
    with pytest.raises(ConfigError, match="EXECUTOR_PUBLIC_BASE_URL"):
        ExecutorSettings.from_env({"EXECUTOR_PUBLIC_BASE_URL": value})
