"""Stored answers of idempotent requests (``idempotency_keys``, migration 0012)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from storage.database import Database

KEPT = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: bytes
    status: int
    body: bytes
    media_type: str


async def find_answer(db: Database, owner: str, key: str) -> StoredAnswer | None:
    """The answer kept for ``owner``'s ``key``, if one was kept in the last 24 hours."""
    row = await db.fetchrow(
        "SELECT fingerprint, status, body, media_type FROM idempotency_keys"
        " WHERE owner = $1 AND key = $2 AND created_at > now() - $3::interval",
        owner,
        key,
        KEPT,
    )
    if row is None:
        return None
    return StoredAnswer(
        bytes(row["fingerprint"]), row["status"], bytes(row["body"]), row["media_type"]
    )


async def keep_answer(db: Database, owner: str, key: str, answer: StoredAnswer) -> None:
    """Keep the answer (an expired one under the same key is replaced; a live one stays)."""
    await db.execute(
        "INSERT INTO idempotency_keys (owner, key, fingerprint, status, body, media_type)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
        " status = EXCLUDED.status, body = EXCLUDED.body, media_type = EXCLUDED.media_type,"
        " created_at = now()"
        " WHERE idempotency_keys.created_at <= now() - $7::interval",
        owner,
        key,
        answer.fingerprint,
        answer.status,
        answer.body,
        answer.media_type,
        KEPT,
    )


async def forget_expired_answers(db: Database) -> int:
    """Delete answers older than 24 hours; how many."""
    done = await db.execute(
        "DELETE FROM idempotency_keys WHERE created_at <= now() - $1::interval", KEPT
    )
    return int(done.split()[-1])


Keyed = list[tuple[str, str, StoredAnswer]]  # owner, key, answer


async def keep_answers(db: Database, answers: Keyed) -> None:
    """Keep many answers in one round trip (``owner``, ``key``, answer each); as
    :func:`keep_answer` for each."""
    await db.run_with_connection(_keep_many, answers)


async def _keep_many(
    conn: asyncpg.Connection, answers: list[tuple[str, str, StoredAnswer]]
) -> None:
    await conn.executemany(
        "INSERT INTO idempotency_keys (owner, key, fingerprint, status, body, media_type)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
        " status = EXCLUDED.status, body = EXCLUDED.body, media_type = EXCLUDED.media_type,"
        " created_at = now()"
        " WHERE idempotency_keys.created_at <= now() - interval '24 hours'",
        [(o, k, a.fingerprint, a.status, a.body, a.media_type) for o, k, a in answers],
    )


async def kept_keys(db: Database) -> list[tuple[str, str, datetime]]:
    """Every key with an answer kept in the last 24 hours, and when it was kept."""
    rows = await db.fetch(
        "SELECT owner, key, created_at FROM idempotency_keys"
        " WHERE created_at > now() - $1::interval",
        KEPT,
    )
    return [(r["owner"], r["key"], r["created_at"]) for r in rows]
