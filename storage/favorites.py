"""A driver's favourite locations (``favourites``, made by the first migration)."""

from __future__ import annotations

from uuid import UUID

from storage.database import Database, Row

MAX_FAVORITES = 200


async def favorites_of(db: Database, client_id: UUID) -> list[Row]:
    """The client's favourites, newest first, with the location's name, address and city."""
    return await db.fetch(
        "SELECT f.location_id, l.name, l.address, l.city, f.created_at"
        " FROM favourites f JOIN locations l ON l.id = f.location_id"
        " WHERE f.client_id = $1 ORDER BY f.created_at DESC, f.location_id",
        client_id,
    )


async def add_favorite(db: Database, client_id: UUID, location_id: str) -> str:
    """``added``, ``already`` (it was a favourite), ``no_location`` (no active location of that
    id) or ``full`` (the client has :data:`MAX_FAVORITES`, a bound against abuse)."""
    outcome: str = await db.fetchval(
        """
        WITH place AS (SELECT id FROM locations WHERE id = $2 AND status = 'active'),
             mine AS (SELECT count(*) AS n FROM favourites WHERE client_id = $1),
             added AS (
                 INSERT INTO favourites (client_id, location_id)
                 SELECT $1, id FROM place, mine WHERE mine.n < $3
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             )
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM added) THEN 'added'
            WHEN NOT EXISTS (SELECT 1 FROM place) THEN 'no_location'
            WHEN EXISTS (SELECT 1 FROM favourites WHERE client_id = $1 AND location_id = $2)
                THEN 'already'
            ELSE 'full'
        END
        """,
        client_id,
        location_id,
        MAX_FAVORITES,
    )
    return outcome


async def remove_favorite(db: Database, client_id: UUID, location_id: str) -> bool:
    """Whether it was a favourite."""
    done = await db.execute(
        "DELETE FROM favourites WHERE client_id = $1 AND location_id = $2", client_id, location_id
    )
    return done.endswith(" 1")
