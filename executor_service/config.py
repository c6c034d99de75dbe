"""The executor's settings: read from the environment once, at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from executor_service.ports import QuotaLimit
from executor_service.pricing import PriceTable
from executor_service.providers import image_options
from imagegen import catalogue
from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.server_settings import ServerSettings
from imagegen_runtime.settings import ConfigError, env_bool, env_choice, env_float, env_int, env_str, env_url
from imagegen_runtime.telemetry.settings import TelemetrySettings

PROVIDERS = ("offline", "openai", "azure", "comfyui", "gemini", "imagen")
STORES = ("local", "minio")
MIN_URL_EXPIRY_SECONDS = int(catalogue.MIN_URL_EXPIRY.total_seconds())
MAX_URL_EXPIRY_SECONDS = int(catalogue.MAX_URL_EXPIRY.total_seconds())
# GetImage's image bytes held between the store and gRPC, all calls together.
DEFAULT_IMAGE_BUFFER_BYTES = 32 * 1024 * 1024
DEFAULT_IMAGE_WRITE_TIMEOUT_SECONDS = 30.0
MAX_EXECUTION_WORKERS = 1024
# The shortest EXECUTOR_PAGE_TOKEN_KEY: SHA-256's output, as RFC 2104 section 3 advises.
MIN_PAGE_TOKEN_KEY_BYTES = 32
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
QUOTA_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_QUOTA = re.compile(rf"([1-9][0-9]{{0,8}})/({'|'.join(QUOTA_WINDOWS)})")


@dataclass(frozen=True)
class ExecutorSettings(ServerSettings):
    # What every server has, with this service's defaults (imagegen_runtime.server_settings:
    # EXECUTOR_ADDRESS, ..., telemetry as in docs/operations.md, TLS and the token).
    address: str = "127.0.0.1:50052"
    shutdown_grace_seconds: float = 30.0
    telemetry: TelemetrySettings = TelemetrySettings(service_name="imagegen-executor")
    security: ServerSecurity = ServerSecurity(prefix="EXECUTOR")
    # Providers, in fallback order.
    providers: tuple[str, ...] = ("offline",)
    openai_base_url: str = ""  # empty: OpenAI's
    openai_api_key: str = field(default="", repr=False)  # never printed, never logged
    openai_model: str = image_options.DEFAULT_MODEL
    openai_quality: str = "auto"
    openai_moderation: str = "auto"
    openai_timeout_seconds: float = 180.0
    # Azure OpenAI (provider "azure"; docs/providers.md): the resource's endpoint, the
    # deployment and API version; the key, or none to sign in with Microsoft Entra ID
    # (azure-identity's DefaultAzureCredential). Timeout and retries are the OpenAI ones.
    azure_openai_endpoint: str = ""
    azure_openai_deployment: str = ""
    azure_openai_api_version: str = "2025-04-01-preview"
    azure_openai_api_key: str = field(default="", repr=False)
    azure_openai_model: str = image_options.DEFAULT_MODEL  # the model the deployment runs
    # ComfyUI (provider "comfyui"): the server, a workflow template (empty: the shipped
    # SDXL one), the checkpoint the shipped one loads, the negative prompt when a plan
    # has none, one HTTP request's timeout and a whole render's.
    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_workflow: str = ""
    comfyui_checkpoint: str = "sd_xl_base_1.0.safetensors"
    comfyui_negative_prompt: str = "blurry, low quality, watermark, text"
    comfyui_request_timeout_seconds: float = 30.0
    comfyui_timeout_seconds: float = 600.0
    # Google (providers "gemini" and "imagen"): the Gemini API with a key, or Vertex AI
    # with a project and location (Application Default Credentials); an optional base URL
    # (a regional or private endpoint, a proxy).
    google_api_key: str = field(default="", repr=False)
    google_vertex_project: str = ""
    google_vertex_location: str = "us-central1"
    google_base_url: str = ""
    gemini_model: str = "gemini-2.5-flash-image"
    imagen_model: str = "imagen-4.0-generate-001"
    google_timeout_seconds: float = 180.0
    google_max_retries: int = 2
    # Every provider renders this format unless a plan's metadata says otherwise,
    # so a fallback provider stores under the same key as the first.
    output_format: str = catalogue.DEFAULT_OUTPUT_FORMAT
    openai_max_retries: int = 2
    # The largest image any provider may return; a larger one is refused (and an
    # OpenAI answer that would decode to more is not read past that).
    max_image_bytes: int = 50 * 1024 * 1024
    # Storage.
    store: str = "local"
    local_store_dir: Path = Path("var/images")
    bucket: str = "imagegen"
    public_base_url: str = "http://127.0.0.1:8000/images"
    minio_endpoint: str = ""
    minio_access_key: str = field(default="", repr=False)
    minio_secret_key: str = field(default="", repr=False)
    minio_secure: bool = False  # in-cluster MinIO is usually plain HTTP; https:// or SECURE=true for TLS
    minio_region: str = "us-east-1"
    # Where players reach the store: image_url is signed for this host (empty: the
    # endpoint above); every request the executor makes still goes to minio_endpoint.
    minio_public_endpoint: str = ""
    minio_public_secure: bool = False  # from its scheme: https:// is TLS, none or http:// is not
    minio_timeout_seconds: float = 10.0
    minio_max_retries: int = 2
    url_expiry_seconds: int = int(catalogue.DEFAULT_URL_EXPIRY.total_seconds())
    # GetImage: image bytes read from the store and not yet taken by gRPC, across all calls.
    getimage_buffer_bytes: int = DEFAULT_IMAGE_BUFFER_BYTES
    # A GetImage caller that takes no message for this long is ended (READER_STALLED).
    getimage_write_timeout_seconds: float = DEFAULT_IMAGE_WRITE_TIMEOUT_SECONDS
    # The store health check (docs/operations.md).
    health_interval_seconds: float = 5.0
    health_timeout_seconds: float = 3.0
    # Coordination (docs/executor.md, "Several replicas"): with EXECUTOR_COORDINATION_URL
    # across every replica, else per process.
    provider_concurrency: int = 0  # provider calls at once; 0: no cap
    lease_seconds: float = 15.0  # a render lease's life unrenewed: how long a dead replica holds up its plan
    request_ttl_seconds: int = 86_400  # how long a request_id is remembered
    # Lifecycle (docs/executor.md, "Image lifecycle, quotas and cost").
    session_quota: tuple[QuotaLimit, ...] = ()  # new renders per session and window; none: unlimited
    retention_days: int = 0  # images older than this are deleted; 0: kept for ever
    retention_sweep_seconds: float = 3600.0  # how often the sweep runs, where the store has no lifecycle rule
    price_table: PriceTable = field(default_factory=PriceTable)
    page_token_key: str = field(default="", repr=False)  # signs ListImages and ListExecutions page tokens
    # Executions (docs/executions.md): how long a record is kept after its last change,
    # and how many executions this replica runs at once.
    execution_ttl_seconds: int = 86_400
    execution_workers: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorSettings:
        env = os.environ if env is None else env
        minio_endpoint, minio_secure = _endpoint(env, "EXECUTOR_MINIO_ENDPOINT", "EXECUTOR_MINIO_SECURE")
        public_endpoint, public_secure = _public_endpoint(env, "EXECUTOR_MINIO_PUBLIC_ENDPOINT")
        settings = cls(
            **cls.server_fields(env, "EXECUTOR"),
            providers=_providers(env, "EXECUTOR_PROVIDER"),
            openai_base_url=env_url(env, "EXECUTOR_OPENAI_BASE_URL"),
            # OPENAI_API_KEY as well, so a deployment that already sets it just works.
            openai_api_key=env_str(env, "EXECUTOR_OPENAI_API_KEY", env_str(env, "OPENAI_API_KEY", "")),
            openai_model=env_str(env, "EXECUTOR_OPENAI_MODEL", cls.openai_model),
            openai_quality=env_choice(env, "EXECUTOR_OPENAI_QUALITY", cls.openai_quality, image_options.QUALITIES),
            output_format=env_choice(env, "EXECUTOR_OUTPUT_FORMAT", cls.output_format, catalogue.OUTPUT_FORMATS),
            openai_moderation=env_choice(
                env, "EXECUTOR_OPENAI_MODERATION", cls.openai_moderation, image_options.MODERATION_LEVELS
            ),
            openai_timeout_seconds=env_float(
                env, "EXECUTOR_OPENAI_TIMEOUT_SECONDS", cls.openai_timeout_seconds, minimum=0.001
            ),
            openai_max_retries=env_int(env, "EXECUTOR_OPENAI_MAX_RETRIES", cls.openai_max_retries),
            azure_openai_endpoint=env_url(env, "EXECUTOR_AZURE_OPENAI_ENDPOINT"),
            azure_openai_deployment=env_str(env, "EXECUTOR_AZURE_OPENAI_DEPLOYMENT", ""),
            azure_openai_api_version=env_str(env, "EXECUTOR_AZURE_OPENAI_API_VERSION", cls.azure_openai_api_version),
            azure_openai_api_key=env_str(env, "EXECUTOR_AZURE_OPENAI_API_KEY", env_str(env, "AZURE_OPENAI_API_KEY", "")),
            azure_openai_model=env_str(env, "EXECUTOR_AZURE_OPENAI_MODEL", cls.azure_openai_model),
            comfyui_url=env_url(env, "EXECUTOR_COMFYUI_URL") or cls.comfyui_url,
            comfyui_workflow=env_str(env, "EXECUTOR_COMFYUI_WORKFLOW", ""),
            comfyui_checkpoint=env_str(env, "EXECUTOR_COMFYUI_CHECKPOINT", cls.comfyui_checkpoint),
            comfyui_negative_prompt=env_str(env, "EXECUTOR_COMFYUI_NEGATIVE_PROMPT", cls.comfyui_negative_prompt),
            comfyui_request_timeout_seconds=env_float(
                env, "EXECUTOR_COMFYUI_REQUEST_TIMEOUT_SECONDS", cls.comfyui_request_timeout_seconds, minimum=0.001
            ),
            comfyui_timeout_seconds=env_float(
                env, "EXECUTOR_COMFYUI_TIMEOUT_SECONDS", cls.comfyui_timeout_seconds, minimum=0.001
            ),
            # GOOGLE_API_KEY as well, as the google-genai SDK reads it.
            google_api_key=env_str(env, "EXECUTOR_GOOGLE_API_KEY", env_str(env, "GOOGLE_API_KEY", "")),
            google_vertex_project=env_str(env, "EXECUTOR_GOOGLE_VERTEX_PROJECT", ""),
            google_vertex_location=env_str(env, "EXECUTOR_GOOGLE_VERTEX_LOCATION", cls.google_vertex_location),
            google_base_url=env_url(env, "EXECUTOR_GOOGLE_BASE_URL"),
            gemini_model=env_str(env, "EXECUTOR_GEMINI_MODEL", cls.gemini_model),
            imagen_model=env_str(env, "EXECUTOR_IMAGEN_MODEL", cls.imagen_model),
            google_timeout_seconds=env_float(
                env, "EXECUTOR_GOOGLE_TIMEOUT_SECONDS", cls.google_timeout_seconds, minimum=0.001
            ),
            google_max_retries=env_int(env, "EXECUTOR_GOOGLE_MAX_RETRIES", cls.google_max_retries),
            max_image_bytes=env_int(env, "EXECUTOR_MAX_IMAGE_BYTES", cls.max_image_bytes),
            store=env_choice(env, "EXECUTOR_STORE", cls.store, STORES),
            local_store_dir=Path(env_str(env, "EXECUTOR_LOCAL_STORE_DIR", str(cls.local_store_dir))),
            bucket=env_str(env, "EXECUTOR_BUCKET", cls.bucket),
            public_base_url=_public_base_url(env, "EXECUTOR_PUBLIC_BASE_URL", cls.public_base_url),
            minio_endpoint=minio_endpoint,
            minio_access_key=env_str(env, "EXECUTOR_MINIO_ACCESS_KEY", ""),
            minio_secret_key=env_str(env, "EXECUTOR_MINIO_SECRET_KEY", ""),
            minio_secure=minio_secure,
            minio_region=env_str(env, "EXECUTOR_MINIO_REGION", cls.minio_region),
            minio_public_endpoint=public_endpoint,
            minio_public_secure=public_secure,
            minio_timeout_seconds=env_float(
                env, "EXECUTOR_MINIO_TIMEOUT_SECONDS", cls.minio_timeout_seconds, minimum=0.001
            ),
            minio_max_retries=env_int(env, "EXECUTOR_MINIO_MAX_RETRIES", cls.minio_max_retries),
            url_expiry_seconds=env_int(env, "EXECUTOR_URL_EXPIRY_SECONDS", cls.url_expiry_seconds),
            getimage_buffer_bytes=env_int(env, "EXECUTOR_GETIMAGE_BUFFER_BYTES", cls.getimage_buffer_bytes),
            getimage_write_timeout_seconds=env_float(
                env, "EXECUTOR_GETIMAGE_WRITE_TIMEOUT_SECONDS", cls.getimage_write_timeout_seconds, minimum=0.001
            ),
            health_interval_seconds=env_float(
                env, "EXECUTOR_HEALTH_INTERVAL_SECONDS", cls.health_interval_seconds, minimum=0.01
            ),
            health_timeout_seconds=env_float(
                env, "EXECUTOR_HEALTH_TIMEOUT_SECONDS", cls.health_timeout_seconds, minimum=0.01
            ),
            provider_concurrency=env_int(env, "EXECUTOR_PROVIDER_CONCURRENCY", cls.provider_concurrency),
            lease_seconds=env_float(env, "EXECUTOR_LEASE_SECONDS", cls.lease_seconds, minimum=1.0),
            request_ttl_seconds=env_int(env, "EXECUTOR_REQUEST_TTL_SECONDS", cls.request_ttl_seconds),
            session_quota=_session_quota(env, "EXECUTOR_SESSION_QUOTA"),
            retention_days=env_int(env, "EXECUTOR_RETENTION_DAYS", cls.retention_days),
            retention_sweep_seconds=env_float(
                env, "EXECUTOR_RETENTION_SWEEP_SECONDS", cls.retention_sweep_seconds, minimum=1.0
            ),
            price_table=_price_table(env, "EXECUTOR_PRICE_TABLE"),
            page_token_key=env_str(env, "EXECUTOR_PAGE_TOKEN_KEY", ""),
            execution_ttl_seconds=env_int(env, "EXECUTOR_EXECUTION_TTL_SECONDS", cls.execution_ttl_seconds),
            execution_workers=env_int(env, "EXECUTOR_EXECUTION_WORKERS", cls.execution_workers),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """ConfigError naming the variable for settings that cannot work together."""
        if not _BUCKET.fullmatch(self.bucket) or ".." in self.bucket:
            raise ConfigError(f"EXECUTOR_BUCKET={self.bucket!r}: expected an S3 bucket name (3-63 of a-z 0-9 . -)")
        if not MIN_URL_EXPIRY_SECONDS <= self.url_expiry_seconds <= MAX_URL_EXPIRY_SECONDS:
            raise ConfigError(
                f"EXECUTOR_URL_EXPIRY_SECONDS={self.url_expiry_seconds}: "
                f"must be {MIN_URL_EXPIRY_SECONDS} to {MAX_URL_EXPIRY_SECONDS}"
            )
        if self.max_image_bytes < 1:
            raise ConfigError(f"EXECUTOR_MAX_IMAGE_BYTES={self.max_image_bytes}: must be at least 1")
        if self.page_token_key and len(self.page_token_key.encode()) < MIN_PAGE_TOKEN_KEY_BYTES:
            # RFC 2104 section 3: a key shorter than the hash's output weakens the HMAC.
            raise ConfigError(
                f"EXECUTOR_PAGE_TOKEN_KEY: must be at least {MIN_PAGE_TOKEN_KEY_BYTES} bytes (a random secret)"
            )
        if self.getimage_buffer_bytes < catalogue.IMAGE_CHUNK_BYTES:
            raise ConfigError(
                f"EXECUTOR_GETIMAGE_BUFFER_BYTES={self.getimage_buffer_bytes}: "
                f"must be at least {catalogue.IMAGE_CHUNK_BYTES} (one GetImage message)"
            )
        if self.provider_concurrency < 0:
            raise ConfigError(
                f"EXECUTOR_PROVIDER_CONCURRENCY={self.provider_concurrency}: must be at least 0 (0: no cap)"
            )
        if self.request_ttl_seconds < 1:
            raise ConfigError(f"EXECUTOR_REQUEST_TTL_SECONDS={self.request_ttl_seconds}: must be at least 1")
        if self.retention_days < 0:
            raise ConfigError(f"EXECUTOR_RETENTION_DAYS={self.retention_days}: must be at least 0 (0: off)")
        if self.execution_ttl_seconds < 1:
            raise ConfigError(f"EXECUTOR_EXECUTION_TTL_SECONDS={self.execution_ttl_seconds}: must be at least 1")
        if not 1 <= self.execution_workers <= MAX_EXECUTION_WORKERS:
            raise ConfigError(
                f"EXECUTOR_EXECUTION_WORKERS={self.execution_workers}: must be 1 to {MAX_EXECUTION_WORKERS}"
            )
        if "openai" in self.providers:
            if self.openai_model in image_options.RETIRED_MODELS:
                raise ConfigError(
                    f"EXECUTOR_OPENAI_MODEL={self.openai_model!r}: retired; use {image_options.DEFAULT_MODEL}"
                )
            if not (self.openai_api_key or self.openai_base_url):
                raise ConfigError(
                    "EXECUTOR_PROVIDER includes openai: set EXECUTOR_OPENAI_API_KEY (or OPENAI_API_KEY) "
                    "or EXECUTOR_OPENAI_BASE_URL"
                )
        if "azure" in self.providers:
            for name, value in (
                ("EXECUTOR_AZURE_OPENAI_ENDPOINT", self.azure_openai_endpoint),
                ("EXECUTOR_AZURE_OPENAI_DEPLOYMENT", self.azure_openai_deployment),
            ):
                if not value:
                    raise ConfigError(f"EXECUTOR_PROVIDER includes azure: set {name}")
            if self.azure_openai_model in image_options.RETIRED_MODELS:
                raise ConfigError(
                    f"EXECUTOR_AZURE_OPENAI_MODEL={self.azure_openai_model!r}: retired; use {image_options.DEFAULT_MODEL}"
                )
        if "comfyui" in self.providers and self.comfyui_workflow and not Path(self.comfyui_workflow).is_file():
            raise ConfigError(f"EXECUTOR_COMFYUI_WORKFLOW={self.comfyui_workflow!r}: no such file")
        if "imagen" in self.providers and not self.google_vertex_project:
            raise ConfigError(
                "EXECUTOR_PROVIDER includes imagen: set EXECUTOR_GOOGLE_VERTEX_PROJECT (the google-genai SDK "
                "sends Imagen's generate_images to Vertex AI only)"
            )
        if ("gemini" in self.providers or "imagen" in self.providers) and not (
            self.google_api_key or self.google_vertex_project
        ):
            raise ConfigError(
                "EXECUTOR_PROVIDER includes gemini or imagen: set EXECUTOR_GOOGLE_API_KEY (or GOOGLE_API_KEY) "
                "or EXECUTOR_GOOGLE_VERTEX_PROJECT"
            )
        if self.store == "minio":
            for name, value in (
                ("EXECUTOR_MINIO_ENDPOINT", self.minio_endpoint),
                ("EXECUTOR_MINIO_ACCESS_KEY", self.minio_access_key),
                ("EXECUTOR_MINIO_SECRET_KEY", self.minio_secret_key),
            ):
                if not value:
                    raise ConfigError(f"EXECUTOR_STORE='minio': set {name}")


def _public_base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """The backend's image route. proxy_url is this + "/" + key, so it must be an http(s)
    URL with a host, a port from 1 to 65535 if one is given, and nothing a key cannot
    follow: no query, fragment, user info or spaces."""
    raw = env_str(env, name, default)
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    if parts.scheme not in ("http", "https"):
        problem = "an http:// or https:// scheme"
    elif not parts.hostname or "@" in parts.netloc:
        problem = "a host, and no user info"
    elif port == 0 or parts.netloc.endswith(":"):
        problem = "a port from 1 to 65535, or none"
    elif "?" in raw or "#" in raw or not raw.isprintable() or any(c.isspace() for c in raw):
        problem = "no query, fragment or spaces: proxy_url is this + / + key"
    else:
        return raw
    raise ConfigError(f"{name}={raw!r}: expected http(s)://host[:port][/path], with {problem}")


def _session_quota(env: Mapping[str, str], name: str) -> tuple[QuotaLimit, ...]:
    """"10/hour,50/day": at most 10 new renders per session in any hour and 50 in any day."""
    raw = env_str(env, name, "").replace(" ", "").lower()
    if not raw:
        return ()
    limits = []
    for part in raw.split(","):
        match = _QUOTA.fullmatch(part)
        if match is None:
            raise ConfigError(
                f"{name}={raw!r}: expected comma-separated RENDERS/WINDOW, WINDOW one of "
                f"{', '.join(QUOTA_WINDOWS)} (e.g. 10/hour,50/day)"
            )
        limits.append(QuotaLimit(int(match[1]), QUOTA_WINDOWS[match[2]], part))
    if len({limit.window_seconds for limit in limits}) != len(limits):
        raise ConfigError(f"{name}={raw!r}: one limit per window")
    return tuple(limits)


def _price_table(env: Mapping[str, str], name: str) -> PriceTable:
    """Inline JSON (starting with "{"), or the path of a JSON file, read once here."""
    raw = env_str(env, name, "").strip()
    if not raw:
        return PriceTable()
    try:
        text = raw if raw.startswith("{") else Path(raw).read_text(encoding="utf-8")
        return PriceTable.from_json(text)
    except OSError as exc:
        raise ConfigError(f"{name}={raw!r}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _providers(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env_str(env, name, "offline").lower()
    names = tuple(part.strip() for part in raw.split(","))
    if any(part not in PROVIDERS for part in names) or len(set(names)) != len(names):
        raise ConfigError(
            f"{name}={raw!r}: expected a comma-separated fallback order of distinct {', '.join(PROVIDERS)}"
        )
    return names


def _endpoint(env: Mapping[str, str], name: str, secure_name: str) -> tuple[str, bool]:
    """host:port, and whether to use TLS: from an http(s):// prefix, else the secure flag."""
    endpoint = env_str(env, name, "").rstrip("/")
    secure = env_bool(env, secure_name, False)
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            endpoint, secure = endpoint[len(scheme):], is_secure
    if "/" in endpoint:
        raise ConfigError(f"{name}={endpoint!r}: expected host:port, with no path")
    return endpoint, secure


def _public_endpoint(env: Mapping[str, str], name: str) -> tuple[str, bool]:
    """host[:port] as players reach the store, and whether that is TLS: https:// is,
    http:// or no scheme is not. No path (presigned URLs start at the host's root).
    The host is lowercased, as browsers send it: the signature covers it."""
    raw = env_str(env, name, "")
    if not raw:
        return "", False
    scheme, has_scheme, rest = raw.partition("://")
    parts = urlsplit(f"{scheme.lower()}://{rest}" if has_scheme else f"http://{raw}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https"):
        problem = "an http:// or https:// scheme, or none"
    elif not parts.hostname or "@" in parts.netloc:
        problem = "a host"
    elif port == 0 or parts.netloc.endswith(":"):
        problem = "a port from 1 to 65535"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "no path: S3 URLs start at the host's root"
    else:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return (f"{host}:{port}" if port else host), parts.scheme == "https"
    raise ConfigError(f"{name}={raw!r}: expected [https://]host[:port], with {problem}")
