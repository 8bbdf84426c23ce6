"""Sign-in: by an SMS code (through a real SMS gateway stub), by password; cpms's own tokens
(ES256, published keys), refresh rotation with reuse detection, sign-out, the account
(``/auth/me``) and its deletion; every refusal; and no code, password or token in the log."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage.accounts import purge_deleted
from tests.documented import documented_client
from tests.sms_stub import SmsStub

PHONE = "+996700123456"
KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@dataclass
class Rig:
    http: httpx.AsyncClient
    sms: SmsStub
    db: Database

    async def code(self, phone: str = PHONE) -> str:
        reply = await self.http.post("/api/v1/auth/otp/request", json={"phone": phone})
        assert reply.status_code == 200, reply.text
        return self.sms.code_for(phone)

    async def verify(self, code: str, phone: str = PHONE) -> httpx.Response:
        return await self.http.post("/api/v1/auth/otp/verify", json={"phone": phone, "code": code})

    async def signed_in(self) -> dict[str, Any]:
        reply = await self.verify(await self.code())
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def rig(db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    sms = SmsStub()
    url = await nursery.start(sms.serve)
    settings = Settings(
        database_url=dsn,
        data_dir=tmp_path,
        http_port=0,
        ocpp_port=0,
        auth_signing_key=PEM,
        sms_gateway_url=f"{url}/send?to={{phone}}&text={{text}}",
        sms_gateway_user="cpms",
        sms_gateway_password="gateway-password-0123",
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(run_server, settings, shutdown)
    async with documented_client(base_url=endpoints.http_url, timeout=30) as http:
        yield Rig(http, sms, db)
    shutdown.set()


async def test_sign_in_by_code_gives_tokens_cpms_can_prove(rig: Rig) -> None:
    signed = await rig.signed_in()
    sent = rig.sms.sent[-1]
    assert sent.authorization is not None and sent.authorization.startswith("Basic ")
    assert signed["token_type"] == "bearer" and signed["expires_in"] == 900
    client = signed["client"]
    assert (client["phone"], client["status"]) == (PHONE, "active")

    jwks = (await rig.http.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(signed["access_token"])
    assert header["alg"] == "ES256" and header["kid"] == jwks["keys"][0]["kid"]
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(signed["access_token"], key, algorithms=["ES256"], audience="authenticated")
    assert claims["sub"] == client["client_id"] and claims["iss"] == "cpms"
    assert claims["exp"] - claims["iat"] == 900

    me = await rig.http.get("/api/v1/auth/me", headers=bearer(signed["access_token"]))
    assert (me.status_code, me.json()["client_id"]) == (200, client["client_id"])
    balance = await rig.http.get("/api/v1/balance/get", headers=bearer(signed["access_token"]))
    assert balance.status_code == 200  # the app's API takes cpms's own tokens
    again = await rig.signed_in()  # the same phone is the same account
    assert again["client"]["client_id"] == client["client_id"]


async def test_code_refusals(rig: Rig) -> None:
    code = await rig.code()
    wrong = "000000" if code != "000000" else "111111"
    cooldown = await rig.http.post("/api/v1/auth/otp/request", json={"phone": PHONE})
    assert (cooldown.status_code, cooldown.json()["error"]) == (429, "otp_cooldown")
    assert 0 < int(cooldown.headers["Retry-After"]) <= 60
    for left in (4, 3, 2, 1):
        reply = await rig.verify(wrong)
        assert (reply.status_code, reply.json()["error"]) == (400, "otp_invalid")
        assert reply.json()["attempts_left"] == left
    locked = await rig.verify(wrong)
    assert (locked.status_code, locked.json()["error"]) == (403, "otp_locked")
    spent = await rig.verify(code)  # five wrong tries spend even the right code
    assert (spent.status_code, spent.json()["error"]) == (403, "otp_locked")

    await rig.db.execute("UPDATE otp_codes SET sent_at = now() - interval '2 minutes'")
    fresh = await rig.code()
    await rig.db.execute("UPDATE otp_codes SET expires_at = now() - interval '1 second'")
    expired = await rig.verify(fresh)
    assert (expired.status_code, expired.json()["error"]) == (400, "otp_expired")

    await rig.db.execute("DELETE FROM otp_codes")
    used = await rig.code()
    assert (await rig.verify(used)).status_code == 200
    reused = await rig.verify(used)
    assert (reused.status_code, reused.json()["error"]) == (400, "otp_not_requested")

    for body in [{"phone": "0700123456"}, {"phone": "+996"}, {"phone": PHONE, "x": 1}, {}]:
        reply = await rig.http.post("/api/v1/auth/otp/request", json=body)
        assert (reply.status_code, reply.json()["error"]) == (400, "validation_error"), body
    for code in ["12345", "1234567", "abcdef"]:
        reply = await rig.verify(code)
        assert (reply.status_code, reply.json()["error"]) == (400, "validation_error"), code

    rig.sms.failing = True
    other = "+996555000111"
    down = await rig.http.post("/api/v1/auth/otp/request", json={"phone": other})
    assert (down.status_code, down.json()["error"]) == (503, "sms_unavailable")
    rig.sms.failing = False
    assert (await rig.verify(await rig.code(other), other)).status_code == 200  # no cooldown


async def test_register_and_sign_in_by_password(rig: Rig) -> None:
    account = {"email": "Driver@Example.com", "phone": "+996555123123", "password": "long-pass-1"}
    made = await rig.http.post("/api/v1/auth/register", json={**account, "name": "Aibek"})
    assert made.status_code == 201, made.text
    assert made.json()["client"]["email"] == "driver@example.com"
    stored = await rig.db.fetchval(
        "SELECT password_hash FROM clients WHERE phone = $1", account["phone"]
    )
    assert stored.startswith("$argon2id$") and "long-pass-1" not in stored
    twice = await rig.http.post("/api/v1/auth/register", json=account)
    assert (twice.status_code, twice.json()["error"]) == (409, "account_exists")

    for login in ({"email": "DRIVER@example.com"}, {"phone": "+996555123123"}):
        reply = await rig.http.post("/api/v1/auth/login", json={**login, "password": "long-pass-1"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["client"]["client_id"] == made.json()["client"]["client_id"]
    for login in (
        {"email": "driver@example.com", "password": "wrong-pass-1"},
        {"email": "nobody@example.com", "password": "long-pass-1"},
        {"phone": "+996555000000", "password": "long-pass-1"},
    ):
        reply = await rig.http.post("/api/v1/auth/login", json=login)
        assert (reply.status_code, reply.json()["error"]) == (401, "invalid_credentials"), login
    for body in (
        {"email": "a@b.co", "password": "short"},
        {"password": "long-pass-1"},
        {"email": "not-an-email", "password": "long-pass-1"},
    ):
        reply = await rig.http.post("/api/v1/auth/register", json=body)
        assert (reply.status_code, reply.json()["error"]) == (400, "validation_error"), body
    both = await rig.http.post(
        "/api/v1/auth/login",
        json={"email": "driver@example.com", "phone": "+996555123123", "password": "x"},
    )
    assert (both.status_code, both.json()["error"]) == (400, "validation_error")


async def test_refresh_rotates_and_a_reused_token_revokes_the_sign_in(rig: Rig) -> None:
    signed = await rig.signed_in()
    first = signed["refresh_token"]
    rotated = await rig.http.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    me = await rig.http.get("/api/v1/auth/me", headers=bearer(rotated.json()["access_token"]))
    assert me.status_code == 200
    reused = await rig.http.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert (reused.status_code, reused.json()["error"]) == (401, "refresh_token_reused")
    after = await rig.http.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert (after.status_code, after.json()["error"]) == (401, "refresh_token_revoked")

    other = await rig.signed_in()  # another sign-in: a family of its own
    out = await rig.http.post("/api/v1/auth/logout", json={"refresh_token": other["refresh_token"]})
    assert out.status_code == 200
    gone = await rig.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert (gone.status_code, gone.json()["error"]) == (401, "refresh_token_revoked")
    unknown = await rig.http.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert (unknown.status_code, unknown.json()["error"]) == (401, "refresh_token_unknown")
    await rig.db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    third = await rig.signed_in()
    await rig.db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL"
    )
    old = await rig.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}
    )
    assert (old.status_code, old.json()["error"]) == (401, "refresh_token_expired")


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each cookie the answer sets → its whole ``Set-Cookie`` line."""
    lines = response.headers.get_list("set-cookie")
    return {line.split("=", 1)[0]: line for line in lines}


