"""What sign-in and the account endpoints answer with success, as models (:mod:`api.accounts`;
the rest: :mod:`api.responses`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from api.responses import Number, Part, Reply, Stamp


class Profile(Part):
    client_id: str
    phone: str | None
    email: str | None
    name: str | None
    status: Literal["active", "blocked", "pending_deletion"]
    balance: Number
    created_at: Stamp


class Me(Reply, Profile):
    pass


class Tokens(Reply):
    access_token: str
    refresh_token: str | None = None  # absent in cookie mode: set as the httpOnly cookie
    token_type: Literal["bearer"]
    expires_in: int


class SignedIn(Tokens):
    client: Profile


class Csrf(Reply):
    csrf_token: str
    header: Literal["X-CSRF-Token"]


class CodeSent(Reply):
    expires_in: int
    resend_in: int


class SignedOut(Reply):
    pass


class Deleted(Reply):
    status: Literal["pending_deletion"]
    purge_after_days: int


class Jwks(Part):
    model_config = ConfigDict(extra="forbid")

    keys: list[dict[str, Any]]


class OwnerRef(Part):
    owner_id: str
    name: str


class OwnerSignedIn(Reply):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    owner: OwnerRef


class VapidKey(Reply):
    public_key: str


class Subscribed(Reply):
    status: Literal["created", "updated"]
    user_type: Literal["client", "owner"]


class Unsubscribed(Reply):
    pass


class TestQueued(Reply):
    queued: Literal[True]
    subscriptions: int
