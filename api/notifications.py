"""Web Push subscriptions (seed 004, 1.3.0): ``/api/v1/notifications/*``.

* ``GET /vapid-public-key`` (no sign-in): the key the app passes to ``pushManager.subscribe``
  as ``applicationServerKey``.
* ``POST /subscribe``: the browser's ``PushSubscription`` as ``toJSON()`` gives it
  (``{endpoint, expirationTime, keys: {p256dh, auth}}``), plus an optional ``user_agent``.
  Upserted per endpoint (201 new, 200 its keys replaced). Notifications to it are written in the
  language of the request's ``Accept-Language``.
* ``POST /unsubscribe`` ``{endpoint}``.
* ``POST /test``: a test notification to each of the caller's subscriptions (queued: 202).

A driver's token subscribes the driver, a station owner's (``/api/v1/owner/auth/login``) the
owner. Without ``CPMS_VAPID_PRIVATE_KEY`` Web Push is off: these answer 503 ``push_disabled``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint, Response, jsonify, request

from actors.push.sender import Push, PushSender
from actors.push.webpush import browser_keys
from api.auth import Proof, TokenVerifier, bearer
from api.door import body
from api.i18n import language
from cpms.kernel.errors import Conflict, InvalidRequest, NotFound, Unavailable
from storage import Database
from storage import push as store

Endpoint = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: str = Field(min_length=1, max_length=200)
    auth: str = Field(min_length=1, max_length=100)


class SubscribeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    endpoint: Endpoint
    keys: SubscriptionKeys
    expiration_time: int | None = Field(None, alias="expirationTime", ge=0)
    user_agent: str | None = Field(None, max_length=500)


class UnsubscribeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint


def checked_endpoint(endpoint: str, allow_http: bool) -> str:
    """A push service's URL: ``https://`` (``http://`` only when allowed, for development),
    with a host and no credentials; else :class:`InvalidRequest`."""
    parts = urlsplit(endpoint)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
        raise InvalidRequest(
            "endpoint must be the push service's https:// URL", code="invalid_subscription"
        )
    return endpoint


def notifications_blueprint(
    db: Database, verifier: TokenVerifier, sender: PushSender, *, allow_http: bool = False
) -> Blueprint:
    bp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications")

    def enabled() -> None:
        if not sender.enabled:
            raise Unavailable(
                "push notifications are not configured on this server", code="push_disabled"
            )

    async def caller() -> Proof:
        enabled()
        return await verifier.subject(bearer(request.headers.get("Authorization")))

    @bp.get("/vapid-public-key")
    async def public_key() -> Response:
        enabled()
        assert sender.keys is not None
        return jsonify({"success": True, "public_key": sender.keys.public_key})

    @bp.post("/subscribe")
    async def subscribe() -> Response:
        who = await caller()
        sub = await body(SubscribeBody)
        endpoint = checked_endpoint(sub.endpoint, allow_http)
        try:
            browser_keys(sub.keys.p256dh, sub.keys.auth)
        except ValueError as bad:
            raise InvalidRequest(str(bad), code="invalid_subscription") from None
        outcome = await store.subscribe(
            db,
            who.subject,
            who.role,
            endpoint,
            (sub.keys.p256dh, sub.keys.auth),
            user_agent=sub.user_agent or request.headers.get("User-Agent", "")[:500] or None,
            language=language(request.headers.get("Accept-Language")),
        )
        if outcome == "full":
            raise Conflict(
                f"at most {store.MAX_SUBSCRIPTIONS} push subscriptions per account; "
                "unsubscribe an old one",
                code="too_many_subscriptions",
            )
        response = jsonify({"success": True, "status": outcome, "user_type": who.role})
        response.status_code = 201 if outcome == "created" else 200
        return response

    @bp.post("/unsubscribe")
    async def unsubscribe() -> Response:
        who = await caller()
        gone = await body(UnsubscribeBody)
        if not await store.unsubscribe(db, who.subject, gone.endpoint):
            raise NotFound("no such subscription of yours", code="subscription_not_found")
        return jsonify({"success": True})

    @bp.post("/test")
    async def test() -> Response:
        who = await caller()
        subscriptions = await store.subscriptions_of(db, who.subject, who.role)
        if not subscriptions:
            raise NotFound(
                "no push subscription of yours: subscribe first", code="no_subscriptions"
            )
        if not sender.notify(Push("test", {}, who.role, user_id=who.subject)):
            raise Unavailable("the push queue is full; try again later", code="push_busy")
        response = jsonify({"success": True, "queued": True, "subscriptions": len(subscriptions)})
        response.status_code = 202
        return response

    return bp
