"""App authentication (HS256 and JWKS tokens) and the wallet's read endpoints."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio

from api.auth import TokenVerifier
from cpms.kernel.errors import Unauthorized
from storage import Database
from tests.conftest import start_ledger
from tests.documented import documented_client
from tests.ocpp_server import ADMIN, start_server
from tests.tokens import SECRET, KeySet, bearer, claims, hs256


@pytest.fixture
def keys(tmp_path: Path) -> KeySet:
    return KeySet(tmp_path / "jwks.json")


@pytest.fixture
async def api(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, keys: KeySet
) -> AsyncIterator[httpx.AsyncClient]:
    endpoints, shutdown = await start_server(
        nursery, dsn, tmp_path, jwt_secret=SECRET, jwt_jwks_url=str(keys.path), admin_token=ADMIN
    )
    async with documented_client(base_url=endpoints.http_url) as client:
        yield client
    shutdown.set()


async def test_every_accepted_kind_of_token(api: httpx.AsyncClient, keys: KeySet) -> None:
    for make in (hs256, keys.rs256, keys.es256):
        client = uuid.uuid4()
        reply = await api.get("/api/v1/balance/get", headers=bearer(make(client)))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body == {
            "success": True,
            "client_id": str(client),
            "balance": 0,
            "reserved": 0,
            "total": 0,
            "currency": "KGS",
            "status": "active",
        }  # created on first use


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"Authorization": "Basic abc"}, "unauthorized"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
        (
            bearer(hs256(uuid.uuid4(), secret="another-secret-of-enough-length-0000")),
            "invalid_token",
        ),
        (bearer(hs256(uuid.uuid4(), exp=int(time.time()) - 10)), "token_expired"),
        (bearer(hs256(uuid.uuid4(), aud="somebody-else")), "invalid_token"),
        (bearer(hs256("not-a-uuid")), "invalid_token"),
        (bearer(jwt.encode(claims(uuid.uuid4()), None, algorithm="none")), "invalid_token"),
        (
            bearer(jwt.encode({"sub": str(uuid.uuid4()), "aud": "authenticated"}, SECRET)),
            "invalid_token",
        ),
    ],
    ids=[
        "none",
        "basic",
        "garbage",
        "wrong-secret",
        "expired",
        "audience",
        "sub",
        "alg-none",
        "no-exp",
    ],
)
async def test_bad_credentials_are_refused(
    api: httpx.AsyncClient, headers: dict[str, str], code: str, db: Database
) -> None:
    reply = await api.get("/api/v1/balance/get", headers=headers)
    assert reply.status_code == 401
    assert reply.json()["success"] is False and reply.json()["error"] == code
    assert await db.fetchval("SELECT count(*) FROM clients") == 0  # nothing created


async def test_unknown_key_id_is_refused(api: httpx.AsyncClient, keys: KeySet) -> None:
    token = jwt.encode(claims(uuid.uuid4()), keys.rsa, algorithm="RS256", headers={"kid": "nope"})
    reply = await api.get("/api/v1/balance/get", headers=bearer(token))
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_token"


async def test_balance_shows_reserved_money_and_owner_only(
    api: httpx.AsyncClient, db: Database, nursery: trio.Nursery
) -> None:
    client, other = uuid.uuid4(), uuid.uuid4()
    token = bearer(hs256(client))
    assert (await api.get("/api/v1/balance/get", headers=token)).status_code == 200
    rig = await start_ledger(nursery, db)
    await rig.ledger.credit(client, "500", key="t1")
    await rig.ledger.reserve(client, "270", key="r1", hold_id=uuid.uuid4())
    body = (await api.get(f"/api/v1/balance/{client}", headers=token)).json()
    assert (body["balance"], body["reserved"], body["total"]) == (230, 270, 500)
    refused = await api.get(f"/api/v1/balance/{other}", headers=token)
    assert refused.status_code == 403 and refused.json()["error"] == "access_denied"


async def test_history_filters_and_pages(
    api: httpx.AsyncClient, db: Database, nursery: trio.Nursery
) -> None:
    client = uuid.uuid4()
    token = bearer(hs256(client))
    await api.get("/api/v1/balance/get", headers=token)
    rig = await start_ledger(nursery, db)
    for n in range(3):
        await rig.ledger.credit(client, "100", key=f"top-{n}")
    hold = uuid.uuid4()
    await rig.ledger.reserve(client, "50", key="res", hold_id=hold)
    await rig.ledger.capture(hold, "20.50", key="cap")

    async def history(**params: Any) -> dict[str, Any]:
        reply = await api.get("/api/v1/balance/history", headers=token, params=params)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    every = await history()
    assert every["total"] == 5
    assert [t["type"] for t in every["transactions"]] == [
        "charge_refund",
        "charge_reserve",
        "topup",
        "topup",
        "topup",
    ]
    newest = every["transactions"][0]
    assert Decimal(str(newest["amount"])) == Decimal("29.50")
    assert newest["balance_after"] == newest["balance_before"] + newest["amount"]
    page = await history(limit=2, offset=2)
    assert [t["id"] for t in page["transactions"]] == [t["id"] for t in every["transactions"][2:4]]
    assert (await history(type="topup"))["total"] == 3
    assert (await history(type="charge"))["total"] == 1
    assert (await history(type="refund"))["total"] == 1
    assert (await history(date_from="2999-01-01T00:00:00Z"))["total"] == 0
    for bad in ({"limit": 0}, {"limit": "x"}, {"type": "gift"}, {"date_from": "yesterday"}):
        reply = await api.get("/api/v1/balance/history", headers=token, params=bad)
        assert reply.status_code == 400 and reply.json()["error"] == "validation_error", bad


async def test_admin_credit_applies_once_per_key(api: httpx.AsyncClient) -> None:
    client = uuid.uuid4()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    path = f"/api/v1/admin/clients/{client}/credit"
    body = {"amount": "150.50", "reason": "welcome", "key": "k-1"}
    first = await api.post(path, json=body, headers=admin)
    again = await api.post(path, json=body, headers=admin)
    assert first.status_code == again.status_code == 200, first.text
    assert (first.json()["balance"], again.json()["replayed"]) == (150.5, True)
    mine = await api.get("/api/v1/balance/get", headers=bearer(hs256(client)))
    assert mine.json()["balance"] == 150.5
    for bad in ({**body, "amount": "-1"}, {**body, "amount": "1.001"}, {"amount": "5"}):
        reply = await api.post(path, json=bad, headers=admin)
        assert reply.status_code == 400 and reply.json()["error"] == "validation_error", bad
    assert (await api.post(path, json=body)).status_code == 401  # no token at all
    assert (await api.post(path, json=body, headers=bearer("wrong"))).status_code == 403
    other = await api.post(path, json={**body, "amount": "20"}, headers=admin)
    assert other.status_code == 409  # the key was used for another amount


async def test_a_verified_token_is_trusted_only_until_it_expires() -> None:
    """A token's signature is checked once; the token is then known until its ``exp``, and
    refused as expired after it. Any other string, however close, is checked in full."""
    verifier = TokenVerifier(secret=SECRET, audience="authenticated")
    client = uuid.uuid4()
    expires = int(time.time()) + 2
    token = hs256(client, exp=expires)
    assert await verifier.client_id(f"Bearer {token}") == client
    assert await verifier.client_id(f"Bearer {token}") == client
    head, payload, signature = token.split(".")
    forged = ".".join([head, payload, signature[::-1]])
    with pytest.raises(Unauthorized) as info:
        await verifier.client_id(f"Bearer {forged}")
    assert info.value.code == "invalid_token"
    await trio.sleep(expires - time.time() + 0.1)
    with pytest.raises(Unauthorized) as info:
        await verifier.client_id(f"Bearer {token}")
    assert info.value.code == "token_expired"
