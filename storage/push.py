"""Web Push subscriptions (``push_subscriptions``): one row per browser endpoint a driver or an
owner registered, and who owns a station (the owner's notifications)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

from storage.database import Database

#: subscriptions one user may hold (a browser each): a bound against abuse
MAX_SUBSCRIPTIONS = 20


@dataclass(frozen=True, slots=True)
class Subscription:
    id: UUID
    endpoint: str
    p256dh: str
    auth: str
    language: str


async def subscribe(
    db: Database,
    user_id: UUID,
    user_type: str,
    endpoint: str,
    keys: tuple[str, str],
    *,
    user_agent: str | None,
    language: str,
) -> str:
    """``created``, ``updated`` (the endpoint was this user's: its keys replaced) or ``full``
    (the user holds :data:`MAX_SUBSCRIPTIONS` already)."""
    outcome: str = await db.fetchval(
        """
        WITH mine AS (SELECT count(*) AS n FROM push_subscriptions WHERE user_id = $2),
             known AS (SELECT 1 FROM push_subscriptions WHERE user_id = $2 AND endpoint = $4),
             saved AS (
                 INSERT INTO push_subscriptions
                     (id, user_id, user_type, endpoint, p256dh_key, auth_key, user_agent, language)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM mine
                  WHERE mine.n < $9 OR EXISTS (SELECT 1 FROM known)
                 ON CONFLICT (user_id, endpoint) DO UPDATE SET
                     user_type = EXCLUDED.user_type, p256dh_key = EXCLUDED.p256dh_key,
                     auth_key = EXCLUDED.auth_key, user_agent = EXCLUDED.user_agent,
                     language = EXCLUDED.language, updated_at = now()
                 RETURNING 1
             )
        SELECT CASE
            WHEN NOT EXISTS (SELECT 1 FROM saved) THEN 'full'
            WHEN EXISTS (SELECT 1 FROM known) THEN 'updated'
            ELSE 'created'
        END
        """,
        uuid4(),
        user_id,
        user_type,
        endpoint,
        keys[0],
        keys[1],
        user_agent,
        language,
        MAX_SUBSCRIPTIONS,
    )
    return outcome


async def unsubscribe(db: Database, user_id: UUID, endpoint: str) -> bool:
    """Whether the endpoint was this user's."""
    done = await db.execute(
        "DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2", user_id, endpoint
    )
    return done.endswith(" 1")


async def subscriptions_of(db: Database, user_id: UUID, user_type: str) -> list[Subscription]:
    rows = await db.fetch(
        "SELECT id, endpoint, p256dh_key, auth_key, language FROM push_subscriptions"
        " WHERE user_id = $1 AND user_type = $2 ORDER BY created_at",
        user_id,
        user_type,
    )
    return [
        Subscription(r["id"], r["endpoint"], r["p256dh_key"], r["auth_key"], r["language"])
        for r in rows
    ]


async def forget(db: Database, subscription_id: UUID) -> None:
    """The push service said the subscription is gone (404/410)."""
    await db.execute("DELETE FROM push_subscriptions WHERE id = $1", subscription_id)


async def delivered(db: Database, subscription_id: UUID) -> None:
    await db.execute(
        "UPDATE push_subscriptions SET last_used_at = now() WHERE id = $1", subscription_id
    )


async def station_owner(db: Database, station_id: str) -> UUID | None:
    """The station's own owner, else its location's; None when neither has one."""
    owner: UUID | None = await db.fetchval(
        "SELECT coalesce(s.owner_id, l.owner_id) FROM stations s"
        " LEFT JOIN locations l ON l.id = s.location_id WHERE s.id = $1",
        station_id,
    )
    return owner
