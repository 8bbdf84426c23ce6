"""Web Push end to end: a whole server sending to a push-service stub over real sockets, each
message checked (VAPID token, headers) and decrypted with its subscription's keys; the
subscription endpoints and their refusals; drivers' and owners' events; dead subscriptions
removed, busy services retried; a service that hangs delays nothing."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.push.sender import Push, PushSender, PushSettings
from actors.push.webpush import VapidKeys, new_key_pair
from api.notifications import checked_endpoint
from cpms.kernel.errors import InvalidRequest
from cpms.settings import SettingsError, load_settings
from storage import Database
from storage import push as store
from tests.ocpp_server import ADMIN
from tests.push_stub import Browser, PushStub
from tests.test_charging import Rig, running_rig
from tests.test_payments import PANS, card
from tests.tokens import bearer

PRIVATE, PUBLIC = new_key_pair()
SUBJECT = "mailto:ops@example.com"


@asynccontextmanager
async def push_rig(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, **overrides: Any
) -> AsyncIterator[tuple[Rig, PushStub]]:
    stub = PushStub()
    await nursery.start(stub.serve)
    options = {
        "admin_token": ADMIN,
        "vapid_private_key": PRIVATE,
        "vapid_subject": SUBJECT,
        "push_allow_http": True,  # the stub speaks plain HTTP on 127.0.0.1
        **overrides,
    }
    async with running_rig(db, dsn, tmp_path, nursery, **options) as rig:
        yield rig, stub


async def subscribe(
    rig: Rig, browser: Browser, headers: dict[str, str], language: str = "en"
) -> dict[str, Any]:
    reply = await rig.http.post(
        "/api/v1/notifications/subscribe",
        json=browser.subscription(),
        headers={**headers, "Accept-Language": language},
    )
    assert reply.status_code in (200, 201), reply.text
    return dict(reply.json())


def test_vapid_keys_in_every_form_and_their_refusals() -> None:
    raw = base64.urlsafe_b64decode(PRIVATE + "=" * (-len(PRIVATE) % 4))
    key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    forms = [PRIVATE, pem.decode(), base64.urlsafe_b64encode(pem).decode(), base64.b64encode(der)]
    for form in forms:
        keys = VapidKeys(form if isinstance(form, str) else form.decode(), SUBJECT, PUBLIC)
        assert keys.public_key == PUBLIC
    header = VapidKeys(PRIVATE, SUBJECT).authorization("https://push.example.net/x/y")
    assert header.startswith("vapid t=") and f",k={PUBLIC}" in header
    other_public = new_key_pair()[1]
    refusals = [
        ((PRIVATE, SUBJECT, other_public), "pair"),
        ((PRIVATE, "ops@example.com", None), "subject"),
        (("not a key", SUBJECT, None), "base64url|key|Could not"),
    ]
    for args, says in refusals:
        with pytest.raises(ValueError, match=says):
            VapidKeys(*args)


def test_settings_refuse_unusable_vapid_keys_without_showing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CPMS_VAPID_PRIVATE_KEY", PRIVATE)
    with pytest.raises(SettingsError, match="CPMS_VAPID_SUBJECT") as missing:
        load_settings()
    assert PRIVATE not in str(missing.value)
    monkeypatch.setenv("CPMS_VAPID_SUBJECT", SUBJECT)
    monkeypatch.setenv("CPMS_VAPID_PUBLIC_KEY", new_key_pair()[1])
    with pytest.raises(SettingsError, match="pair") as mismatched:
        load_settings()
    assert PRIVATE not in str(mismatched.value)
    monkeypatch.setenv("CPMS_VAPID_PUBLIC_KEY", PUBLIC)
    assert load_settings().vapid_keys() is not None


def test_endpoints_must_be_https_unless_allowed() -> None:
    for endpoint in (
        "http://push.example.net/x",
        "ftp://x/y",
        "https:///nohost",
        "https://u:p@h/x",
    ):
        with pytest.raises(InvalidRequest):
            checked_endpoint(endpoint, allow_http=False)
    assert checked_endpoint("http://127.0.0.1:9/x", allow_http=True)
    assert checked_endpoint("https://fcm.googleapis.com/fcm/send/abc", allow_http=False)


async def test_subscriptions_their_refusals_and_the_test_push(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with push_rig(db, dsn, tmp_path, nursery) as (rig, stub):
        key = await rig.http.get("/api/v1/notifications/vapid-public-key")
        assert key.status_code == 200 and key.json()["public_key"] == PUBLIC
        client, me = await rig.client("0")
        browser = stub.browser()
        good = browser.subscription()
        bad_keys = {**good, "keys": {"p256dh": good["keys"]["auth"], "auth": "x"}}
        short_auth = {**good, "keys": {**good["keys"], "auth": "AAAA"}}
        refusals = [
            ({}, good, 401, "unauthorized"),
            (me, bad_keys, 400, "invalid_subscription"),
            (me, short_auth, 400, "invalid_subscription"),
            (me, {**good, "endpoint": "ftp://x/y"}, 400, "invalid_subscription"),
            (me, {**good, "extra": 1}, 400, "validation_error"),
            (me, {"endpoint": good["endpoint"]}, 400, "validation_error"),
        ]
        for headers, sent, status, code in refusals:
            reply = await rig.http.post(
                "/api/v1/notifications/subscribe", json=sent, headers=headers
            )
            assert (reply.status_code, reply.json()["error"]) == (status, code), sent
        assert await store.subscriptions_of(db, client, "client") == []

        first = await subscribe(rig, browser, me, language="ru")
        assert (first["status"], first["user_type"]) == ("created", "client")
        assert (await subscribe(rig, browser, me, language="ru"))["status"] == "updated"
        assert len(await store.subscriptions_of(db, client, "client")) == 1

        sent = await rig.http.post("/api/v1/notifications/test", headers=me)
        assert sent.status_code == 202 and sent.json()["subscriptions"] == 1, sent.text
        (message,) = await stub.wait_for(browser, "test")
        assert (message["title"], message["body"]) == ("cpms", "Уведомления работают")
        assert stub.pushed[-1].headers["ttl"] == "86400"

        gone = {"endpoint": good["endpoint"]}
        reply = await rig.http.post("/api/v1/notifications/unsubscribe", json=gone, headers=me)
        assert reply.status_code == 200, reply.text
        again = await rig.http.post("/api/v1/notifications/unsubscribe", json=gone, headers=me)
        assert (again.status_code, again.json()["error"]) == (404, "subscription_not_found")
        none = await rig.http.post("/api/v1/notifications/test", headers=me)
        assert (none.status_code, none.json()["error"]) == (404, "no_subscriptions")

        for _ in range(store.MAX_SUBSCRIPTIONS):
            await subscribe(rig, stub.browser(), me)
        over = await rig.http.post(
            "/api/v1/notifications/subscribe", json=stub.browser().subscription(), headers=me
        )
        assert (over.status_code, over.json()["error"]) == (409, "too_many_subscriptions")
        assert len(await store.subscriptions_of(db, client, "client")) == store.MAX_SUBSCRIPTIONS


async def test_without_vapid_keys_push_is_off(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with running_rig(db, dsn, tmp_path, nursery) as rig:
        _, me = await rig.client("0")
        for method, path in (
            ("GET", "/api/v1/notifications/vapid-public-key"),
            ("POST", "/api/v1/notifications/test"),
        ):
            reply = await rig.http.request(method, path, headers=me)
            assert (reply.status_code, reply.json()["error"]) == (503, "push_disabled")


async def owner_token(rig: Rig, email: str, password: str) -> dict[str, str]:
    made = await rig.http.post(
        "/api/v1/admin/owners",
        json={"name": "Owner", "email": email, "password": password},
        headers=bearer(ADMIN),
    )
    assert made.status_code == 201, made.text
    owner = made.json()["owner_id"]
    given = await rig.http.patch(
        "/api/v1/admin/stations/CP-1", json={"owner_id": owner}, headers=bearer(ADMIN)
    )
    assert given.status_code == 200, given.text
    wrong = await rig.http.post(
        "/api/v1/owner/auth/login", json={"email": email, "password": password + "x"}
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_credentials")
    login = await rig.http.post(
        "/api/v1/owner/auth/login", json={"email": email, "password": password}
    )
    assert login.status_code == 200, login.text
    assert login.json()["owner"]["owner_id"] == owner
    return bearer(login.json()["access_token"])


async def test_drivers_and_owners_are_told_of_a_session(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with push_rig(db, dsn, tmp_path, nursery, push_low_balance=Decimal("5000")) as (
        rig,
        stub,
    ):
        client, me = await rig.client("1000")
        phone, office = stub.browser(), stub.browser()
        await subscribe(rig, phone, me)
        owner = await owner_token(rig, "owner@example.com", "station-owner-1")
        assert (await subscribe(rig, office, owner))["user_type"] == "owner"
        refused = await rig.http.get("/api/v1/balance/get", headers=owner)
        assert (refused.status_code, refused.json()["error"]) == (403, "wrong_account_kind")

        async with rig.charger("CP-1", time_scale=600) as cp:
            await cp.wait_booted()
            session = await rig.started(me, amount_som=100)
            (started,) = await stub.wait_for(phone, "charging_started")
            assert started["data"] == {
                "session_id": session,
                "station_id": "CP-1",
                "connector_id": 1,
            }
            (new,) = await stub.wait_for(office, "owner_session_started")
            assert new["data"]["session_id"] == session
            await rig.until_view(session, me, lambda v: Decimal(str(v["energy_consumed"])) > 0)
            stop = await rig.http.post(
                "/api/v1/charging/stop", headers=me, json={"session_id": session}
            )
            assert stop.status_code == 200, stop.text
            view = await rig.until_status(session, me, "settled", timeout=20)
            (done,) = await stub.wait_for(phone, "charging_completed")
            assert Decimal(str(done["data"]["cost"])) == Decimal(str(view["final_cost"]))
            assert Decimal(str(done["data"]["refund"])) == Decimal(str(view["refunded_amount"]))
            assert Decimal(str(done["data"]["energy_kwh"])) == Decimal(str(view["energy_consumed"]))
            assert done["title"] == "Charging completed" and "kWh" in done["body"]
            (low,) = await stub.wait_for(phone, "low_balance")
            assert Decimal(str(low["data"]["balance"])) == await rig.exact(client)
            (revenue,) = await stub.wait_for(office, "owner_session_completed")
            assert Decimal(str(revenue["data"]["revenue"])) == Decimal(str(view["final_cost"]))

        paid = await rig.http.post(
            "/api/v1/balance/topup-card", headers=me, json=card(PANS["approve"])
        )
        assert paid.status_code == 200, paid.text
        (confirmed,) = await stub.wait_for(phone, "payment_confirmed")
        assert Decimal(str(confirmed["data"]["amount"])) == Decimal("1000")
        assert Decimal(str(confirmed["data"]["balance"])) == await rig.exact(client)

        owners_kinds = {m["type"] for m in stub.of(office)}
        assert owners_kinds <= {"owner_session_started", "owner_session_completed"}
        assert not {m["type"] for m in stub.of(phone)} & owners_kinds


async def test_dead_subscriptions_go_and_busy_services_are_tried_again(
    db: Database, nursery: trio.Nursery
) -> None:
    stub = PushStub()
    await nursery.start(stub.serve)
    settings = PushSettings(backoff_s=0.01, timeout_s=5)
    sender = PushSender(db, VapidKeys(PRIVATE, SUBJECT), settings)
    shutdown = trio.Event()
    await nursery.start(sender.run, shutdown)
    scripts = {"gone": [410], "busy": [503, 429], "down": [503, 503, 503], "refused": [400]}
    browsers: dict[str, Browser] = {}
    for name, answers in scripts.items():
        client = uuid.uuid4()
        browser = browsers[name] = stub.browser()
        browser.answers = list(answers)
        keys = browser.subscription()["keys"]
        await store.subscribe(
            db,
            client,
            "client",
            browser.endpoint,
            (keys["p256dh"], keys["auth"]),
            user_agent=None,
            language="en",
        )
        assert sender.notify(Push("test", {}, user_id=client))
    with trio.fail_after(15):
        while sender.counts.delivered + sender.counts.gone + sender.counts.failed < 4:
            await sender.changed.wait()
    assert (sender.counts.delivered, sender.counts.gone, sender.counts.failed) == (1, 1, 2)
    assert {n: b.attempts for n, b in browsers.items()} == {
        "gone": 1,
        "busy": 3,
        "down": 3,
        "refused": 1,
    }
    assert len(stub.of(browsers["busy"], "test")) == 1
    endpoints = {r["endpoint"] for r in await db.fetch("SELECT endpoint FROM push_subscriptions")}
    assert browsers["gone"].endpoint not in endpoints
    assert {browsers[n].endpoint for n in ("busy", "down", "refused")} <= endpoints

    # a notification that can't be made is counted and the sender goes on
    busy_client = await db.fetchval(
        "SELECT user_id FROM push_subscriptions WHERE endpoint = $1", browsers["busy"].endpoint
    )
    assert sender.notify(Push("no_such_kind", {}, user_id=busy_client))
    assert sender.notify(Push("charging_completed", {}, user_id=busy_client))  # no figures
    with trio.fail_after(15):
        while len(stub.of(browsers["busy"])) < 2 or sender.counts.failed < 3:
            await sender.changed.wait()
    assert sender.counts.failed == 3
    blank = stub.of(browsers["busy"], "charging_completed")[0]
    assert blank["body"] == " kWh for  KGS;  KGS returned"  # what it lacks is left blank
    shutdown.set()


async def test_a_hanging_push_service_delays_no_session(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with push_rig(db, dsn, tmp_path, nursery, push_timeout=60) as (rig, stub):
        client, me = await rig.client("1000")
        phone = stub.browser()
        await subscribe(rig, phone, me)
        stub.hang = True
        with trio.fail_after(5):
            sent = await rig.http.post("/api/v1/notifications/test", headers=me)
        assert sent.status_code == 202
        async with rig.charger("CP-1", time_scale=600) as cp:
            await cp.wait_booted()
            with trio.fail_after(10):
                session = await rig.started(me, amount_som=100)
                await rig.until_status(session, me, "charging")
                stop = await rig.http.post(
                    "/api/v1/charging/stop", headers=me, json={"session_id": session}
                )
                assert stop.status_code == 200, stop.text
                await rig.until_status(session, me, "settled")
        assert phone.attempts >= 1 and not stub.pushed  # the service took them and hangs
        assert await rig.exact(client) < Decimal("1000")


class Taken:
    """A sender that keeps what it is given."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []

    def notify(self, push: Push) -> bool:
        self.pushes.append(push)
        return True


