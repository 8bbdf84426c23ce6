"""JWTs for tests: HS256 with a shared secret, RS256/ES256 with keys published as a JWKS file."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-jwt-secret-with-enough-length-0123456789"
AUDIENCE = "authenticated"


def claims(sub: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(sub), "aud": AUDIENCE, "iat": now, "exp": now + 3600, **extra}


def hs256(sub: uuid.UUID | str, *, secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(sub, **extra), secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class KeySet:
    """An RSA and an EC key, their public halves written to ``path`` as a JWKS document."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        keys = []
        for kid, key, alg in (("rsa-1", self.rsa, "RS256"), ("ec-1", self.ec, "ES256")):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        path.write_text(json.dumps({"keys": keys}))

    def rs256(self, sub: uuid.UUID | str, **extra: Any) -> str:
        return jwt.encode(
            claims(sub, **extra), self.rsa, algorithm="RS256", headers={"kid": "rsa-1"}
        )

    def es256(self, sub: uuid.UUID | str, **extra: Any) -> str:
        return jwt.encode(claims(sub, **extra), self.ec, algorithm="ES256", headers={"kid": "ec-1"})
