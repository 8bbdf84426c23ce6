"""``cpms sandbox-pay``: the payment providers played for real, over HTTP, with no money.

It answers what cpms's provider adapters send (wire formats in
:mod:`cpms.kernel.provider_wire`): O!Dengi-style QR invoices at ``POST /api/json/json.php``
(every request's HMAC-MD5 checked) and OBANK-style card payments at ``POST /obank/h2h`` (over
mutual TLS when the service is given a certificate: a request without a client certificate never
gets in). Cards are the seeds' test cards (:data:`cpms.kernel.payments.SANDBOX_CARDS`). When an
invoice is paid or canceled it tells cpms by a webhook signed as cpms checks it, and it can be
an unreliable provider: each webhook delayed at random (so they arrive out of order), some sent
twice (the same bytes again: a replay; or signed afresh: a provider's retry), some never sent
(only a poll finds out). A webhook that can't be delivered (cpms down, a 5xx) is retried with
backoff; one cpms refuses (a 4xx) is not.

A test or a developer plays the payer through ``/sandbox/…``: pay an invoice (late too, or
after a cancel), cancel it, read it, read the webhook counters.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from cpms.kernel.payments import sandbox_card, webhook_signature
from cpms.kernel.provider_wire import obank_parse, obank_response, odengi_signed

#: a webhook cpms can't take is tried again this long, with backoff
GIVE_UP_AFTER_S = 600.0


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0  # share of webhooks sent twice
    drop: float = 0.0  # share never sent
    delay_max: float = 0.0  # each waits up to this long, at random
    seed: int | None = None


@dataclass(frozen=True)
class Merchant:
    """Who may call: the O!Dengi merchant (sid, password) and the OBANK point."""

    sid: str
    password: str
    point: str


@dataclass
class SandboxInvoice:
    order_id: str
    amount: int  # tyiyn
    kind: str  # qr or card
    state: str = "processing"  # approved, canceled
    trans_id: str | None = None
    payments: int = 0  # how often the payer paid (a second payment is refused)
    refunded: int = 0


@dataclass
class PaySandbox:
    merchant: Merchant
    webhook_url: str | None
    webhook_secret: str | None
    public_url: str
    faults: Faults = field(default_factory=Faults)
    invoices: dict[str, SandboxInvoice] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    polls: Counter[str] = field(default_factory=Counter)
    outstanding: int = 0
    _3ds: dict[str, str] = field(default_factory=dict)  # md → order id
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)  # reference → answer
    _tx: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.faults.seed)
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._idle = trio.Event()
        self._idle.set()

    # -- the payer's side ---------------------------------------------------------------------

    def pay(self, order_id: str, *, silent: bool = False, reliable: bool = False) -> SandboxInvoice:
        """Pay (after a cancel or past expiry too); a second payment is not taken. ``reliable``:
        its webhook is not dropped (past its expiry, nobody polls an invoice: only the webhook
        tells)."""
        invoice = self.invoices[order_id]
        invoice.payments += 1
        if invoice.state != "approved":
            self._tx += 1
            invoice.state, invoice.trans_id = "approved", f"SBX-{self._tx:08d}"
            self.notify(invoice, silent=silent, reliable=reliable)
        return invoice

    def cancel(self, order_id: str, *, silent: bool = False) -> SandboxInvoice:
        invoice = self.invoices[order_id]
        if invoice.state == "processing":
            invoice.state = "canceled"
            self.notify(invoice, silent=silent)
        return invoice

    # -- webhooks -----------------------------------------------------------------------------

    def notify(
        self, invoice: SandboxInvoice, *, silent: bool = False, reliable: bool = False
    ) -> None:
        if silent or self.webhook_url is None or self._nursery is None:
            return
        payload = {
            "invoice_id": invoice.order_id,
            "status": invoice.state,
            "transaction_id": invoice.trans_id,
            "amount": f"{invoice.amount / 100:.2f}",
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.counts["queued"] += 1
        if not reliable and self._random.random() < self.faults.drop:
            self.counts["dropped"] += 1
            return
        copies = [("fresh", body)]
        if self._random.random() < self.faults.duplicate:
            self.counts["duplicated"] += 1
            copies.append((self._random.choice(["replay", "resigned"]), body))
        stamp = str(int(time.time()))
        for how, data in copies:
            delay = self._random.uniform(0, self.faults.delay_max)
            if self.outstanding == 0:
                self._idle = trio.Event()
            self.outstanding += 1
            self._nursery.start_soon(self._deliver, data, stamp if how == "replay" else None, delay)

    async def _deliver(self, body: bytes, stamp: str | None, delay: float) -> None:
        assert self._http is not None and self.webhook_url is not None
        try:
            await trio.sleep(delay)
            began, backoff = trio.current_time(), 0.2
            while True:
                at = stamp or str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Webhook-Timestamp": at,
                    "X-Webhook-Signature": webhook_signature(self.webhook_secret or "", at, body),
                }
                try:
                    reply = await self._http.post(self.webhook_url, content=body, headers=headers)
                except httpx.HTTPError:
                    status = 0
                else:
                    status = reply.status_code
                if status == 200:
                    self.counts["delivered"] += 1
                    return
                if status == 409:
                    self.counts["replay_refused"] += 1
                    return
                if 400 <= status < 500 and status != 429:
                    self.counts["refused"] += 1
                    return
                self.counts["attempts_failed"] += 1
                if trio.current_time() - began > GIVE_UP_AFTER_S:
                    self.counts["given_up"] += 1
                    return
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            self.outstanding -= 1
            if self.outstanding == 0:
                self._idle.set()

    async def delivered(self) -> None:
        """Wait until every webhook sent so far is delivered (or refused, or given up)."""
        await self._idle.wait()

    # -- O!Dengi-style QR invoices ------------------------------------------------------------

    def odengi(self, envelope: Any) -> dict[str, Any]:
        def error(code: str, desc: str) -> dict[str, Any]:
            return {"data": {"error": code, "desc": desc}}

        if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
            return error("bad_request", "not an envelope")
        if envelope.get("sid") != self.merchant.sid or not odengi_signed(
            envelope, self.merchant.password
        ):
            return error("invalid_hash", "the hash is wrong")
        data, cmd = envelope["data"], envelope.get("cmd")
        order = str(data.get("order_id", ""))
        if cmd == "createInvoice":
            amount = data.get("amount")
            if not order or not isinstance(amount, int) or amount <= 0:
                return error("bad_request", "order_id and amount (tyiyn) are required")
            if order not in self.invoices:
                self.invoices[order] = SandboxInvoice(order, amount, "qr")
            qr = f"https://sandbox.pay/qr/{order}?amount={amount}"
            return {
                "data": {
                    "invoice_id": f"SBX-{order}",
                    "qr": qr,
                    "qr_url": f"{self.public_url}/sandbox/qr/{order}",
                    "link_app": f"odengi://pay?invoice={order}",
                }
            }
        invoice = self.invoices.get(order)
        if cmd == "statusPayment":
            self.polls[order] += 1
            if invoice is None:
                return error("not_found", "no such invoice")
            return {"data": self.described(invoice)}
        if cmd == "invoiceCancel":
            if invoice is None:
                return error("not_found", "no such invoice")
            self.cancel(order, silent=True)  # cpms asked: it knows
            return {"data": self.described(invoice)}
        if cmd == "refundPaymentToEwallet":
            reference = str(data.get("refund_ref", ""))
            return self.refund(str(data.get("trans_id", "")), data.get("amount"), reference, error)
        return error("unknown_cmd", f"unknown command {cmd!r}")

    def refund(self, trans_id: str, amount: Any, reference: str, error: Any) -> dict[str, Any]:
        """A refund's reference seen before: the same refund, answered again."""
        if reference and reference in self.refunds:
            return self.refunds[reference]
        found = [i for i in self.invoices.values() if i.trans_id == trans_id and trans_id]
        if not found:
            return error("not_found", "no such payment")  # type: ignore[no-any-return]
        invoice = found[0]
        if not isinstance(amount, int) or not 0 < amount <= invoice.amount - invoice.refunded:
            return error("bad_amount", "more than is left to refund")  # type: ignore[no-any-return]
        invoice.refunded += amount
        self.counts["refunds"] += 1
        done = {"data": {"refund_id": f"RF-{trans_id}-{invoice.refunded}", "amount": amount}}
        if reference:
            self.refunds[reference] = done
        return done

    @staticmethod
    def described(invoice: SandboxInvoice) -> dict[str, Any]:
        paid = (
            [{"trans_id": invoice.trans_id, "amount": invoice.amount, "status": "approved"}]
            if invoice.state == "approved"
            else []
        )
        return {
            "order_id": invoice.order_id,
            "status": invoice.state,
            "amount": invoice.amount,
            "payments": paid,
            "refunded": invoice.refunded,
        }

    # -- OBANK-style cards --------------------------------------------------------------------

    def obank(self, body: bytes) -> bytes:
        try:
            point, op, fields = obank_parse(body, "request")
        except ValueError:
            return obank_response(1)
        if point != self.merchant.point:
            return obank_response(2)
        if op.tag == "payment":
            return self._card_payment(op.get("id", ""), op.get("sum", ""), fields)
        if op.tag == "complete":
            order = self._3ds.pop(op.get("md", ""), None)
            if order is None:
                return obank_response(0, {"state": "unknown"})
            invoice = self.invoices[order]
            if op.get("pares") != "Y":
                self.cancel(order, silent=True)
                return obank_response(0, self._card(invoice, "declined", "payment_declined"))
            self.pay(order)
            return obank_response(0, self._card(invoice, "approved"))
        if op.tag == "status":
            known = self.invoices.get(op.get("id", ""))
            if known is None:
                return obank_response(0)
            invoice = known
            state = {"approved": "completed", "canceled": "cancelled"}.get(
                invoice.state, "processing"
            )
            return obank_response(0, self._card(invoice, state))
        if op.tag == "refund":
            answer = self.refund(
                op.get("trans", ""), _int(op.get("sum")), op.get("ref", ""), lambda c, d: None
            )
            if answer is None:
                return obank_response(3)
            return obank_response(0, {"refund": answer["data"]["refund_id"]})
        return obank_response(4)

    def _card_payment(self, order: str, total: str, fields: dict[str, str]) -> bytes:
        amount = _int(total)
        pan = fields.get("card_pan", "")
        if not order or amount is None or amount <= 0 or len(pan) < 13:
            return obank_response(1)
        invoice = self.invoices.setdefault(order, SandboxInvoice(order, amount, "card"))
        verdict = sandbox_card(pan[-4:])
        if verdict == "approve":
            self.pay(order)
            return obank_response(0, self._card(invoice, "approved"))
        if verdict == "3ds":
            md = f"MD-{order}"
            self._3ds[md] = order
            return obank_response(
                0,
                self._card(invoice, "3ds"),
                acs_url=f"{self.public_url}/sandbox/3ds",
                pa_req=f"PAREQ-{order}",
                md=md,
            )
        self.cancel(order, silent=True)
        return obank_response(0, self._card(invoice, "declined", verdict))

    @staticmethod
    def _card(invoice: SandboxInvoice, state: str, reason: str | None = None) -> dict[str, str]:
        attrs = {"id": invoice.order_id, "state": state, "sum": str(invoice.amount)}
        if invoice.trans_id and state in ("approved", "completed"):
            attrs["trans"] = invoice.trans_id
        if reason:
            attrs["reason"] = reason
        return attrs

    # -- the service --------------------------------------------------------------------------

    async def run(
        self,
        app: Any,
        config: Any,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled, delivering webhooks meanwhile."""
        from hypercorn.trio import serve

        async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
            self._http, self._nursery = http, nursery
            binds = await nursery.start(
                lambda task_status: serve(app, config, task_status=task_status)
            )
            task_status.started(binds)


def _int(text: str | None) -> int | None:
    try:
        return int(text or "")
    except ValueError:
        return None
