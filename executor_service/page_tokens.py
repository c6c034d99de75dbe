"""ListImages page tokens (AIP-158): opaque to callers, and tamper-evident.

A token holds the position of the last image of its page (create time in microseconds,
object key) and the listing it belongs to (session and image type folder), signed with
HMAC-SHA256 (RFC 2104) under the executor's key. A token that was changed, made by
someone else, or issued for another session or image type does not open. The position
is in the token (base64url, readable by whoever has it): it names only an image of the
session the caller is already listing. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from imagegen.catalogue import MAX_PAGE_TOKEN_CHARS

_DIGEST_BYTES = 32
# Every token starts with a letter: base64url may start with "-", which a command line
# (argparse's `--page-token TOKEN`, most getopt parsers) takes for an option.
PREFIX = "p"


class NotOurs(Exception):
    """The token was not issued by this key for this listing, or was modified."""


class PageTokens:
    """key: the HMAC key, the same on every replica behind one address (empty: random,
    so tokens work against this process only)."""

    def __init__(self, key: bytes = b"") -> None:
        self._key = key or secrets.token_bytes(32)

    def issue(self, position: tuple[int, str], listing: str) -> str:
        body = json.dumps([listing, position[0], position[1]], separators=(",", ":")).encode()
        return PREFIX + _b64(self._sign(body) + body)

    def open(self, token: str, listing: str) -> tuple[int, str]:
        """The position after which the next page starts; NotOurs otherwise."""
        if len(token) > MAX_PAGE_TOKEN_CHARS:  # longer than any this issues: not read
            raise NotOurs("too long")
        if not token.startswith(PREFIX):
            raise NotOurs("not a page token")
        token = token.removeprefix(PREFIX)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise NotOurs("not base64url") from None
        digest, body = raw[:_DIGEST_BYTES], raw[_DIGEST_BYTES:]
        if not hmac.compare_digest(digest, self._sign(body)):
            raise NotOurs("signature")
        try:
            issued_for, micros, key = json.loads(body)
        except (ValueError, TypeError):
            raise NotOurs("body") from None
        if issued_for != listing or not isinstance(micros, int) or not isinstance(key, str):
            raise NotOurs("another listing")
        return micros, key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
