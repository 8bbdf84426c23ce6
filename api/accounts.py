"""Sign-in and the caller's account: ``/api/v1/auth/*`` and ``/.well-known/jwks.json``.

* By phone: ``POST /auth/otp/request`` ``{phone}`` sends a 6-digit code, valid 5 minutes, by SMS
  (:mod:`api.sms`); another can be asked for after 60 s (before, 429 ``otp_cooldown``).
  ``POST /auth/otp/verify`` ``{phone, code}`` signs in (the account is made on first sign-in); a
  wrong code is 400 ``otp_invalid`` with ``attempts_left``, the fifth wrong one spends the code
  (403 ``otp_locked`` until a new one is asked for), an old one is 400 ``otp_expired``.
* By password: ``POST /auth/register`` ``{email and/or phone, password, name?}`` (argon2id; 201),
  ``POST /auth/login`` ``{email or phone, password}`` (401 ``invalid_credentials`` for an unknown
  login and a wrong password alike).
* ``POST /auth/refresh`` ``{refresh_token}`` rotates it (:mod:`api.tokens`); a token presented a
  second time revokes every token of its sign-in (401 ``refresh_token_reused``).
  ``POST /auth/logout`` ``{refresh_token}`` revokes them too.
* ``GET /auth/me``, ``PATCH /auth/me`` ``{name?, email?}``, ``DELETE /auth/me`` (the account is
  ``pending_deletion``: signed out everywhere, nothing can be started or topped up, its personal
  data erased after ``CPMS_ACCOUNT_PURGE_DAYS``).

Sign-in answers ``{access_token, refresh_token, token_type, expires_in, client}``. Codes,
passwords and tokens are never logged or stored as they are.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from quart import Blueprint, Response, jsonify

from actors.core import Core
from api.cookies import (
    CSRF_HEADER,
    clear_cookies,
    cookie_mode,
    new_csrf_token,
    refresh_cookie,
    set_csrf_cookie,
    set_refresh_cookie,
)
from api.door import body, optional_body
from api.identity import Identity
from api.sms import SmsFailed, SmsSender
from api.tokens import Issued, TokenIssuer, new_refresh_token, refresh_hash
from cpms.kernel.bounded import Email, Password, Phone
from cpms.kernel.errors import (
    Forbidden,
    InvalidRequest,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from storage import accounts as store
from storage.accounts import CodeCheck, Rotation

OTP_LIFETIME = timedelta(minutes=5)
OTP_COOLDOWN = timedelta(seconds=60)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeRequest(_Body):
    phone: Phone


class CodeSignIn(_Body):
    phone: Phone
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class Registration(_Body):
    email: Email | None = None
    phone: Phone | None = None
    password: Password
    name: Name | None = None

    @model_validator(mode="after")
    def _a_login(self) -> Registration:
        if self.email is None and self.phone is None:
            raise ValueError("an e-mail or a phone is needed to sign in with")
        return self


class PasswordSignIn(_Body):
    email: Email | None = None
    phone: Phone | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]

    @model_validator(mode="after")
    def _one_login(self) -> PasswordSignIn:
        if (self.email is None) == (self.phone is None):
            raise ValueError("sign in with an e-mail or a phone, one of them")
        return self


class RefreshBody(_Body):
    #: absent in cookie mode (:mod:`api.cookies`): the cookie's is used
    refresh_token: Annotated[str, StringConstraints(min_length=16, max_length=200)] | None = None


class ProfileChange(_Body):
    name: Name | None = None
    email: Email | None = None


def tokens_answer(issued: Issued, by_cookie: bool, **more: Any) -> Response:
    """The sign-in's answer: the tokens in its body, or in cookie mode the refresh token only
    as its httpOnly cookie (:mod:`api.cookies`)."""
    answer = {"success": True, **issued.answer(), **more}
    if not by_cookie:
        return jsonify(answer)
    del answer["refresh_token"]
    response = jsonify(answer)
    set_refresh_cookie(response, issued.refresh_token, issued.refresh_expires_at)
    return response


async def refresh_token_sent() -> tuple[str, bool]:
    """The refresh token of the body, or else of the cookie (CSRF-checked); and whether it
    came by cookie.

    Raises:
        InvalidRequest: ``refresh_token_missing`` when there is neither.
    """
    sent = (await optional_body(RefreshBody)).refresh_token
    if sent is not None:
        return sent, False
    kept = refresh_cookie()
    if kept is None:
        raise InvalidRequest(
            "send the refresh_token, in the body or (cookie mode) as its cookie",
            code="refresh_token_missing",
        )
    return kept, True


#: argon2id, the library's recommended parameters
HASHER = PasswordHasher()


@functools.cache
def nobodys_hash() -> str:
    """The hash of no one's password, verified against for unknown logins: made once per
    process (an argon2 hash takes a tenth of a second), when the first facade is built."""
    return HASHER.hash(secrets.token_hex(16))


async def password_right(stored: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` (argon2id) hashes, checked on a worker thread;
    without a stored hash :func:`nobodys_hash` is checked instead, so an unknown login takes as
    long."""
    try:
        await trio.to_thread.run_sync(HASHER.verify, stored or nobodys_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


def accounts_blueprint(
    core: Core,
    identity: Identity,
    issuer: TokenIssuer,
    sms: SmsSender,
    purge_after_days: int,
) -> Blueprint:
    bp = Blueprint("accounts", __name__)
    nobodys_hash()  # made now, so the first unknown login takes no longer than the next
    pepper = hashlib.sha256(issuer.kid.encode() + b":otp").digest()

    def code_hash(phone: str, code: str) -> bytes:
        return hmac.new(pepper, f"{phone}:{code}".encode(), hashlib.sha256).digest()

    async def signed_in(client_id: UUID, status: int = 200) -> Response:
        issued = issuer.issue(client_id)
        await store.keep_refresh_token(
            core.db, issued.refresh_hash, client_id, issued.refresh_expires_at, family=uuid4()
        )
        profile = await _profile(client_id)
        response = tokens_answer(issued, cookie_mode(), client=profile)
        response.status_code = status
        return response

    async def _profile(client_id: UUID) -> dict[str, Any]:
        row = await store.profile(core.db, client_id)
        return {
            "client_id": str(row["id"]),
            "phone": row["phone"],
            "email": row["email"],
            "name": row["name"],
            "status": row["status"],
            "balance": row["balance"],
            "created_at": row["created_at"],
        }

    def may_sign_in(status: str) -> None:
        if status == "blocked":
            raise Forbidden("this account is blocked", code="client_blocked")
        if status == "pending_deletion":
            raise Forbidden("this account is being deleted", code="client_pending_deletion")

    @bp.post("/api/v1/auth/otp/request")
    async def otp_request() -> Response:
        phone = (await body(CodeRequest)).phone
        code = f"{secrets.randbelow(10**6):06d}"
        wait = await store.put_code(
            core.db, phone, code_hash(phone, code), lifetime=OTP_LIFETIME, cooldown=OTP_COOLDOWN
        )
        if wait > 0:
            raise TooManyRequests(max(1, round(wait)), code="otp_cooldown")
        try:
            await sms.send(phone, f"cpms: your sign-in code is {code}")
        except SmsFailed:
            await store.forget_code(core.db, phone)  # the driver may ask again at once
            raise Unavailable(
                "the code could not be sent; try again shortly", code="sms_unavailable"
            ) from None
        seconds = int(OTP_LIFETIME.total_seconds())
        cooldown = int(OTP_COOLDOWN.total_seconds())
        return jsonify({"success": True, "expires_in": seconds, "resend_in": cooldown})

    @bp.post("/api/v1/auth/otp/verify")
    async def otp_verify() -> Response:
        sent = await body(CodeSignIn)
        checked, left = await store.check_code(
            core.db, sent.phone, code_hash(sent.phone, sent.code)
        )
        if checked is CodeCheck.WRONG:
            raise InvalidRequest("the code is wrong", code="otp_invalid", attempts_left=left)
        if checked is CodeCheck.SPENT:
            raise Forbidden("too many wrong codes; ask for a new one", code="otp_locked")
        if checked is CodeCheck.EXPIRED:
            raise InvalidRequest("the code has expired; ask for a new one", code="otp_expired")
        if checked is CodeCheck.NONE:
            raise InvalidRequest("no code was asked for this phone", code="otp_not_requested")
        client = await store.client_for_phone(core.db, sent.phone)
        may_sign_in(client["status"])
        return await signed_in(client["id"])

    @bp.post("/api/v1/auth/register")
    async def register() -> Response:
        sent = await body(Registration)
        hashed = await trio.to_thread.run_sync(HASHER.hash, sent.password)
        client_id = await store.create_account(
            core.db, phone=sent.phone, email=sent.email, name=sent.name, password_hash=hashed
        )
        return await signed_in(client_id, status=201)

    @bp.post("/api/v1/auth/login")
    async def login() -> Response:
        sent = await body(PasswordSignIn)
        row = await store.password_of(core.db, phone=sent.phone, email=sent.email)
        stored = None if row is None else row["password_hash"]
        right = await password_right(stored, sent.password)
        if row is None or stored is None or not right:
            raise Unauthorized("wrong login or password", code="invalid_credentials")
        may_sign_in(row["status"])
        if HASHER.check_needs_rehash(stored):
            rehashed = await trio.to_thread.run_sync(HASHER.hash, sent.password)
            await store.set_password_hash(core.db, row["id"], rehashed)
        return await signed_in(row["id"])

    @bp.get("/api/v1/auth/csrf")
    async def csrf() -> Response:
        token = new_csrf_token()
        response = jsonify({"success": True, "csrf_token": token, "header": CSRF_HEADER})
        set_csrf_cookie(response, token)
        return response

    @bp.post("/api/v1/auth/refresh")
    async def refresh() -> Response:
        token, by_cookie = await refresh_token_sent()
        successor, successor_hash, expires_at = new_refresh_token()
        outcome, client_id = await store.rotate_refresh_token(
            core.db, refresh_hash(token), successor_hash, expires_at
        )
        if outcome is Rotation.REUSED:
            raise Unauthorized(
                "this refresh token was used before: every token of its sign-in is revoked",
                code="refresh_token_reused",
            )
        if outcome is not Rotation.ROTATED or client_id is None:
            raise Unauthorized(
                f"the refresh token is {outcome.value}", code=f"refresh_token_{outcome.value}"
            )
        status = (await store.profile(core.db, client_id))["status"]
        may_sign_in(status)
        issued = Issued(issuer.access_token(client_id), successor, successor_hash, expires_at)
        return tokens_answer(issued, by_cookie or cookie_mode())

    @bp.post("/api/v1/auth/logout")
    async def logout() -> Response:
        token, _by_cookie = await refresh_token_sent()
        await store.revoke_family_of(core.db, refresh_hash(token))
        response = jsonify({"success": True})
        clear_cookies(response)
        return response

    @bp.get("/api/v1/auth/me")
    async def me() -> Response:
        return jsonify({"success": True, **(await _profile(await identity.client_id()))})

    @bp.patch("/api/v1/auth/me")
    async def change_me() -> Response:
        caller = await identity.client_id()
        sent = await body(ProfileChange)
        await store.update_profile(core.db, caller, name=sent.name, email=sent.email)
        return jsonify({"success": True, **(await _profile(caller))})

    @bp.delete("/api/v1/auth/me")
    async def delete_me() -> Response:
        caller = await identity.client_id()
        await store.request_deletion(core.db, caller)
        answer = {"status": "pending_deletion", "purge_after_days": purge_after_days}
        return jsonify({"success": True, **answer})

    @bp.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        return jsonify(issuer.jwks())

    return bp
