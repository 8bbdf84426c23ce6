"""A driver's favourite locations: ``GET /api/v1/favorites``, ``POST /api/v1/favorites``
``{location_id}``, ``DELETE /api/v1/favorites/{location_id}`` (seed 000 §7, where the app kept
them in Supabase's ``user_favorites``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, jsonify

from actors.core import Core
from api.door import body
from api.identity import Identity
from cpms.kernel.errors import Conflict, NotFound
from storage import favorites as store


class FavoriteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    location_id: str = Field(min_length=1, max_length=64)


def favorites_blueprint(core: Core, identity: Identity) -> Blueprint:
    bp = Blueprint("favorites", __name__, url_prefix="/api/v1/favorites")

    @bp.get("")
    async def mine() -> Response:
        rows = await store.favorites_of(core.db, await identity.client_id())
        favorites = [
            {
                "location_id": r["location_id"],
                "name": r["name"],
                "address": r["address"],
                "city": r["city"],
                "added_at": r["created_at"],
            }
            for r in rows
        ]
        return jsonify({"success": True, "favorites": favorites, "total": len(favorites)})

    @bp.post("")
    async def add() -> Response:
        caller = await identity.client_id()
        location_id = (await body(FavoriteBody)).location_id
        outcome = await store.add_favorite(core.db, caller, location_id)
        if outcome == "no_location":
            raise NotFound(f"location {location_id} not found", code="location_not_found")
        if outcome == "full":
            raise Conflict(f"at most {store.MAX_FAVORITES} favourites", code="too_many_favorites")
        response = jsonify(
            {"success": True, "location_id": location_id, "added": outcome == "added"}
        )
        response.status_code = 201 if outcome == "added" else 200
        return response

    @bp.delete("/<location_id>")
    async def remove(location_id: str) -> Response:
        caller = await identity.client_id()
        if not await store.remove_favorite(core.db, caller, location_id):
            raise NotFound(f"{location_id} is not a favourite", code="favorite_not_found")
        return jsonify({"success": True, "location_id": location_id, "removed": True})

    return bp