def milestone(status: str, reason: str | None = None, error: str | None = None) -> Any:
    from cpms.kernel.events import SessionMilestone

    view = {
        "id": "S-1",
        "status": status,
        "station_id": "CP-1",
        "connector_id": 1,
        "energy_consumed": Decimal("1.500"),
        "final_cost": Decimal("32.50"),
        "refunded_amount": Decimal("67.50"),
        "stop_reason": reason,
        "error": error,
    }
    return SessionMilestone(str(uuid.uuid4()), view)


async def test_which_phases_and_outages_tell_whom() -> None:
    from actors.push.notices import Notices, NoticeSettings
    from cpms.kernel.events import StationStatusChanged

    taken = Taken()
    notices = Notices(taken, NoticeSettings())  # type: ignore[arg-type]

    def told(event: Any) -> list[tuple[str, str]]:
        taken.pushes.clear()
        notices.on(event)
        return [(p.kind, p.user_type) for p in taken.pushes]

    assert told(milestone("charging")) == [
        ("charging_started", "client"),
        ("owner_session_started", "owner"),
    ]
    ended = [("owner_session_completed", "owner"), ("low_balance", "client")]
    assert told(milestone("settled", "user")) == [("charging_completed", "client"), *ended]
    assert told(milestone("settled", "EVDisconnected")) == [
        ("charging_completed", "client"),
        *ended,
    ]
    assert told(milestone("settled", "EmergencyStop")) == [("charging_stopped", "client"), *ended]
    assert told(milestone("settled", "charger_offline"))[0] == ("charging_stopped", "client")
    assert told(milestone("cancelled", "user")) == []  # the driver's own cancel
    failed = told(milestone("cancelled", "start_timeout", "the charger did not start"))
    assert failed == [("charging_failed", "client")]
    assert taken.pushes[0].data["reason"] == "the charger did not start"
    assert told(milestone("rejected")) == [("charging_failed", "client")]
    assert told(milestone("starting")) == []

    def status(value: Any) -> StationStatusChanged:
        return StationStatusChanged("CP-1", "L1", value, (), "2026-12-03T00:00:00Z")

    assert told(status("offline")) == []  # first heard of offline: not a change seen here
    assert told(status("available")) == []
    assert told(status("offline")) == [("station_offline", "owner")]
    assert taken.pushes[0].station_id == "CP-1"
    assert told(status("available")) == []
    assert told(status("offline")) == []  # once an hour per station at most


async def test_an_owner_is_told_when_a_station_goes_offline(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with push_rig(db, dsn, tmp_path, nursery, ocpp_offline_after=1.0) as (rig, stub):
        owner = await owner_token(rig, "grid@example.com", "station-owner-2")
        office = stub.browser()
        await subscribe(rig, office, owner, language="ky")
        async with rig.charger("CP-1") as cp:
            await cp.wait_booted()
        (offline,) = await stub.wait_for(office, "station_offline")
        assert offline["data"]["station_id"] == "CP-1"
        assert offline["title"] == "Станция тармакта эмес"
