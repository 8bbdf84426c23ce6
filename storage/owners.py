"""Station owners (``owners``): made by an operator, signed in with a password (their push
notifications: :mod:`actors.push`)."""

from __future__ import annotations

from uuid import UUID

from storage.database import Database, Row


async def add_owner(
    db: Database,
    owner_id: UUID,
    *,
    name: str,
    email: str | None,
    phone: str | None,
    password_hash: str | None,
) -> str:
    """``added``, ``exists`` (the id is taken) or ``login_taken`` (the e-mail or phone is
    another owner's)."""
    outcome: str = await db.fetchval(
        """
        WITH taken AS (
                 SELECT id FROM owners WHERE id = $1 OR email = $3 OR phone = $4
             ),
             added AS (
                 INSERT INTO owners (id, name, email, phone, password_hash)
                 SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM taken)
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             )
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM added) THEN 'added'
            WHEN EXISTS (SELECT 1 FROM taken WHERE id = $1) THEN 'exists'
            ELSE 'login_taken'
        END
        """,
        owner_id,
        name,
        email,
        phone,
        password_hash,
    )
    return outcome


async def login_taken(db: Database, owner_id: str, email: str | None, phone: str | None) -> bool:
    """Whether another owner has this e-mail or phone."""
    return bool(
        await db.fetchval(
            "SELECT 1 FROM owners WHERE id <> $1::uuid AND (email = $2 OR phone = $3)",
            owner_id,
            email,
            phone,
        )
    )


async def password_of(db: Database, *, email: str | None, phone: str | None) -> Row | None:
    """The owner signing in with this e-mail or phone: id, name and password hash."""
    return await db.fetchrow(
        "SELECT id, name, password_hash FROM owners"
        " WHERE ($1::text IS NOT NULL AND email = $1) OR ($2::text IS NOT NULL AND phone = $2)",
        email,
        phone,
    )
