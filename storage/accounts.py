"""Accounts: sign-in by password or one-time code, refresh tokens, deletion (migration 0013).

Codes and tokens are stored only as hashes; a password only as its argon2id hash.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from uuid import UUID, uuid4

import asyncpg

from cpms.kernel.errors import Conflict, NotFound
from storage.database import Database, Row

OTP_ATTEMPTS = 5


class CodeCheck(Enum):
    OK = "ok"
    WRONG = "wrong"  # attempts left
    SPENT = "spent"  # the fifth wrong try, or tried again after it
    EXPIRED = "expired"
    NONE = "none"  # no code was sent to this phone


class Rotation(Enum):
    ROTATED = "rotated"
    REUSED = "reused"  # a token already rotated: its family is revoked now
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


_PROFILE = "id, phone, email, name, status, balance, created_at, updated_at"


async def profile(db: Database, client_id: UUID) -> Row:
    row = await db.fetchrow(f"SELECT {_PROFILE} FROM clients WHERE id = $1", client_id)
    if row is None:
        raise NotFound(f"client {client_id} not found", code="client_not_found")
    return row


async def create_account(
    db: Database, *, phone: str | None, email: str | None, name: str | None, password_hash: str
) -> UUID:
    """A new client with a password. Raises ``Conflict`` (``account_exists``) when the phone or
    the e-mail is already someone's."""
    client_id = uuid4()
    try:
        await db.execute(
            "INSERT INTO clients (id, phone, email, name, password_hash)"
            " VALUES ($1, $2, $3, $4, $5)",
            client_id,
            phone,
            email,
            name,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            "an account with this phone or e-mail exists already", code="account_exists"
        ) from None
    return client_id


async def password_of(db: Database, *, phone: str | None, email: str | None) -> Row | None:
    """``id``, ``password_hash``, ``status`` of the client signing in by phone or by e-mail."""
    if email is not None:
        return await db.fetchrow(
            "SELECT id, password_hash, status FROM clients WHERE lower(email) = lower($1)", email
        )
    return await db.fetchrow(
        "SELECT id, password_hash, status FROM clients WHERE phone = $1", phone
    )


async def set_password_hash(db: Database, client_id: UUID, password_hash: str) -> None:
    """A rehash with newer parameters, on a successful sign-in."""
    await db.execute(
        "UPDATE clients SET password_hash = $2 WHERE id = $1", client_id, password_hash
    )


async def client_for_phone(db: Database, phone: str) -> Row:
    """The client with this phone (``id``, ``status``), created on its first code sign-in."""
    row = await db.fetchrow(
        """WITH created AS (
               INSERT INTO clients (id, phone) VALUES ($1, $2)
               ON CONFLICT (phone) DO NOTHING
               RETURNING id, status
           )
           SELECT id, status FROM created
           UNION ALL
           SELECT id, status FROM clients WHERE phone = $2""",
        uuid4(),
        phone,
    )
    assert row is not None
    return row


async def put_code(
    db: Database, phone: str, code_hash: bytes, *, lifetime: timedelta, cooldown: timedelta
) -> float:
    """Keep a new code for ``phone`` unless one was sent less than ``cooldown`` ago; 0, or the
    seconds still to wait (nothing changed then)."""
    wait = await db.fetchval(
        """WITH kept AS (
               INSERT INTO otp_codes (phone, code_hash, expires_at)
               VALUES ($1, $2, now() + $3::interval)
               ON CONFLICT (phone) DO UPDATE
                   SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at,
                       attempts = 0, sent_at = now()
                   WHERE otp_codes.sent_at <= now() - $4::interval
               RETURNING 1
           )
           SELECT CASE WHEN EXISTS (SELECT 1 FROM kept) THEN 0
                       ELSE extract(epoch FROM (sent_at + $4::interval - now())) END
           FROM (SELECT 1) one LEFT JOIN otp_codes ON phone = $1""",
        phone,
        code_hash,
        lifetime,
        cooldown,
    )
    return max(0.0, float(wait or 0))


async def check_code(db: Database, phone: str, code_hash: bytes) -> tuple[CodeCheck, int]:
    """Try a code, and how many tries are left: a right one is used up, a wrong one counts (the
    fifth spends the code)."""
    row = await db.fetchrow(
        """UPDATE otp_codes SET attempts = attempts + (code_hash <> $2)::int
           WHERE phone = $1
           RETURNING code_hash = $2 AS right, attempts, expires_at < now() AS expired""",
        phone,
        code_hash,
    )
    if row is None:
        return CodeCheck.NONE, 0
    left = max(0, OTP_ATTEMPTS - row["attempts"])
    if row["expired"]:
        return CodeCheck.EXPIRED, left
    if row["attempts"] >= OTP_ATTEMPTS:
        return CodeCheck.SPENT, 0
    if not row["right"]:
        return CodeCheck.WRONG, left
    await forget_code(db, phone)
    return CodeCheck.OK, left


