"""Server security: TLS / mutual TLS credentials and the bearer-token check.

ServerSecurity is one block of each service's settings, read from
{PREFIX}_TLS_CERT_FILE, {PREFIX}_TLS_KEY_FILE, {PREFIX}_TLS_CLIENT_CA_FILE,
{PREFIX}_AUTH_TOKEN and {PREFIX}_HEALTH_ADDRESS. The files are read once, when
the server starts (server_credentials()), so a bad file stops the service with
a ConfigError naming the variable.

TokenCheck checks `authorization: Bearer <token>`; the server's interceptor
(imagegen_runtime.interceptor) asks it on every call but health checks, before
any handler code runs, and answers a missing or wrong token with UNAUTHENTICATED
and an ErrorInfo (MISSING_CREDENTIALS or INVALID_CREDENTIALS). Reflection is not
exempt: the service listing is part of the API, so grpcurl passes the header for
it too. The token is never logged, and never part of a message.
"""

from __future__ import annotations

import hmac
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from imagegen import errors
from imagegen_runtime.settings import ConfigError, env_str

# Health is exempt so that Kubernetes' grpc probes and load balancers work without a token.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)
MIN_TOKEN_LENGTH = 16
# A token is one HTTP/2 header value after "Bearer ": visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class ServerSecurity:
    """TLS, mTLS and token auth for one server; all off by default.

    health_address, when set, serves grpc.health.v1 only, in plaintext, on a
    second port: the one Kubernetes' grpc probes (which cannot do TLS) and the
    container health check use when the main port is TLS.
    """

    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: mutual TLS, every client presents a certificate it signed
    auth_token: str = field(default="", repr=False)  # never printed, never logged
    health_address: str = ""
    prefix: str = ""  # the service's variable prefix, so messages name the variable

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> ServerSecurity:
        security = cls(
            tls_cert_file=env_str(env, f"{prefix}_TLS_CERT_FILE", ""),
            tls_key_file=env_str(env, f"{prefix}_TLS_KEY_FILE", ""),
            tls_client_ca_file=env_str(env, f"{prefix}_TLS_CLIENT_CA_FILE", ""),
            auth_token=env_str(env, f"{prefix}_AUTH_TOKEN", ""),
            health_address=env_str(env, f"{prefix}_HEALTH_ADDRESS", ""),
            prefix=prefix,
        )
        security.check()
        return security

    def variable(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}" if self.prefix else suffix

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def mutual_tls(self) -> bool:
        return bool(self.tls_client_ca_file)

    def check(self) -> None:
        """ConfigError naming the variable for settings that cannot work together
        (the files themselves are read at start, by server_credentials)."""
        cert, key, client_ca = (self.variable(s) for s in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"))
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(f"set both {cert} and {key}, or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(f"{client_ca} (mutual TLS) needs {cert} and {key}")
        if self.auth_token:
            name = self.variable("AUTH_TOKEN")
            # The value is never echoed: it is a secret even when it is a bad one.
            if not _TOKEN.fullmatch(self.auth_token):
                raise ConfigError(f"{name}: expected visible ASCII characters with no spaces")
            if len(self.auth_token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"{name}: expected at least {MIN_TOKEN_LENGTH} characters")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials from the files (None: plaintext). Reads them now; a missing,
        unreadable or malformed file, or a key that does not match the certificate,
        is a ConfigError naming the variable."""
        if not self.tls:
            return None
        cert_name, key_name, ca_name = (
            self.variable(s) for s in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE")
        )
        cert = _read_pem(cert_name, self.tls_cert_file, "CERTIFICATE")
        key = _read_pem(key_name, self.tls_key_file, "PRIVATE KEY")
        client_ca = _read_pem(ca_name, self.tls_client_ca_file, "CERTIFICATE") if self.mutual_tls else None
        # grpc only says "Failed to bind" for a key that does not match; the ssl module says which.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except ssl.SSLError as error:
            raise ConfigError(f"{key_name} does not match {cert_name}, or either is malformed: {error}") from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    def token_check(self) -> TokenCheck | None:
        """What checks each call's bearer token; None when no token is set."""
        return TokenCheck(self.auth_token) if self.auth_token else None


def _read_pem(name: str, path: str, kind: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{name}={path!r}: cannot read it: {error.strerror}") from None
    if f"-----BEGIN {kind}".encode() not in data and f" {kind}-----".encode() not in data:
        raise ConfigError(f"{name}={path!r}: expected a PEM file with a {kind.lower()}")
    return data


# ---- bearer tokens ------------------------------------------------------------


_MISSING = errors.Unauthenticated("missing bearer token", reason="MISSING_CREDENTIALS")
_INVALID = errors.Unauthenticated("invalid bearer token", reason="INVALID_CREDENTIALS")


def is_exempt(method: str) -> bool:
    """Calls to method ("/grpc.health.v1.Health/Check") need no token."""
    return method.startswith(UNAUTHENTICATED_PREFIXES)


class TokenCheck:
    """Whether a call carries `authorization: Bearer <token>`: check(metadata) is None
    when it does, else the Unauthenticated error to answer with (MISSING_CREDENTIALS,
    INVALID_CREDENTIALS). imagegen_runtime.interceptor asks it for every call but those
    is_exempt names, before any handler code runs."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def check(self, metadata: Any) -> errors.Unauthenticated | None:
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            return _MISSING
        if len(values) > 1 or not isinstance(values[0], str):
            return _INVALID
        scheme, _, presented = values[0].partition(" ")
        if scheme.lower() != "bearer":
            return _INVALID
        # compare_digest takes time by the presented token's length only, not by where it differs.
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return _INVALID
        return None
