"""GitHub webhook signatures: HMAC-SHA256 of the raw body, compared in constant time.

Source: docs.github.com, "Validating webhook deliveries": the ``X-Hub-Signature-256`` header is
``sha256=`` followed by the hex HMAC-SHA256 of the request body keyed with the webhook secret;
compare with a constant-time function. Their test vector (secret ``It's a Secret to Everybody``,
payload ``Hello, World!``) gives
``sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17``.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``: ``sha256=<64 hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return SIGNATURE_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the right signature of ``body``.

    False for a missing header, one without the ``sha256=`` prefix, or a wrong digest; the
    digests are compared with :func:`hmac.compare_digest`.
    """
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())
