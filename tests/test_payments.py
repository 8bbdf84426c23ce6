"""Top-ups through the REST facade on a whole cpms with the sandbox provider: QR invoices paid,
told twice, canceled then paid, paid past expiry; card payments approved, through 3-D Secure,
declined, refused at the door; the webhook's checks, each refusal crediting nothing; and no card
number or CVV anywhere in the database or the log."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.payment.provider import ProviderError
from actors.payment.sandbox import SandboxProvider
from cpms.kernel.payments import webhook_signature as sign
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from storage import Database
from storage.clients import set_client_status
from tests.documented import documented_client
from tests.tokens import SECRET, bearer, hs256

WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"
PANS = {
    "approve": "4169585512345678",
    "3ds": "4169585587654321",
    "decline": "4169585511111111",
}
CVV = "739"


@dataclass
class Rig:
    http: httpx.AsyncClient
    db: Database
    sandbox: SandboxProvider
    client: uuid.UUID
    hooks: httpx.AsyncClient  # where the provider's webhooks go: the REST port or their own

    @property
    def me(self) -> dict[str, str]:
        return bearer(hs256(self.client))

    async def topup_qr(self, amount: str = "500") -> str:
        reply = await self.http.post(
            "/api/v1/balance/topup-qr", headers=self.me, json={"amount": amount}
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["invoice_id"])

    async def status(self, invoice: str) -> dict[str, Any]:
        reply = await self.http.get(f"/api/v1/payment/status/{invoice}", headers=self.me)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    async def balance(self) -> Decimal:
        reply = await self.http.get("/api/v1/balance/get", headers=self.me)
        return Decimal(str(reply.json()["balance"]))

    async def topups(self) -> list[Any]:
        rows = await self.db.fetch(
            "SELECT amount, invoice_id FROM ledger_entries WHERE client_id = $1 AND type = 'topup'",
            self.client,
        )
        return [(r["amount"], r["invoice_id"]) for r in rows]

    async def webhook(
        self,
        payload: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        at: float | None = None,
        path: str = "/api/v1/payment/webhook",
    ) -> httpx.Response:
        raw = json.dumps(payload).encode()
        stamp = str(int(at if at is not None else time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": sign(secret, stamp, raw),
        }
        return await self.hooks.post(path, content=raw, headers=headers)


def payment_settings(dsn: str, tmp_path: Path, **options: Any) -> Settings:
    """A server on any free ports, the test database, app tokens, and the webhook secret."""
    return Settings(
        database_url=dsn,
        data_dir=tmp_path,
        http_port=0,
        ocpp_port=0,
        jwt_secret=SECRET,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_webhook_port=0,
        **options,
    )


async def start(
    nursery: trio.Nursery, dsn: str, tmp_path: Path, **options: Any
) -> tuple[Endpoints, SandboxProvider, trio.Event]:
    settings = payment_settings(dsn, tmp_path, **options)
    sandbox, shutdown = SandboxProvider(), trio.Event()
    endpoints: Endpoints = await nursery.start(
        lambda task_status: run_server(
            settings, shutdown, payment_provider=sandbox, task_status=task_status
        )
    )
    return endpoints, sandbox, shutdown


@pytest.fixture
async def rig(
    request: pytest.FixtureRequest, db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Rig]:
    """Webhooks to the REST port, or with ``@BOTH_DOORS`` to their own port as well."""
    endpoints, sandbox, shutdown = await start(nursery, dsn, tmp_path)
    door = endpoints.webhook_url if getattr(request, "param", "rest") == "own" else None
    async with (
        documented_client(base_url=endpoints.http_url, timeout=30) as http,
        documented_client(base_url=door or endpoints.http_url, timeout=30) as hooks,
    ):
        yield Rig(http, db, sandbox, uuid.uuid4(), hooks)
    shutdown.set()


BOTH_DOORS = pytest.mark.parametrize("rig", ["rest", "own"], indirect=True)


async def test_a_qr_invoice_paid_is_credited_once(rig: Rig) -> None:
    reply = await rig.http.post(
        "/api/v1/balance/topup-qr", headers=rig.me, json={"amount": "500", "description": "app"}
    )
    assert reply.status_code == 200, reply.text
    issued = reply.json()
    invoice = issued["invoice_id"]
    assert invoice.startswith("INV-") and len(invoice) == len("INV-20261203-000001")
    assert base64.b64decode(issued["qr_code"]).startswith(b"\x89PNG")
    assert issued["app_link"].startswith("odengi://")
    assert (await rig.status(invoice))["status"] == 0
    row = await rig.db.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice)
    assert row is not None and row["qr_expires_at"] == row["expires_at"]
    assert row["expires_at"] - row["created_at"] < timedelta(minutes=5, seconds=5)
    transaction = await rig.sandbox.pay(invoice)
    status = await rig.status(invoice)
    assert (status["status"], status["status_text"], status["can_start_charging"]) == (
        1,
        "approved",
        True,
    )
    assert await rig.balance() == Decimal("500.00")
    # the provider tells again, through the webhook this time: nothing more is credited
    told = {"invoice_id": invoice, "status": "approved", "transaction_id": transaction}
    again = await rig.webhook({**told, "amount": "500.00"})
    assert again.status_code == 200, again.text
    assert await rig.topups() == [(Decimal("500.00"), invoice)]
    history = (await rig.http.get("/api/v1/payment/history", headers=rig.me)).json()
    assert [(p["invoice_id"], p["status"]) for p in history["payments"]] == [(invoice, 1)]


async def test_an_approval_after_a_cancel_is_credited_once(rig: Rig) -> None:
    invoice = await rig.topup_qr("120")
    await rig.sandbox.cancel(invoice)
    assert (await rig.status(invoice))["status_text"] == "canceled"
    await rig.sandbox.pay(invoice)  # the payer's money came after all
    await rig.sandbox.pay(invoice, silent=True)  # a second notice the provider never sent
    assert (await rig.status(invoice))["status_text"] == "approved"
    assert await rig.topups() == [(Decimal("120.00"), invoice)]


async def test_only_the_invoice_paid_is_credited(rig: Rig) -> None:
    paid, unpaid = await rig.topup_qr("10"), await rig.topup_qr("20")
    await rig.sandbox.pay(paid)
    assert await rig.topups() == [(Decimal("10.00"), paid)]
    assert (await rig.status(unpaid))["status"] == 0


async def test_topup_refusals_change_nothing(rig: Rig, db: Database) -> None:
    for body, code in [
        ({"amount": "9.99"}, "validation_error"),
        ({"amount": "100000.01"}, "validation_error"),
        ({"amount": "abc"}, "validation_error"),
        ({"amount": "50", "client_id": str(uuid.uuid4())}, "client_mismatch"),
    ]:
        reply = await rig.http.post("/api/v1/balance/topup-qr", headers=rig.me, json=body)
        assert reply.status_code in (400, 403) and reply.json()["error"] == code, reply.text
    anonymous = await rig.http.post("/api/v1/balance/topup-qr", json={"amount": "50"})
    assert anonymous.status_code == 401
    await rig.balance()  # the client exists now
    await set_client_status(db, rig.client, "blocked")
    blocked = await rig.http.post("/api/v1/balance/topup-qr", headers=rig.me, json={"amount": "50"})
    assert (blocked.status_code, blocked.json()["error"]) == (403, "client_blocked")
    assert await db.fetchval("SELECT count(*) FROM invoices WHERE client_id = $1", rig.client) == 0
    other = await rig.http.get("/api/v1/payment/status/INV-20261203-999999", headers=rig.me)
    assert (other.status_code, other.json()["error"]) == (404, "payment_not_found")


async def test_an_invoice_is_shown_to_its_owner_only(rig: Rig) -> None:
    invoice = await rig.topup_qr("50")
    stranger = bearer(hs256(uuid.uuid4()))
    reply = await rig.http.get(f"/api/v1/payment/status/{invoice}", headers=stranger)
    assert reply.status_code == 403


@BOTH_DOORS
async def test_webhook_refusals_credit_nothing(rig: Rig) -> None:
    invoice = await rig.topup_qr("300")
    told = {"invoice_id": invoice, "status": "approved", "transaction_id": "TX-9", "amount": "300"}
    cases = [
        (await rig.webhook(told, secret="not-the-secret"), 401, "invalid_signature"),
        (await rig.webhook(told, at=time.time() - 400), 401, "stale_webhook"),
        (await rig.webhook(told, at=time.time() + 400), 401, "stale_webhook"),
        (await rig.webhook({**told, "amount": "301"}), 400, "amount_mismatch"),
        (
            await rig.webhook({**told, "invoice_id": "INV-20261203-999999"}),
            404,
            "payment_not_found",
        ),
        (await rig.webhook({**told, "status": "paid"}), 400, "validation_error"),
        (await rig.webhook({**told, "transaction_id": "TX\x00"}), 400, "invalid_request"),
    ]
    for reply, status, code in cases:
        assert (reply.status_code, reply.json()["error"]) == (status, code), reply.text
    assert await rig.topups() == []
    accepted = await rig.webhook(told, at=time.time())
    assert accepted.status_code == 200, accepted.text
    replayed = await rig.hooks.post(
        "/api/v1/payment/webhook",
        content=accepted.request.content,
        headers=dict(accepted.request.headers),
    )
    assert (replayed.status_code, replayed.json()["error"]) == (409, "webhook_replayed")
    legacy = await rig.webhook(told, path="/payment/webhook", at=time.time() + 1)
    assert legacy.status_code == 200, legacy.text  # told again: credited once all the same
    assert await rig.topups() == [(Decimal("300.00"), invoice)]


@BOTH_DOORS
async def test_the_webhook_door_refuses_what_is_not_a_notice(rig: Rig) -> None:
    """The webhook is answered in front of the app: a signed body that is not a notice, the
    wrong method, a body too large, each refused in the app's one error shape."""
    invoice = await rig.topup_qr("20")

    async def signed(raw: bytes) -> httpx.Response:
        stamp = str(int(time.time()))
        headers = {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": sign(WEBHOOK_SECRET, stamp, raw),
        }
        return await rig.hooks.post("/api/v1/payment/webhook", content=raw, headers=headers)

    no_tx = json.dumps({"invoice_id": invoice, "status": "approved", "amount": "20"}).encode()
    for raw, code in [
        (b"not json", "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
        (b"[1, 2]", "invalid_request"),
        (no_tx, "validation_error"),
        (json.dumps({"invoice_id": "INV-1", "status": "approved"}).encode(), "validation_error"),
    ]:
        reply = await signed(raw)
        assert (reply.status_code, reply.json()["error"]) == (400, code), (raw, reply.text)
        assert reply.json()["success"] is False and reply.json()["message"]
    wrong_method = await rig.hooks.get("/api/v1/payment/webhook")
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "POST")
    huge = await signed(b'{"pad": "' + b"x" * 70_000 + b'"}')
    assert (huge.status_code, huge.json()["error"]) == (413, "payload_too_large")
    assert await rig.topups() == []
    assert (await rig.status(invoice))["status"] == 0


