"""cpms's O!Dengi-style and OBANK-style provider adapters against the payment sandbox service
(over real sockets; the card endpoint over mutual TLS): what each request becomes and what each
answer means, the signatures checked, and every way a provider can fail raised as
:class:`ProviderError`."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio

from actors.payment.obank import ObankProvider
from actors.payment.odengi import ODengiProvider
from actors.payment.provider import (
    CardApproved,
    CardDeclined,
    CardNeeds3ds,
    InvoiceStatus,
    ProviderError,
)
from cpms.kernel.payments import Card
from cpms.kernel.provider_wire import obank_request, odengi_envelope
from cpms.server.app import Endpoints, run_server
from cpms.settings import Settings
from tests.documented import documented_client
from tests.paysandbox import PASSWORD, POINT, SID, Tls, serve_sandbox
from tests.test_payments import WEBHOOK_SECRET, payment_settings
from tests.tokens import bearer, hs256

SOON = datetime.now(UTC) + timedelta(minutes=5)


def card(pan: str, cvv: str = "739") -> Card:
    return Card(pan, "TEST CARD", "12/30", cvv, today=date.today())


async def test_odengi_invoice_issued_paid_polled_refunded(nursery: trio.Nursery) -> None:
    served = await serve_sandbox(nursery)
    odengi = ODengiProvider(f"{served.http_url}/api/json/json.php", SID, PASSWORD, test=True)
    issued = await odengi.create_qr("INV-20261203-000001", Decimal("250.50"), SOON, "app")
    assert issued.provider_ref == "SBX-INV-20261203-000001"
    assert issued.app_link.startswith("odengi://") and issued.qr_data
    assert served.sandbox.invoices["INV-20261203-000001"].amount == 25050  # tyiyn
    assert await odengi.status("INV-20261203-000001") == InvoiceStatus("pending")
    paid = served.sandbox.pay("INV-20261203-000001")
    assert await odengi.status("INV-20261203-000001") == InvoiceStatus(
        "approved", paid.trans_id, Decimal("250.50")
    )
    assert paid.trans_id is not None
    await odengi.refund(paid.trans_id, Decimal("50.50"), reference="r1")
    await odengi.refund(paid.trans_id, Decimal("50.50"), reference="r1")  # the same refund
    assert served.sandbox.invoices["INV-20261203-000001"].refunded == 5050
    with pytest.raises(ProviderError):  # more than is left
        await odengi.refund(paid.trans_id, Decimal("200.01"), reference="r2")
    # an invoice the provider never took (cpms stopped before sending it) counts as canceled
    assert await odengi.status("INV-20261203-000002") == InvoiceStatus("canceled")
    await odengi.create_qr("INV-20261203-000003", Decimal("10"), SOON, None)
    await odengi.cancel("INV-20261203-000003")
    assert await odengi.status("INV-20261203-000003") == InvoiceStatus("canceled")
    await odengi.aclose()


async def test_odengi_refusals_are_provider_errors(nursery: trio.Nursery) -> None:
    served = await serve_sandbox(nursery)
    url = f"{served.http_url}/api/json/json.php"
    wrong = ODengiProvider(url, SID, "not-the-password")
    with pytest.raises(ProviderError, match="invalid_hash"):
        await wrong.create_qr("INV-20261203-000001", Decimal("10"), SOON, None)
    assert served.sandbox.invoices == {}  # nothing issued
    away = ODengiProvider("http://127.0.0.1:9/api/json/json.php", SID, PASSWORD, timeout=2)
    with pytest.raises(ProviderError):
        await away.status("INV-20261203-000001")
    nonsense = ODengiProvider(f"{served.http_url}/sandbox/stats", SID, PASSWORD)
    with pytest.raises(ProviderError):  # an answer that is not the provider's
        await nonsense.status("INV-20261203-000001")
    # the sandbox checks the envelope as the provider does: a changed body breaks the hash
    envelope = odengi_envelope(
        "createInvoice",
        {"order_id": "INV-20261203-000009", "amount": 1000},
        sid=SID,
        password=PASSWORD,
        mktime=int(time.time()),
    )
    envelope["data"]["amount"] = 100000
    async with httpx.AsyncClient() as http:
        reply = await http.post(url, content=json.dumps(envelope))
    assert reply.json()["data"]["error"] == "invalid_hash"
    for each in (wrong, away, nonsense):
        await each.aclose()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls.make(tmp_path)


def obank(url: str, tls: Tls, *, with_cert: bool = True) -> ObankProvider:
    if with_cert:
        context = ObankProvider.tls(str(tls.client_cert), str(tls.client_key), str(tls.ca))
    else:
        context = ssl.create_default_context(cafile=str(tls.ca))
    return ObankProvider(
        f"{url}/obank/h2h", POINT, "1331", context, term_url="http://cpms/3ds", timeout=5
    )


async def test_obank_cards_over_mutual_tls(nursery: trio.Nursery, tls: Tls) -> None:
    served = await serve_sandbox(nursery, tls=tls)
    assert served.https_url is not None
    bank = obank(served.https_url, tls)
    approved = await bank.charge_card(
        "INV-20261203-000001", Decimal("1000"), card("4169585512345678")
    )
    assert isinstance(approved, CardApproved) and approved.amount == Decimal("1000.00")
    assert await bank.status("INV-20261203-000001") == InvoiceStatus(
        "approved", approved.transaction_id, Decimal("1000.00")
    )
    asked = await bank.charge_card("INV-20261203-000002", Decimal("10"), card("4169585587654321"))
    assert isinstance(asked, CardNeeds3ds) and asked.acs_url.endswith("/sandbox/3ds")
    assert await bank.status("INV-20261203-000002") == InvoiceStatus("pending")
    invoice, done = await bank.finish_3ds(asked.md, "Y")
    assert invoice == "INV-20261203-000002" and isinstance(done, CardApproved)
    assert (await bank.finish_3ds(asked.md, "Y"))[0] == ""  # a 3-D Secure return is used once
    failed = await bank.charge_card("INV-20261203-000003", Decimal("10"), card("4169585587654321"))
    assert isinstance(failed, CardNeeds3ds)
    assert isinstance((await bank.finish_3ds(failed.md, "N"))[1], CardDeclined)
    assert await bank.status("INV-20261203-000003") == InvoiceStatus("canceled")
    poor = await bank.charge_card("INV-20261203-000004", Decimal("10"), card("4169585511111111"))
    assert poor == CardDeclined("insufficient_funds", "the bank declined the card")
    blocked = await bank.charge_card("INV-20261203-000005", Decimal("10"), card("5555444433332222"))
    assert isinstance(blocked, CardDeclined) and blocked.code == "card_blocked"
    await bank.refund(approved.transaction_id, Decimal("1000"), reference="r1")
    assert served.sandbox.invoices["INV-20261203-000001"].refunded == 100000
    await bank.aclose()


async def test_obank_refuses_without_the_merchants_certificate(
    nursery: trio.Nursery, tls: Tls
) -> None:
    served = await serve_sandbox(nursery, tls=tls)
    assert served.https_url is not None
    stranger = obank(served.https_url, tls, with_cert=False)
    with pytest.raises(ProviderError):  # the TLS handshake fails: no request gets in
        await stranger.charge_card("INV-20261203-000001", Decimal("10"), card("4169585512345678"))
    assert served.sandbox.invoices == {}
    with pytest.raises(ValueError, match="https"):  # no plain-HTTP fallback
        obank(served.http_url, tls)
    async with httpx.AsyncClient() as http:  # the card endpoint over plain HTTP: refused
        body = obank_request(POINT, "status", {}, id="INV-20261203-000001")
        reply = await http.post(f"{served.http_url}/obank/h2h", content=body)
    assert reply.status_code == 403
    wrong_point = ObankProvider(
        f"{served.https_url}/obank/h2h",
        "9999",
        "1331",
        ObankProvider.tls(str(tls.client_cert), str(tls.client_key), str(tls.ca)),
        term_url="http://cpms/3ds",
    )
    with pytest.raises(ProviderError, match="result code 2"):
        await wrong_point.status("INV-20261203-000001")
    for each in (stranger, wrong_point):
        await each.aclose()


async def status_of(http: httpx.AsyncClient, invoice: str, me: dict[str, str]) -> int:
    reply = await http.get(f"/api/v1/payment/status/{invoice}", headers=me)
    return int(reply.json()["status"])


async def test_a_whole_cpms_on_the_http_providers(
    nursery: trio.Nursery, tls: Tls, dsn: str, tmp_path: Path
) -> None:
    """QR by O!Dengi and cards by OBANK, both played by the sandbox service: the webhook it
    sends is checked and credited, a card approved and one through 3-D Secure credited; with
    no card provider configured, card top-ups are refused as unavailable."""
    served = await serve_sandbox(nursery, webhook_secret=WEBHOOK_SECRET, tls=tls)
    assert served.https_url is not None
    settings = payment_settings(
        dsn,
        tmp_path,
        payment_provider="odengi",
        odengi_url=f"{served.http_url}/api/json/json.php",
        odengi_sid=SID,
        odengi_password=PASSWORD,
        card_provider="obank",
        obank_url=f"{served.https_url}/obank/h2h",
        obank_point_id=POINT,
        obank_service_id="1331",
        obank_cert=tls.client_cert,
        obank_key=tls.client_key,
        obank_ca=tls.ca,
    )
    shutdown = trio.Event()
    endpoints: Endpoints = await nursery.start(
        lambda task_status: run_server(settings, shutdown, task_status=task_status)
    )
    served.sandbox.webhook_url = f"{endpoints.http_url}/api/v1/payment/webhook"
    me = bearer(hs256(uuid.uuid4()))
    async with documented_client(base_url=endpoints.http_url, timeout=30) as http:
        issued = await http.post("/api/v1/balance/topup-qr", headers=me, json={"amount": "75"})
        assert issued.status_code == 200, issued.text
        invoice = issued.json()["invoice_id"]
        served.sandbox.pay(invoice)  # the webhook tells cpms
        with trio.fail_after(10):
            await served.sandbox.delivered()  # answered 200 once credited
        assert served.sandbox.counts["delivered"] == 1
        assert await status_of(http, invoice, me) == 1
        form = {"card_holder": "TEST CARD", "card_expiry": "12/30", "card_cvv": "739"}
        approved = await http.post(
            "/api/v1/balance/topup-card",
            headers=me,
            json={**form, "amount": "100", "card_pan": "4169585512345678"},
        )
        assert approved.status_code == 200, approved.text
        assert Decimal(str(approved.json()["new_balance"])) == Decimal("175")
        asked = await http.post(
            "/api/v1/balance/topup-card",
            headers=me,
            json={**form, "amount": "25", "card_pan": "4169585587654321"},
        )
        assert asked.json()["requires_3ds"] is True
        back = await http.post(
            "/api/v1/payment/3ds-callback", data={"MD": asked.json()["md"], "PaRes": "Y"}
        )
        assert back.status_code == 200 and Decimal(str(back.json()["new_balance"])) == 200
        declined = await http.post(
            "/api/v1/balance/topup-card",
            headers=me,
            json={**form, "amount": "25", "card_pan": "4169585511111111"},
        )
        assert (declined.status_code, declined.json()["error"]) == (402, "insufficient_funds")
    shutdown.set()

    without_cards = Settings(**{**settings.model_dump(), "card_provider": "off", "http_port": 0})
    shutdown = trio.Event()
    endpoints = await nursery.start(
        lambda task_status: run_server(without_cards, shutdown, task_status=task_status)
    )
    async with documented_client(base_url=endpoints.http_url, timeout=30) as http:
        off = await http.post(
            "/api/v1/balance/topup-card",
            headers=me,
            json={**form, "amount": "25", "card_pan": "4169585512345678"},
        )
        assert (off.status_code, off.json()["error"]) == (503, "card_not_available")
        qr = await http.post("/api/v1/balance/topup-qr", headers=me, json={"amount": "10"})
        assert qr.status_code == 200
    shutdown.set()
