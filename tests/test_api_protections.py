"""What every request passes through: rate limits (the counter on a controlled clock, then
through a whole cpms), CORS from an allowed and a refused origin, the security headers, the
request id and the request log."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from api.i18n import language
from api.rate_limit import Limit, RateLimiter
from cpms import __version__
from cpms.kernel.payments import webhook_signature as sign
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from tests.documented import documented_client
from tests.tokens import SECRET, bearer, hs256

ADMIN = "admin-token-for-tests-0123456789"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
ORIGIN = "https://app.example.com"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:  # a window's start
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_the_counter_slides_and_says_when_to_come_back() -> None:
    clock = Clock()
    limiter, limit = RateLimiter(clock), Limit("critical", 10)
    told = [await limiter.hit(limit, "client:a") for _ in range(10)]
    assert all(v.allowed for v in told)
    assert [v.remaining for v in told] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert {v.reset_at for v in told} == {int(clock.now) + 60}
    refused = await limiter.hit(limit, "client:a")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert (await limiter.hit(limit, "client:b")).allowed  # another key counts apart
    # all ten were at the window's start: in the next window they slide out little by little
    assert refused.retry_after == 66  # 60 s to the next window, then 1/10 of it
    clock.now += 30
    assert not (await limiter.hit(limit, "client:a")).allowed  # refusals were not counted
    clock.now += 36  # 66 s after the first ten: 10 × (1 - 0.1) = 9 still count
    again = await limiter.hit(limit, "client:a")
    assert (again.allowed, again.remaining) == (True, 0)
    assert not (await limiter.hit(limit, "client:a")).allowed
    clock.now += 120  # two windows later nothing counts
    assert (await limiter.hit(limit, "client:a")).remaining == 9
    unlimited = await limiter.hit(Limit("off", 0), "client:a")
    assert unlimited.allowed and unlimited.limit == 0


async def test_the_counter_forgets_keys_gone_quiet() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for n in range(1000):
        await limiter.hit(Limit("default", 60), f"ip:{n}")
    clock.now += 180
    await limiter.hit(Limit("default", 60), "ip:late")
    assert len(limiter._counts) == 1


@dataclass
class Rig:
    http: httpx.AsyncClient
    endpoints: Endpoints
    clock: Clock


@pytest.fixture
async def rig(
    request: pytest.FixtureRequest, db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Rig]:
    options: dict[str, Any] = getattr(request, "param", {})
    settings = Settings(
        database_url=dsn,
        data_dir=tmp_path,
        http_port=0,
        ocpp_port=0,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        cors_origins=ORIGIN,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_webhook_port=0,
        rate_limit_default=60,
        rate_limit_critical=10,
        rate_limit_webhook=30,
        **options,
    )
    clock, shutdown = Clock(), trio.Event()
    endpoints: Endpoints = await nursery.start(
        lambda task_status: run_server(settings, shutdown, clock=clock, task_status=task_status)
    )
    async with documented_client(base_url=endpoints.http_url, timeout=30) as http:
        yield Rig(http, endpoints, clock)
    shutdown.set()


async def test_critical_calls_are_limited_per_client(rig: Rig) -> None:
    me, other = bearer(hs256(uuid.uuid4())), bearer(hs256(uuid.uuid4()))
    body = {"station_id": "NOWHERE", "connector_id": 1, "amount_som": 20}
    answers = [
        await rig.http.post("/api/v1/charging/start", headers=me, json=body) for _ in range(10)
    ]
    assert {a.status_code for a in answers} == {404}  # counted, though refused by the handler
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[-3:]] == ["2", "1", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "10"
    limited = await rig.http.post("/api/v1/charging/start", headers=me, json=body)
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limit_exceeded"
    assert limited.json()["retry_after"] == int(limited.headers["Retry-After"]) > 0
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    stop = await rig.http.post("/api/v1/charging/stop", headers=me, json={"session_id": "x"})
    assert stop.status_code == 429  # start, stop and top-ups share the critical limit
    # the same client's other calls, and another client's, have their own counts
    assert (await rig.http.get("/api/v1/balance/get", headers=me)).status_code == 200
    assert (
        await rig.http.post("/api/v1/charging/start", headers=other, json=body)
    ).status_code == 404
    rig.clock.now += int(limited.headers["Retry-After"])
    assert (await rig.http.post("/api/v1/charging/start", headers=me, json=body)).status_code == 404


async def test_calls_without_a_client_are_limited_per_address(rig: Rig) -> None:
    for _ in range(60):
        assert (await rig.http.get("/api/v1/locations")).status_code == 200
    refused = await rig.http.get("/api/v1/locations")
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    # a token that proves nothing counts against the address too
    bogus = await rig.http.get("/api/v1/balance/get", headers={"Authorization": "Bearer x.y.z"})
    assert bogus.status_code == 429
    for _ in range(70):  # health checks and the operator's admin calls are not limited
        assert (await rig.http.get("/health")).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert (await rig.http.get("/api/v1/admin/sessions/open", headers=admin)).status_code == 200
    wrong_admin = await rig.http.get("/api/v1/admin/sessions/open", headers=bearer("not-it"))
    assert wrong_admin.status_code == 429  # guessing the admin token is limited


@pytest.mark.parametrize("rig", [{"payment_webhook_ips": "10.9.8.7"}], indirect=True)
async def test_webhooks_from_unknown_addresses_are_limited(rig: Rig) -> None:
    raw = json.dumps({"invoice_id": "INV-20261203-000001", "status": "pending"}).encode()
    stamp = str(int(time.time()))
    headers = {
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": sign(WEBHOOK_SECRET, stamp, raw),
    }
    assert rig.endpoints.webhook_url is not None
    async with httpx.AsyncClient(base_url=rig.endpoints.webhook_url) as own_port:
        doors = [rig.http, own_port]
        for n in range(30):  # both ports count for the one address
            reply = await doors[n % 2].post("/api/v1/payment/webhook", content=raw, headers=headers)
            assert (reply.status_code, reply.json()["error"]) == (403, "forbidden_source")
        for door in doors:
            reply = await door.post("/api/v1/payment/webhook", content=raw, headers=headers)
            assert (reply.status_code, reply.json()["error"]) == (429, "rate_limit_exceeded")
            assert int(reply.headers["Retry-After"]) > 0


async def test_cors_for_an_allowed_origin_only(rig: Rig) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    allowed = await rig.http.options("/api/v1/charging/start", headers=preflight)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Idempotency-Key" in allowed.headers["Access-Control-Allow-Headers"]
    assert int(allowed.headers["Access-Control-Max-Age"]) > 0
    refused = await rig.http.options(
        "/api/v1/charging/start", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert (refused.status_code, refused.json()["error"]) == (403, "cors_origin_refused")
    assert "Access-Control-Allow-Origin" not in refused.headers

    me = bearer(hs256(uuid.uuid4()))
    real = await rig.http.get("/api/v1/balance/get", headers={**me, "Origin": ORIGIN})
    assert real.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-ID" in real.headers["Access-Control-Expose-Headers"]
    assert "Origin" in real.headers["Vary"]
    other = await rig.http.get(
        "/api/v1/balance/get", headers={**me, "Origin": "https://evil.example"}
    )
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]


def test_a_wildcard_or_a_malformed_origin_is_refused_at_start() -> None:
    for bad in ["*", "app.example.com", "https://app.example.com/path", "https://a.com,*"]:
        with pytest.raises(ValueError, match="origin"):
            Settings(cors_origins=bad)
    assert Settings(cors_origins=f"{ORIGIN}, http://localhost:5173").cors == {
        ORIGIN,
        "http://localhost:5173",
    }


async def test_every_answer_has_its_request_id_headers_and_log_line(
    rig: Rig, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    client = uuid.uuid4()
    token = hs256(client)
    mine = await rig.http.get(
        "/api/v1/balance/get", headers={**bearer(token), "X-Request-ID": "app-42.retry:1"}
    )
    assert mine.headers["X-Request-ID"] == "app-42.retry:1"
    assert mine.headers["X-API-Version"] == __version__
    assert mine.headers["X-Content-Type-Options"] == "nosniff"
    assert mine.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in mine.headers["Content-Security-Policy"]
    assert mine.headers["Cache-Control"] == "no-store"
    odd = await rig.http.get("/api/v1/locations/999999", headers={"X-Request-ID": "a b\tc"})
    assert odd.status_code == 404  # and a new id of its own, unlike the last one's
    assert odd.headers["X-Request-ID"] not in ("a b\tc", mine.headers["X-Request-ID"])
    again = await rig.http.get("/api/v1/locations/999999")
    assert again.headers["X-Request-ID"] != odd.headers["X-Request-ID"]
    assert odd.headers["X-Content-Type-Options"] == "nosniff"  # refusals too
    text = capsys.readouterr().err + caplog.text
    assert "app-42.retry:1" in text and str(client) in text
    assert "/api/v1/locations/<location_id>" in text  # the route, not the path
    assert token not in text


def test_the_language_is_the_best_of_ours_in_accept_language() -> None:
    assert language("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7") == "ru"
    assert language("ky-KG") == "ky"
    assert language("de, ky;q=0.5, ru;q=0.4") == "ky"
    assert language("en-GB, ru;q=0.9") == "en"
    for none_of_ours in (None, "", "fr", "*", "ru;q=0", "ru;q=abc", ";;;", "x" * 300):
        assert language(none_of_ours) == "en", none_of_ours


async def test_error_messages_in_the_callers_language(rig: Rig) -> None:
    answers = {}
    for accept in ("ru", "ky-KG,ky;q=0.9", "en", None):
        headers = {} if accept is None else {"Accept-Language": accept}
        reply = await rig.http.get("/api/v1/balance/get", headers=headers)
        assert (reply.status_code, reply.json()["error"]) == (401, "unauthorized")
        answers[accept] = reply
    assert answers["ru"].json()["message"] == "Требуется вход в систему"
    assert answers["ru"].headers["Content-Language"] == "ru"
    assert answers["ky-KG,ky;q=0.9"].json()["message"] == "Системага кирүү талап кылынат"
    assert answers["en"].json()["message"] == answers[None].json()["message"]
    assert answers["en"].json()["message"].isascii()

    me = {**bearer(hs256(uuid.uuid4())), "Accept-Language": "ru"}
    body = {"station_id": "NOWHERE", "connector_id": 1, "amount_som": 20}
    for _ in range(10):
        await rig.http.post("/api/v1/charging/start", headers=me, json=body)
    limited = await rig.http.post("/api/v1/charging/start", headers=me, json=body)
    wait = limited.json()["retry_after"]
    assert limited.json()["message"] == f"Слишком много запросов. Попробуйте через {wait} с"
    fine = await rig.http.get("/health", headers={"Accept-Language": "ru"})
    assert fine.status_code == 200 and fine.json()["success"] is True  # answers untouched
