"""Who is calling: ``Authorization: Bearer <JWT>`` → the client id (the token's ``sub``).

cpms's own tokens (ES256 under its signing key's ``kid``, issuer ``cpms``: :mod:`api.tokens`)
are accepted, and two kinds of tokens of another issuer, so the app's existing Supabase tokens
keep working:

* HS256 signed with ``CPMS_JWT_SECRET``;
* RS256 / ES256 signed with a key from the JWKS document at ``CPMS_JWT_JWKS_URL`` (an
  ``https://`` URL, or a file path), found by the token's ``kid``. The document is cached for ten
  minutes and fetched again, at most once a minute, when a token names a key it lacks.

The audience must be ``CPMS_JWT_AUDIENCE`` (``authenticated`` by default), the issuer
``CPMS_JWT_ISSUER`` when set; ``exp`` and ``sub`` are required and ``sub`` must be a UUID.
Tokens are never logged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import httpx
import jwt
import structlog
import trio

from cpms.kernel.errors import Forbidden, Unauthorized

log = structlog.stdlib.get_logger("api.auth")

ASYMMETRIC = ("RS256", "ES256")
OWN_ISSUER = "cpms"  # the issuer of the tokens cpms signs itself (api.tokens)
#: the claim of cpms's own tokens that makes its subject a station owner (``"owner"``)
ROLE_CLAIM = "cpms_role"
JWKS_TTL = 600.0
JWKS_RETRY = 60.0
#: tokens already verified, kept until they expire: the app sends the same token with every
#: request for its lifetime, and checking its signature each time is most of a request's own work
VERIFIED_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class Proof:
    subject: UUID
    role: Literal["client", "owner"]
    expires_at: float  # Unix time


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`Unauthorized`."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Authorization: Bearer <token> is required")
    return authorization[7:].strip()


class TokenVerifier:
    def __init__(
        self,
        *,
        secret: str | None,
        audience: str,
        issuer: str | None = None,
        jwks_source: str | None = None,
        own_key: tuple[str, Any] | None = None,
    ) -> None:
        self.secret = secret
        self.audience = audience
        self.issuer = issuer
        self.jwks_source = jwks_source
        #: cpms's own signing key (its kid, its public key): the tokens it issues (api.tokens)
        self.own_key = own_key
        self._keys: dict[str, Any] = {}
        self._fetched_at = -JWKS_TTL
        self._lock = trio.Lock()
        self._verified: dict[str, Proof] = {}

    async def client_id(self, authorization: str | None) -> UUID:
        """The client a request's ``Authorization`` header proves, or :class:`Unauthorized`
        (:class:`Forbidden` for a station owner's token)."""
        return (await self.proven(bearer(authorization)))[0]

    async def proven(self, token: str) -> tuple[UUID, float]:
        """The client a token proves and when the proof expires (Unix time), or
        :class:`Unauthorized` (:class:`Forbidden` for a station owner's token)."""
        proof = await self.subject(token)
        if proof.role != "client":
            raise Forbidden(
                "a station owner's token does not act for a driver", code="wrong_account_kind"
            )
        return proof.subject, proof.expires_at

    async def subject(self, token: str) -> Proof:
        """Whom a token proves, a driver (``client``) or a station owner (``owner``: only in
        cpms's own tokens, :data:`ROLE_CLAIM`), or :class:`Unauthorized`."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at:
                return known
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is not a JWT", code="invalid_token") from None
        algorithm = header.get("alg")
        key: Any
        issuer, own = self.issuer, False
        if self.own_key is not None and header.get("kid") == self.own_key[0]:
            if algorithm != "ES256":
                raise Unauthorized("cpms's tokens are ES256", code="invalid_token")
            key, issuer, own = self.own_key[1], OWN_ISSUER, True
        elif algorithm == "HS256":
            if self.secret is None:
                raise Unauthorized("HS256 tokens are not accepted here", code="invalid_token")
            key = self.secret
        elif algorithm in ASYMMETRIC:
            key = await self._public_key(header.get("kid"))
        else:
            raise Unauthorized(
                f"tokens signed with {algorithm} are not accepted", code="invalid_token"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", code="token_expired") from None
        except jwt.PyJWTError as error:
            raise Unauthorized(f"the token is not valid: {error}", code="invalid_token") from None
        if not isinstance(claims["exp"], int | float) or isinstance(claims["exp"], bool):
            raise Unauthorized("the token's exp must be a number", code="invalid_token")
        try:
            client_id = UUID(str(claims["sub"]))
        except ValueError:
            raise Unauthorized(
                "the token's subject is not a client id", code="invalid_token"
            ) from None
        role: Literal["client", "owner"] = (
            "owner" if own and claims.get(ROLE_CLAIM) == "owner" else "client"
        )
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.clear()
        proof = Proof(client_id, role, float(claims["exp"]))
        self._verified[token] = proof
        return proof

    async def _public_key(self, kid: object) -> Any:
        if self.jwks_source is None:
            raise Unauthorized("RS256/ES256 tokens are not accepted here", code="invalid_token")
        async with self._lock:
            now = trio.current_time()
            stale = now - self._fetched_at > JWKS_TTL
            unknown = kid not in self._keys and now - self._fetched_at > JWKS_RETRY
            if stale or unknown:
                await self._fetch()
        key = self._keys.get(str(kid)) if kid is not None else None
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthorized(f"no key {kid!r} in the JWKS document", code="invalid_token")
        return key

    async def _fetch(self) -> None:
        assert self.jwks_source is not None
        try:
            if self.jwks_source.startswith(("https://", "http://")):
                async with httpx.AsyncClient(timeout=5) as http:
                    response = await http.get(self.jwks_source)
                    response.raise_for_status()
                    document = response.json()
            else:
                document = json.loads(await trio.Path(Path(self.jwks_source)).read_text())
            keys = {}
            for jwk in document.get("keys", []):
                if jwk.get("use", "sig") == "sig":
                    keys[str(jwk.get("kid"))] = jwt.PyJWK(jwk).key
        except (httpx.HTTPError, OSError, ValueError, jwt.PyJWTError) as error:
            log.warning("JWKS document unavailable", source=self.jwks_source, error=str(error))
            if not self._keys:
                raise Unauthorized("token keys are unavailable", code="invalid_token") from None
            return
        self._keys = keys
        self._fetched_at = trio.current_time()
