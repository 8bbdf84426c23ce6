"""The tokens cpms issues itself: ES256 access tokens (15 minutes) and opaque refresh tokens (30
days, each usable once: refreshing rotates it, presenting a used one revokes its family).

The signing key is ``CPMS_AUTH_SIGNING_KEY`` (an EC P-256 private key, PEM); without it a key is
made at start, so tokens issued before a restart are no longer accepted (fine for development,
logged as a warning). Its public half is published at ``/.well-known/jwks.json`` under its
``kid`` (the key's RFC 7638 thumbprint), for other services to verify cpms's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.auth import OWN_ISSUER, ROLE_CLAIM

ISSUER = OWN_ISSUER
ACCESS_TTL = timedelta(minutes=15)
REFRESH_TTL = timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    access_token: str
    refresh_token: str
    refresh_hash: bytes
    refresh_expires_at: datetime

    def answer(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": int(ACCESS_TTL.total_seconds()),
        }


def refresh_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> tuple[str, bytes, datetime]:
    """A refresh token, its hash (what is kept) and when it expires."""
    token = secrets.token_urlsafe(32)
    return token, refresh_hash(token), datetime.now(UTC) + REFRESH_TTL


class TokenIssuer:
    def __init__(self, private_pem: str | None, audience: str) -> None:
        if private_pem is None:
            self.key: ec.EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
            self.ephemeral = True
        else:
            loaded = serialization.load_pem_private_key(private_pem.encode(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != (
                "secp256r1"
            ):
                raise ValueError("the signing key must be an EC P-256 private key (PEM)")
            self.key, self.ephemeral = loaded, False
        self.audience = audience
        self.public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.kid = _thumbprint(self.public_jwk)
        self.public_jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})

    def access_token(self, client_id: UUID, *, role: str | None = None) -> str:
        """A driver's token, or with ``role="owner"`` a station owner's (:data:`ROLE_CLAIM`)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(client_id),
            "aud": self.audience,
            "iat": now,
            "exp": now + int(ACCESS_TTL.total_seconds()),
            "jti": secrets.token_hex(8),
        }
        if role is not None:
            claims[ROLE_CLAIM] = role
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def issue(self, client_id: UUID) -> Issued:
        """A new access token and a new refresh token (its hash is what is kept)."""
        refresh, hashed, expires_at = new_refresh_token()
        return Issued(self.access_token(client_id), refresh, hashed, expires_at)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, base64url."""
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