async def forget_code(db: Database, phone: str) -> None:
    await db.execute("DELETE FROM otp_codes WHERE phone = $1", phone)


async def keep_refresh_token(
    db: Database, token_hash: bytes, client_id: UUID, expires_at: datetime, family: UUID
) -> None:
    await db.execute(
        "INSERT INTO refresh_tokens (token_hash, family, client_id, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        token_hash,
        family,
        client_id,
        expires_at,
    )


async def rotate_refresh_token(
    db: Database, token_hash: bytes, new_hash: bytes, expires_at: datetime
) -> tuple[Rotation, UUID | None]:
    """Use a refresh token once: it is marked used and its successor kept, in one transaction.
    A token used before revokes its whole family (someone holds a stolen copy)."""
    return await db.run_with_connection(_rotate, token_hash, new_hash, expires_at)


async def _rotate(
    conn: asyncpg.Connection, token_hash: bytes, new_hash: bytes, expires_at: datetime
) -> tuple[Rotation, UUID | None]:
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT family, client_id, expires_at < now() AS expired, used_at, revoked_at"
            " FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            token_hash,
        )
        if row is None:
            return Rotation.UNKNOWN, None
        if row["revoked_at"] is not None:
            return Rotation.REVOKED, None
        if row["used_at"] is not None:
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now()"
                " WHERE family = $1 AND revoked_at IS NULL",
                row["family"],
            )
            return Rotation.REUSED, None
        if row["expired"]:
            return Rotation.EXPIRED, None
        await conn.execute(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash
        )
        await conn.execute(
            "INSERT INTO refresh_tokens (token_hash, family, client_id, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            new_hash,
            row["family"],
            row["client_id"],
            expires_at,
        )
        return Rotation.ROTATED, row["client_id"]


async def revoke_family_of(db: Database, token_hash: bytes) -> bool:
    """Sign out: the token's family revoked; whether the token was known."""
    done = await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family ="
        " (SELECT family FROM refresh_tokens WHERE token_hash = $1)",
        token_hash,
    )
    known = await db.fetchval("SELECT 1 FROM refresh_tokens WHERE token_hash = $1", token_hash)
    return bool(known) or not done.endswith(" 0")


async def update_profile(
    db: Database, client_id: UUID, *, name: str | None, email: str | None
) -> None:
    """Raises ``Conflict`` (``account_exists``) for an e-mail that is someone else's."""
    try:
        await db.execute(
            "UPDATE clients SET name = coalesce($2, name), email = coalesce($3, email),"
            " updated_at = now() WHERE id = $1",
            client_id,
            name,
            email,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("this e-mail is another account's", code="account_exists") from None


async def request_deletion(db: Database, client_id: UUID) -> None:
    """The account is ``pending_deletion`` (nothing can be started or topped up) and signed out
    everywhere; its personal data is purged later (:func:`purge_deleted`)."""
    await db.run_with_connection(_request_deletion, client_id)


async def _request_deletion(conn: asyncpg.Connection, client_id: UUID) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE clients SET status = 'pending_deletion', updated_at = now(),"
            " deletion_requested_at = coalesce(deletion_requested_at, now()) WHERE id = $1",
            client_id,
        )
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now()"
            " WHERE client_id = $1 AND revoked_at IS NULL",
            client_id,
        )


async def purge_deleted(db: Database, after: timedelta) -> int:
    """Personal data of accounts whose deletion was asked for more than ``after`` ago erased
    (phone, e-mail, name, password, favourites, tokens); the ledger and sessions stay, as the
    books must. How many accounts."""
    return await db.run_with_connection(_purge, after)


async def _purge(conn: asyncpg.Connection, after: timedelta) -> int:
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE clients SET phone = NULL, email = NULL, name = NULL,"
            " password_hash = NULL, updated_at = now()"
            " WHERE status = 'pending_deletion' AND deletion_requested_at < now() - $1::interval"
            " AND (phone IS NOT NULL OR email IS NOT NULL OR name IS NOT NULL"
            "      OR password_hash IS NOT NULL)"
            " RETURNING id",
            after,
        )
        ids = [r["id"] for r in rows]
        if ids:
            await conn.execute("DELETE FROM favourites WHERE client_id = ANY($1)", ids)
            await conn.execute("DELETE FROM refresh_tokens WHERE client_id = ANY($1)", ids)
    return len(ids)
