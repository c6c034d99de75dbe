"""ExecutorSettings.from_env: defaults, parsing, and the combinations refused at start."""

from __future__ import annotations

import pytest

from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import OpenAIImageProvider
from executor_service.providers.verify import VerifiedProvider
from imagegen_runtime.settings import ConfigError
from tests.unit.test_executor import make_plan

MINIO = {
    "EXECUTOR_STORE": "minio", "EXECUTOR_MINIO_ENDPOINT": "minio:9000",
    "EXECUTOR_MINIO_ACCESS_KEY": "imagegen", "EXECUTOR_MINIO_SECRET_KEY": "s3cret-value",
}


def test_defaults_are_the_embedded_offline_renderer_and_local_store() -> None:
    settings = ExecutorSettings.from_env({})
    assert settings == ExecutorSettings()
    assert (settings.providers, settings.store, settings.openai_model) == (("offline",), "local", "gpt-image-2")
    provider = build_provider(settings)
    assert isinstance(provider, VerifiedProvider) and isinstance(provider.inner, OfflineRenderer)


def test_openai_and_minio_settings_are_read() -> None:
    settings = ExecutorSettings.from_env({
        **MINIO,
        "EXECUTOR_PROVIDER": "openai, offline", "OPENAI_API_KEY": "sk-from-the-usual-place",
        "EXECUTOR_OPENAI_QUALITY": "high", "EXECUTOR_OUTPUT_FORMAT": "webp",
        "EXECUTOR_OPENAI_MODERATION": "low", "EXECUTOR_OPENAI_TIMEOUT_SECONDS": "90",
        "EXECUTOR_OPENAI_MAX_RETRIES": "0", "EXECUTOR_MINIO_ENDPOINT": "https://s3.example.net:9000/",
        "EXECUTOR_MINIO_REGION": "eu-west-1", "EXECUTOR_URL_EXPIRY_SECONDS": "900",
    })
    assert settings.providers == ("openai", "offline")
    assert settings.openai_api_key == "sk-from-the-usual-place"
    assert (settings.openai_quality, settings.output_format, settings.openai_moderation) == ("high", "webp", "low")
    assert (settings.openai_timeout_seconds, settings.openai_max_retries) == (90.0, 0)
    assert (settings.minio_endpoint, settings.minio_secure, settings.minio_region) == ("s3.example.net:9000", True, "eu-west-1")
    assert settings.url_expiry_seconds == 900
    assert "sk-from" not in repr(settings) and "s3cret" not in repr(settings)
    chain = build_provider(settings)
    assert isinstance(chain, ProviderChain)
    assert [type(p.inner) for p in chain.providers] == [OpenAIImageProvider, OfflineRenderer]  # each verified
    assert chain.mime_type(make_plan()) == "image/webp"  # every provider renders the configured format


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"EXECUTOR_PROVIDER": "midjourney"}, "EXECUTOR_PROVIDER"),
        ({"EXECUTOR_PROVIDER": "offline,offline"}, "EXECUTOR_PROVIDER"),
        ({"EXECUTOR_PROVIDER": "openai"}, "EXECUTOR_OPENAI_API_KEY"),
        ({"EXECUTOR_PROVIDER": "openai", "OPENAI_API_KEY": "k", "EXECUTOR_OPENAI_MODEL": "dall-e-3"}, "EXECUTOR_OPENAI_MODEL"),
        ({"EXECUTOR_PROVIDER": "openai", "OPENAI_API_KEY": "k", "EXECUTOR_OPENAI_MODEL": "gpt-image-1"}, "EXECUTOR_OPENAI_MODEL"),
        ({"EXECUTOR_OPENAI_BASE_URL": "localhost:8080"}, "EXECUTOR_OPENAI_BASE_URL"),
        ({"EXECUTOR_OUTPUT_FORMAT": "gif"}, "EXECUTOR_OUTPUT_FORMAT"),
        ({"EXECUTOR_OPENAI_MAX_RETRIES": "-1"}, "EXECUTOR_OPENAI_MAX_RETRIES"),
        ({"EXECUTOR_STORE": "s3"}, "EXECUTOR_STORE"),
        ({**MINIO, "EXECUTOR_MINIO_SECRET_KEY": ""}, "EXECUTOR_MINIO_SECRET_KEY"),
        ({**MINIO, "EXECUTOR_MINIO_ENDPOINT": "minio:9000/bucket"}, "EXECUTOR_MINIO_ENDPOINT"),
        ({"EXECUTOR_URL_EXPIRY_SECONDS": "604801"}, "EXECUTOR_URL_EXPIRY_SECONDS"),
        ({"EXECUTOR_URL_EXPIRY_SECONDS": "0"}, "EXECUTOR_URL_EXPIRY_SECONDS"),
        ({"EXECUTOR_BUCKET": "Images_Bucket"}, "EXECUTOR_BUCKET"),
    ],
)
def test_settings_that_cannot_work_stop_the_start_naming_the_variable(env: dict, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ExecutorSettings.from_env(env)
    assert variable in str(caught.value)


def test_a_base_url_alone_is_enough_for_a_compatible_server() -> None:
    settings = ExecutorSettings.from_env(
        {"EXECUTOR_PROVIDER": "openai", "EXECUTOR_OPENAI_BASE_URL": "http://127.0.0.1:8080/v1/"}
    )
    assert settings.openai_base_url == "http://127.0.0.1:8080/v1" and settings.openai_api_key == ""