def cookie_value(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


async def test_cookie_mode_keeps_the_refresh_token_from_the_page(rig: Rig) -> None:

    async def post(path: str, **sent: Any) -> httpx.Response:
        rig.http.cookies.clear()  # the cookies are sent by hand, each on purpose
        return await rig.http.post(path, **sent)

    page = {"Origin": "http://localhost:5173"}  # a PWA in development: plain HTTP
    csrf = await rig.http.get("/api/v1/auth/csrf", headers=page)
    token = csrf.json()["csrf_token"]
    csrf_line = set_cookies(csrf)["cpms_csrf"]
    assert cookie_value(csrf_line) == token and csrf.json()["header"] == "X-CSRF-Token"
    assert "SameSite=Lax" in csrf_line and "Secure" not in csrf_line
    assert "HttpOnly" not in csrf_line  # the page reads it to send it back

    code = await rig.code()
    signed = await post(
        "/api/v1/auth/otp/verify",
        json={"phone": PHONE, "code": code},
        headers={**page, "X-Auth-Mode": "cookie"},
    )
    assert signed.status_code == 200 and "refresh_token" not in signed.json()
    assert (
        await rig.http.get("/api/v1/auth/me", headers=bearer(signed.json()["access_token"]))
    ).status_code == 200
    line = set_cookies(signed)["cpms_refresh"]
    assert "HttpOnly" in line and "Path=/api/v1/auth" in line and "SameSite=Lax" in line
    refresh = cookie_value(line)
    jar = f"cpms_refresh={refresh}; cpms_csrf={token}"

    refusals: list[dict[str, str | bytes]] = [
        {},
        {"X-CSRF-Token": "forged-" + token},
        {"X-CSRF-Token": "é".encode("latin-1")},
    ]
    for refused in refusals:
        forged = await post("/api/v1/auth/refresh", headers={**page, "Cookie": jar, **refused})
        assert (forged.status_code, forged.json()["error"]) == (403, "csrf_failed")
    missing = await post("/api/v1/auth/refresh", headers=page)
    assert (missing.status_code, missing.json()["error"]) == (400, "refresh_token_missing")

    rotated = await post(  # the refused tries spent nothing: the token still works
        "/api/v1/auth/refresh", headers={**page, "Cookie": jar, "X-CSRF-Token": token}
    )
    assert rotated.status_code == 200, rotated.text
    assert "refresh_token" not in rotated.json() and rotated.json()["access_token"]
    successor = cookie_value(set_cookies(rotated)["cpms_refresh"])
    assert successor != refresh
    reused = await post(
        "/api/v1/auth/refresh", headers={**page, "Cookie": jar, "X-CSRF-Token": token}
    )
    assert (reused.status_code, reused.json()["error"]) == (401, "refresh_token_reused")

    production = {"Origin": "https://app.example.kg"}  # another origin, over HTTPS
    elsewhere = await post(
        "/api/v1/auth/otp/verify",
        json={"phone": PHONE, "code": await rig.code("+996700123457")},
        headers={**production, "X-Auth-Mode": "cookie"},
    )
    assert elsewhere.status_code == 400  # the code was for another phone: nothing set
    assert "set-cookie" not in elsewhere.headers
    signed_there = await post(
        "/api/v1/auth/login",
        json={"phone": PHONE, "password": "not-set-yet"},
        headers={**production, "X-Auth-Mode": "cookie"},
    )
    assert signed_there.status_code == 401 and "set-cookie" not in signed_there.headers
    registered = await post(
        "/api/v1/auth/register",
        json={"email": "pwa@example.kg", "password": "correct horse battery"},
        headers={**production, "X-Auth-Mode": "cookie"},
    )
    line = set_cookies(registered)["cpms_refresh"]
    assert "SameSite=None" in line and "Secure" in line and "HttpOnly" in line
    there = f"cpms_refresh={cookie_value(line)}; cpms_csrf={token}"
    out = await post(
        "/api/v1/auth/logout", headers={**production, "Cookie": there, "X-CSRF-Token": token}
    )
    assert out.status_code == 200
    cleared = set_cookies(out)
    assert cookie_value(cleared["cpms_refresh"]) == "" and "Max-Age=0" in cleared["cpms_refresh"]
    assert "Max-Age=0" in cleared["cpms_csrf"]
    gone = await post(
        "/api/v1/auth/refresh", headers={**production, "Cookie": there, "X-CSRF-Token": token}
    )
    assert (gone.status_code, gone.json()["error"]) == (401, "refresh_token_revoked")


async def test_tokens_that_prove_nothing_are_refused(rig: Rig) -> None:
    signed = await rig.signed_in()
    kid = jwt.get_unverified_header(signed["access_token"])["kid"]
    now = int(time.time())
    claims = {"sub": signed["client"]["client_id"], "aud": "authenticated", "iss": "cpms"}
    forged = {
        "none": jwt.encode(
            {**claims, "exp": now + 60}, None, algorithm="none", headers={"kid": kid}
        ),
        "audience": jwt.encode(
            {**claims, "aud": "elsewhere", "exp": now + 60}, KEY, "ES256", headers={"kid": kid}
        ),
        "expired": jwt.encode({**claims, "exp": now - 5}, KEY, "ES256", headers={"kid": kid}),
        "issuer": jwt.encode(
            {**claims, "iss": "someone", "exp": now + 60}, KEY, "ES256", headers={"kid": kid}
        ),
        "other key": jwt.encode(
            {**claims, "exp": now + 60},
            ec.generate_private_key(ec.SECP256R1()),
            "ES256",
            headers={"kid": kid},
        ),
    }
    for why, token in forged.items():
        reply = await rig.http.get("/api/v1/auth/me", headers=bearer(token))
        assert reply.status_code == 401, why
        assert reply.json()["error"] in ("invalid_token", "token_expired"), why
    someone = str(uuid.uuid4())
    theirs = await rig.http.get(
        f"/api/v1/balance/{someone}", headers=bearer(signed["access_token"])
    )
    assert theirs.status_code == 403


async def test_the_account_changed_and_deleted(rig: Rig) -> None:
    signed = await rig.signed_in()
    me = bearer(signed["access_token"])
    changed = await rig.http.patch(
        "/api/v1/auth/me", headers=me, json={"name": " Aiza ", "email": "A@x.kg"}
    )
    assert (changed.json()["name"], changed.json()["email"]) == ("Aiza", "a@x.kg")
    await rig.http.post(
        "/api/v1/auth/register", json={"email": "taken@x.kg", "password": "long-pass-1"}
    )
    taken = await rig.http.patch("/api/v1/auth/me", headers=me, json={"email": "taken@x.kg"})
    assert (taken.status_code, taken.json()["error"]) == (409, "account_exists")
    bad = await rig.http.patch("/api/v1/auth/me", headers=me, json={"status": "active"})
    assert (bad.status_code, bad.json()["error"]) == (400, "validation_error")
    await rig.http.post("/api/v1/favorites", headers=me, json={"location_id": "nowhere"})

    deleted = await rig.http.delete("/api/v1/auth/me", headers=me)
    assert deleted.json() == {"success": True, "status": "pending_deletion", "purge_after_days": 30}
    refresh = await rig.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": signed["refresh_token"]}
    )
    assert (refresh.status_code, refresh.json()["error"]) == (401, "refresh_token_revoked")
    topup = await rig.http.post("/api/v1/balance/topup-qr", headers=me, json={"amount": "50"})
    assert (topup.status_code, topup.json()["error"]) == (403, "client_pending_deletion")
    client = uuid.UUID(signed["client"]["client_id"])
    status = await rig.db.fetchval("SELECT status FROM clients WHERE id = $1", client)
    assert status == "pending_deletion"  # a start is refused then: test_charging shows it
    code = await rig.code()
    again = await rig.verify(code)
    assert (again.status_code, again.json()["error"]) == (403, "client_pending_deletion")

    assert await purge_deleted(rig.db, timedelta(days=1)) == 0  # not yet
    assert await purge_deleted(rig.db, timedelta(0)) == 1
    row = await rig.db.fetchrow(
        "SELECT phone, email, name, password_hash, status FROM clients WHERE id = $1", client
    )
    assert dict(row) == {
        "phone": None,
        "email": None,
        "name": None,
        "password_hash": None,
        "status": "pending_deletion",
    }
    assert (
        await rig.db.fetchval("SELECT count(*) FROM refresh_tokens WHERE client_id = $1", client)
        == 0
    )


async def test_no_code_password_or_token_is_logged(
    rig: Rig, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    signed = await rig.signed_in()
    code = rig.sms.code_for(PHONE)
    await rig.http.post(
        "/api/v1/auth/register", json={"email": "quiet@x.kg", "password": "very-secret-pass"}
    )
    await rig.http.post(
        "/api/v1/auth/login", json={"email": "quiet@x.kg", "password": "wrong-secret-pass"}
    )
    await rig.http.post("/api/v1/auth/refresh", json={"refresh_token": signed["refresh_token"]})
    text = capsys.readouterr().err + caplog.text
    for secret in (
        code,
        "very-secret-pass",
        "wrong-secret-pass",
        signed["refresh_token"],
        signed["access_token"],
        "gateway-password-0123",
    ):
        assert secret not in text