@pytest.mark.parametrize("rig", ["own"], indirect=True)
async def test_a_notice_replayed_through_the_other_door_is_a_replay(rig: Rig) -> None:
    """The webhooks' own port and the REST port share one guard."""
    invoice = await rig.topup_qr("70")
    told = {"invoice_id": invoice, "status": "approved", "transaction_id": "TX-7", "amount": "70"}
    accepted = await rig.webhook(told)
    assert accepted.status_code == 200, accepted.text
    replayed = await rig.http.post(
        "/api/v1/payment/webhook",
        content=accepted.request.content,
        headers=dict(accepted.request.headers),
    )
    assert (replayed.status_code, replayed.json()["error"]) == (409, "webhook_replayed")
    assert await rig.topups() == [(Decimal("70.00"), invoice)]


async def test_webhooks_from_an_address_not_allowed_or_without_a_secret_are_refused(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    endpoints, _sandbox, shutdown = await start(
        nursery, dsn, tmp_path, payment_webhook_ips="10.9.8.7"
    )
    async with documented_client(base_url=endpoints.http_url) as http:
        rig = Rig(http, db, _sandbox, uuid.uuid4(), http)
        invoice = await rig.topup_qr("40")
        told = {"invoice_id": invoice, "status": "approved", "transaction_id": "T", "amount": "40"}
        reply = await rig.webhook(told)
        assert (reply.status_code, reply.json()["error"]) == (403, "forbidden_source")
        assert await rig.topups() == []
    shutdown.set()


def card(pan: str, **changes: str) -> dict[str, str]:
    return {
        "amount": "1000",
        "card_pan": pan,
        "card_holder": "IVAN IVANOV",
        "card_expiry": "12/39",
        "card_cvv": CVV,
        **changes,
    }


async def test_card_payments_approved_through_3ds_and_declined(rig: Rig) -> None:
    approved = await rig.http.post(
        "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["approve"])
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["card_mask"]) == ("approved", "416958******5678")
    assert Decimal(str(body["new_balance"])) == Decimal("1000.00")

    needs = await rig.http.post(
        "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["3ds"])
    )
    assert needs.status_code == 200 and needs.json()["requires_3ds"] is True, needs.text
    back = needs.json()
    assert back["term_url"].endswith("/api/v1/payment/3ds-callback")
    done = await rig.http.post(
        "/api/v1/payment/3ds-callback", data={"MD": back["md"], "PaRes": "Y"}
    )
    assert done.status_code == 200, done.text
    assert Decimal(str(done.json()["new_balance"])) == Decimal("2000.00")

    declined = await rig.http.post(
        "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["decline"])
    )
    assert (declined.status_code, declined.json()["error"]) == (402, "insufficient_funds")
    failed_3ds = await rig.http.post(
        "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["3ds"])
    )
    md = failed_3ds.json()["md"]
    for spoilt in ({"MD": md + "\x00", "PaRes": "Y"}, {"MD": md, "PaRes": "Y\x00"}):
        unstorable = await rig.http.post("/api/v1/payment/3ds-callback", data=spoilt)
        assert (unstorable.status_code, unstorable.json()["error"]) == (400, "validation_error")
    refused = await rig.http.post("/api/v1/payment/3ds-callback", json={"MD": md, "PaRes": "N"})
    assert (refused.status_code, refused.json()["error"]) == (402, "payment_declined")
    assert len(await rig.topups()) == 2
    assert await rig.balance() == Decimal("2000.00")


async def test_bad_cards_are_refused_at_the_door(rig: Rig) -> None:
    for changes, code in [
        ({"card_pan": "4169 5855 1234"}, "card_invalid"),
        ({"card_pan": "41695855123456XX"}, "card_invalid"),
        ({"card_holder": "ИВАН ИВАНОВ"}, "card_invalid"),
        ({"card_expiry": "13/30"}, "card_invalid"),
        ({"card_expiry": "01/20"}, "card_invalid"),
        ({"card_cvv": "12"}, "invalid_cvv"),
        ({"card_cvv": "12a"}, "invalid_cvv"),
    ]:
        reply = await rig.http.post(
            "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["approve"], **changes)
        )
        assert (reply.status_code, reply.json()["error"]) == (400, code), (changes, reply.text)
    assert await rig.db.fetchval("SELECT count(*) FROM invoices") == 0
    assert await rig.topups() == []


async def test_no_card_number_or_cvv_is_stored_or_logged(
    rig: Rig, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    for pan in PANS.values():
        await rig.http.post("/api/v1/balance/topup-card", headers=rig.me, json=card(pan))
    await rig.http.post(
        "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["approve"], card_cvv="1x")
    )
    dump = []
    for table in ("invoices", "payment_audit", "ledger_entries", "ledger_operations"):
        rows = await rig.db.fetch(f"SELECT * FROM {table}")
        dump.append(json.dumps([dict(r) for r in rows], default=str))
    out = capsys.readouterr()
    text = "\n".join([*dump, out.out, out.err, caplog.text])
    assert "416958******5678" in text  # the mask is kept
    for pan in PANS.values():
        assert pan not in text and pan[:12] not in text  # nor a mask that keeps too much
    # the CVV as a value of its own (inside a timestamp or an id, 739 is just digits)
    assert re.search(rf"(?<![0-9A-Za-z]){CVV}(?![0-9A-Za-z])", text) is None


class BrokenSandbox(SandboxProvider):
    """A provider that can't be reached."""

    async def create_qr(self, *args: Any, **kwargs: Any) -> Any:
        raise ProviderError("connection refused")


async def test_a_provider_away_is_503_and_its_invoice_is_canceled(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = Settings(
        database_url=dsn, data_dir=tmp_path, http_port=0, ocpp_port=0, jwt_secret=SECRET
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(
        lambda task_status: run_server(
            settings, shutdown, payment_provider=BrokenSandbox(), task_status=task_status
        )
    )
    async with documented_client(base_url=endpoints.http_url) as http:
        client = uuid.uuid4()
        reply = await http.post(
            "/api/v1/balance/topup-qr", headers=bearer(hs256(client)), json={"amount": "25"}
        )
        assert (reply.status_code, reply.json()["error"]) == (503, "payment_unavailable")
        states = await db.fetch("SELECT state FROM invoices WHERE client_id = $1", client)
        assert [r["state"] for r in states] == ["canceled"]
    shutdown.set()


async def test_a_client_blocked_or_leaving_tops_up_nothing(rig: Rig, db: Database) -> None:
    """Blocked and pending_deletion clients can't top up, by QR or by card; a payment for an
    invoice issued before the client was blocked is not credited: the invoice keeps why, for an
    operator (the payer's money is the provider's to return: ``cpms payments refund`` needs a
    credit)."""
    invoice = await rig.topup_qr("60")
    await set_client_status(db, rig.client, "blocked")
    await rig.sandbox.pay(invoice)
    row = await db.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice)
    assert row is not None and row["state"] == "approved" and not row["credited"]
    assert row["credit_error"] == "client_blocked"
    assert await rig.topups() == []
    audit = await db.fetch("SELECT data FROM payment_audit WHERE invoice_id = $1", invoice)
    assert any(a["data"].get("credit_refused") == "client_blocked" for a in audit)
    status = await rig.status(invoice)
    assert status["can_start_charging"] is False
    for state in ("blocked", "pending_deletion"):
        await set_client_status(db, rig.client, state)
        qr = await rig.http.post("/api/v1/balance/topup-qr", headers=rig.me, json={"amount": "50"})
        by_card = await rig.http.post(
            "/api/v1/balance/topup-card", headers=rig.me, json=card(PANS["approve"])
        )
        for reply in (qr, by_card):
            assert (reply.status_code, reply.json()["error"]) == (403, f"client_{state}")
    assert await db.fetchval("SELECT count(*) FROM invoices WHERE client_id = $1", rig.client) == 1
