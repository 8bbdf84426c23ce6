"""Station owners' sign-in: ``POST /api/v1/owner/auth/login`` ``{email or phone, password}``
answers an access token whose subject is the owner (:data:`api.auth.ROLE_CLAIM` ``owner``).

An owner's token subscribes the owner to Web Push (:mod:`api.notifications`): a new session and
a completed one on their stations, and a station going offline. It is refused where a driver's
is needed (403 ``wrong_account_kind``). Owners are made by an operator
(``POST /api/v1/admin/owners``) and given stations or locations with ``owner_id``. There is no
refresh token: an owner signs in again after the token's 15 minutes.
"""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from api.accounts import PasswordSignIn, nobodys_hash, password_right
from api.door import body
from api.tokens import ACCESS_TTL, TokenIssuer
from cpms.kernel.errors import Unauthorized
from storage import Database
from storage import owners as store


def owners_blueprint(db: Database, issuer: TokenIssuer) -> Blueprint:
    bp = Blueprint("owners", __name__, url_prefix="/api/v1/owner")
    nobodys_hash()  # made now, so the first unknown login takes no longer than the next

    @bp.post("/auth/login")
    async def login() -> Response:
        sent = await body(PasswordSignIn)
        row = await store.password_of(db, email=sent.email, phone=sent.phone)
        stored = None if row is None else row["password_hash"]
        if row is None or not await password_right(stored, sent.password):
            raise Unauthorized("wrong login or password", code="invalid_credentials")
        return jsonify(
            {
                "success": True,
                "access_token": issuer.access_token(row["id"], role="owner"),
                "token_type": "bearer",
                "expires_in": int(ACCESS_TTL.total_seconds()),
                "owner": {"owner_id": str(row["id"]), "name": row["name"]},
            }
        )

    return bp
