"""The payment provider's webhook, ``POST /api/v1/payment/webhook`` (and the legacy
``/payment/webhook``), answered in front of the Quart app as plain ASGI.

A provider's notices come in bursts (a thousand payments confirmed at once, each told twice),
and on this path the app's own machinery (its request context, routing, hooks) cost more than
everything the webhook does: on two cores it held the webhook to about 400 a second. Here the
body is read (at most 64 KB), the :class:`~api.webhooks.WebhookGuard` checks it, the notice is
validated by the same model and bounds as every body (:func:`cpms.kernel.validation.validate`,
exact money), told to the invoice's PaymentActor, and answered in the app's one error shape
(:func:`api.errors.describe`); everything else goes on to the app untouched.

The answering itself (:class:`WebhookIntake`) knows no transport: the webhooks' own port
(:mod:`api.webhook_listener`) answers through it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from actors.payment.provider import InvoiceStatus
from actors.payment.service import Payments
from api.asgi import ASGIApp, Receive, Scope, Send
from api.errors import describe, error_body
from api.jsonio import dumps
from api.rate_limit import Limit, RateLimiter
from api.webhooks import WebhookGuard
from cpms.kernel import jsontext
from cpms.kernel.errors import InvalidRequest, TooManyRequests
from cpms.kernel.payments import INVOICE_ID
from cpms.kernel.validation import validate

PATHS = frozenset({"/api/v1/payment/webhook", "/payment/webhook"})
MAX_BODY = 64 * 1024


class Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    invoice_id: Annotated[str, StringConstraints(pattern=INVOICE_ID.pattern)]
    status: Annotated[str, StringConstraints(pattern="^(approved|canceled|pending)$")]
    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    amount: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] | None = None


class _TooLarge(Exception):
    pass


async def _read(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _notice(raw: bytes) -> Webhook:
    """Raises:
    InvalidRequest: not a UTF-8 JSON object (``invalid_request``), or fields that don't fit
        (``validation_error``; an approval needs its transaction).
    """
    try:
        data = jsontext.loads(raw.decode("utf-8"), exact=True)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidRequest(f"the body is not JSON: {error}", code="invalid_request") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_request")
    if not jsontext.representable(data):
        raise InvalidRequest(jsontext.UNSTORABLE, code="invalid_request")
    told = validate(Webhook, data)
    if told.status == "approved" and told.transaction_id is None:
        raise InvalidRequest("an approval needs its transaction_id", code="validation_error")
    return told


Answer = tuple[int, dict[str, Any], dict[str, str]]


def method_not_allowed() -> Answer:
    return 405, error_body("method_not_allowed", "only POST is allowed here"), {"Allow": "POST"}


def too_large() -> Answer:
    return 413, error_body("payload_too_large", "the body is too large"), {"Connection": "close"}


def encoded(answer: Answer) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An answer as it goes on the wire: status, headers (with its length), the JSON body."""
    status, body, headers = answer
    payload = dumps(body).encode()
    fields = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    return status, fields, payload


class WebhookIntake:
    """What a provider's notice is answered, whichever listener took it (the REST port's
    :class:`WebhookDoor`, or the webhooks' own port, :mod:`api.webhook_listener`): one guard,
    so a notice replayed through the other door is a replay all the same."""

    def __init__(
        self,
        guard: WebhookGuard,
        payments: Payments,
        limiter: RateLimiter | None = None,
        limit: Limit | None = None,
    ) -> None:
        self.guard, self.payments = guard, payments
        self.limiter, self.limit = limiter or RateLimiter(), limit or Limit("webhook", 30)

    async def answer(self, headers: Mapping[str, str], remote: str | None, raw: bytes) -> Answer:
        """``headers`` by lower-case name; ``remote`` the peer's address."""
        try:
            return 200, await self.handle(headers, remote, raw), {}
        except Exception as error:  # noqa: BLE001 - the app's one error shape; a bug is logged there
            return describe(error)

    async def handle(
        self, headers: Mapping[str, str], remote: str | None, raw: bytes
    ) -> dict[str, Any]:
        if remote not in self.guard.allowed:  # the provider's own addresses are not limited
            verdict = await self.limiter.hit(self.limit, f"ip:{remote}")
            if not verdict.allowed:
                raise TooManyRequests(verdict.retry_after)
        signature = headers.get("x-webhook-signature")
        self.guard.check(remote, headers.get("x-webhook-timestamp"), signature, raw)
        told = _notice(raw)  # an unknown invoice or another amount: its actor says so
        status = InvoiceStatus(told.status, told.transaction_id, told.amount)  # type: ignore[arg-type]
        view = await self.payments.provider_said(told.invoice_id, status, reason="webhook")
        self.guard.accepted(signature)
        return {"success": True, "invoice_id": told.invoice_id, "status": view.state.value}


class WebhookDoor:
    """The intake in front of the app on the REST port, as ASGI."""

    def __init__(self, app: ASGIApp, intake: WebhookIntake) -> None:
        self.app, self.intake = app, intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            answer = method_not_allowed()
        else:
            try:
                raw = await _read(receive)
            except _TooLarge:
                answer = too_large()
            else:
                headers = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in scope["headers"]
                }
                client = scope.get("client")
                answer = await self.intake.answer(headers, client and client[0], raw)
        status, fields, payload = encoded(answer)
        await send({"type": "http.response.start", "status": status, "headers": fields})
        await send({"type": "http.response.body", "body": payload})
