"""The Web Push and station-owner operations of the OpenAPI document (:mod:`api.notifications`,
:mod:`api.owners`)."""

from __future__ import annotations

from api import auth_responses as A
from api.accounts import PasswordSignIn
from api.notifications import SubscribeBody, UnsubscribeBody
from api.operations import Op


def push_operations() -> list[Op]:
    return [
        Op(
            "get",
            "/api/v1/notifications/vapid-public-key",
            "The VAPID public key for pushManager.subscribe (503 push_disabled when off)",
            "notifications",
            errors=(503,),
            response=A.VapidKey,
        ),
        Op(
            "post",
            "/api/v1/notifications/subscribe",
            "Register the browser's push subscription (a driver's or an owner's token)",
            "notifications",
            "app",
            body=SubscribeBody,
            errors=(400, 401, 409, 503),
            response=A.Subscribed,
            status=201,
            same_body_on=(200,),
        ),
        Op(
            "post",
            "/api/v1/notifications/unsubscribe",
            "Remove one of the caller's push subscriptions",
            "notifications",
            "app",
            body=UnsubscribeBody,
            errors=(400, 401, 404, 503),
            response=A.Unsubscribed,
        ),
        Op(
            "post",
            "/api/v1/notifications/test",
            "Send a test notification to each of the caller's subscriptions",
            "notifications",
            "app",
            errors=(401, 404, 503),
            response=A.TestQueued,
            status=202,
        ),
        Op(
            "post",
            "/api/v1/owner/auth/login",
            "A station owner signs in (an access token for the owner's push subscriptions)",
            "owners",
            body=PasswordSignIn,
            errors=(400, 401),
            response=A.OwnerSignedIn,
        ),
    ]
