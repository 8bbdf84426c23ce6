"""The ledger against a real PostgreSQL: every operation, its idempotency, and its refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest

from cpms.kernel.charging import Limit
from cpms.kernel.errors import (
    Conflict,
    CpmsError,
    Forbidden,
    InsufficientBalance,
    InvalidRequest,
    NotFound,
)
from storage import Database, ledger_sql
from storage.clients import ensure_client, set_client_status
from storage.ledger_ops import Capture, Credit, LedgerOp, LedgerResult, Release, Reserve
from storage.ledger_plan import plan_batch
from storage.ledger_sql import LedgerCache, apply_batch
from storage.sessions import SessionClaim
from storage.stations import create_station
from tests.conftest import LedgerRig

D = Decimal


async def new_client(
    db: Database, balance: str | None = None, rig: LedgerRig | None = None
) -> uuid.UUID:
    cid = uuid.uuid4()
    await ensure_client(db, cid)
    if balance is not None:
        assert rig is not None
        await rig.ledger.credit(cid, balance, key=f"seed-{cid}")
    return cid


async def ledger_rows(db: Database) -> tuple[int, int, int]:
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM ledger_entries) AS e,
                  (SELECT count(*) FROM ledger_operations) AS o,
                  (SELECT count(*) FROM holds) AS h"""
    )
    assert row is not None
    return row["e"], row["o"], row["h"]


async def test_a_client_record_is_made_on_first_appearance_and_answered_after(
    rig: LedgerRig,
) -> None:
    cid = uuid.uuid4()
    first = await ensure_client(rig.db, cid, phone="+996555000111")
    assert (first["id"], first["phone"], first["status"], first["balance"]) == (
        cid,
        "+996555000111",
        "active",
        D("0.00"),
    )
    await rig.ledger.credit(cid, "25", key="topup-ensure")
    again = await ensure_client(rig.db, cid, phone="+996555999999")  # kept as it was
    assert (again["phone"], again["balance"], again["created_at"]) == (
        "+996555000111",
        D("25.00"),
        first["created_at"],
    )
    assert await rig.db.fetchval("SELECT count(*) FROM clients WHERE id = $1", cid) == 1


async def test_warming_a_connection_up_writes_nothing_and_prepares_both_statements(
    rig: LedgerRig,
) -> None:
    cid = await new_client(rig.db, "40", rig)
    before = await ledger_rows(rig.db)

    async def state(c: asyncpg.Connection) -> tuple[bool, int]:
        prepared = await c.fetchval("SELECT count(*) FROM pg_prepared_statements")
        return c.is_in_transaction(), prepared

    async with rig.db.connection() as conn:
        _, prepared_before = await rig.db.run_on(conn, state)
        await rig.db.run_on(conn, ledger_sql.warm_up)
        in_transaction, prepared = await rig.db.run_on(conn, state)
        assert not in_transaction and prepared >= prepared_before + 2  # the read and the write
        [outcome] = await rig.db.run_on(conn, apply_batch, [Credit("topup-warm", cid, D("2"))])
    assert isinstance(outcome, LedgerResult) and outcome.balance == D("42.00")
    assert await ledger_rows(rig.db) == (before[0] + 1, before[1] + 1, before[2])


async def test_credit_writes_entry_with_before_and_after(rig: LedgerRig) -> None:
    cid = await new_client(rig.db)
    result = await rig.ledger.credit(cid, "500", key="topup-1", invoice_id="INV-1")
    assert result.balance == D("500.00")
    [entry] = result.entries
    assert (entry.type, entry.amount, entry.balance_before, entry.balance_after) == (
        "topup",
        D("500.00"),
        D("0.00"),
        D("500.00"),
    )
    rows = await rig.ledger.entries(cid)
    assert [(r["type"], r["amount"], r["invoice_id"]) for r in rows] == [
        ("topup", D("500.00"), "INV-1")
    ]
    assert await rig.ledger.balance(cid) == D("500.00")


async def test_replaying_a_key_returns_first_result_and_writes_nothing(rig: LedgerRig) -> None:
    cid = await new_client(rig.db)
    first = await rig.ledger.credit(cid, "100.25", key="k-1")
    before = await ledger_rows(rig.db)
    again = await rig.ledger.credit(cid, "100.25", key="k-1")
    assert again.replayed and not first.replayed
    assert (again.balance, again.entries) == (first.balance, first.entries)
    assert await ledger_rows(rig.db) == before
    assert await rig.ledger.balance(cid) == D("100.25")


async def test_key_reused_for_another_operation_is_refused(rig: LedgerRig) -> None:
    cid = await new_client(rig.db)
    await rig.ledger.credit(cid, "10", key="k-2")
    before = await ledger_rows(rig.db)
    with pytest.raises(Conflict) as info:
        await rig.ledger.credit(cid, "11", key="k-2")
    assert info.value.code == "idempotency_conflict"
    assert await ledger_rows(rig.db) == before


async def test_reserve_then_capture_refunds_the_rest(rig: LedgerRig) -> None:
    """Seed 001 §7, scenario 1: 500 → reserve 270 → 15 kWh × 13.5 = 202.50 → 297.50."""
    cid = await new_client(rig.db, "500", rig)
    hold = uuid.uuid4()
    reserved = await rig.ledger.reserve(cid, "270", key="r", hold_id=hold)
    assert reserved.balance == D("230.00")
    assert await rig.ledger.held(cid) == D("270.00")
    settled = await rig.ledger.capture(hold, "202.50", key="c")
    assert settled.balance == D("297.50")
    assert settled.refunded == D("67.50")
    assert await rig.ledger.held(cid) == D("0.00")
    types = [r["type"] for r in await rig.ledger.entries(cid)]
    assert types == ["charge_refund", "charge_reserve", "topup"]


async def test_capture_exactly_the_hold_writes_no_entry(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "500", rig)
    hold = uuid.uuid4()
    await rig.ledger.reserve(cid, "270", key="r", hold_id=hold)
    settled = await rig.ledger.capture(hold, "270", key="c")
    assert settled.entries == () and settled.balance == D("230.00")
    hold_row = await rig.db.fetchrow("SELECT status, captured_amount FROM holds WHERE id=$1", hold)
    assert hold_row == {"status": "captured", "captured_amount": D("270.00")}


async def test_overrun_is_charged_from_free_balance(rig: LedgerRig) -> None:
    """Seed 001 §7, scenario 2: 25 kWh instead of 20 → 67.50 more from the 230 left."""
    cid = await new_client(rig.db, "500", rig)
    hold = uuid.uuid4()
    await rig.ledger.reserve(cid, "270", key="r", hold_id=hold)
    settled = await rig.ledger.capture(hold, "337.50", key="c")
    assert (settled.balance, settled.charged, settled.debt) == (D("162.50"), D("67.50"), D("0"))


async def test_overrun_beyond_free_balance_becomes_debt(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "300", rig)
    hold = uuid.uuid4()
    await rig.ledger.reserve(cid, "270", key="r", hold_id=hold)
    settled = await rig.ledger.capture(hold, "350", key="c")
    assert settled.charged == D("30.00") and settled.debt == D("50.00")
    assert settled.balance == D("-50.00")
    assert [e.type for e in settled.entries] == ["charge_payment", "charge_debt"]
    assert await rig.ledger.discrepancies() == []
    # A top-up pays the debt off first.
    assert (await rig.ledger.credit(cid, "100", key="t")).balance == D("50.00")


async def test_release_gives_the_whole_hold_back(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "100", rig)
    hold = uuid.uuid4()
    await rig.ledger.reserve(cid, "40.50", key="r", hold_id=hold)
    released = await rig.ledger.release(hold, key="rel")
    assert released.balance == D("100.00") and released.refunded == D("40.50")
    with pytest.raises(Conflict) as info:
        await rig.ledger.capture(hold, "10", key="late-capture")
    assert info.value.code == "hold_already_settled"


async def test_adjust_debit_cannot_go_below_zero(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "20", rig)
    assert (await rig.ledger.adjust(cid, "-5.50", key="a1", reason="fix")).balance == D("14.50")
    before = await ledger_rows(rig.db)
    with pytest.raises(InsufficientBalance) as info:
        await rig.ledger.adjust(cid, "-15", key="a2", reason="too much")
    assert info.value.details == {"required_amount": D("15.00"), "current_balance": D("14.50")}
    assert await ledger_rows(rig.db) == before


async def test_reserve_more_than_balance_is_refused(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "50", rig)
    before = await ledger_rows(rig.db)
    with pytest.raises(InsufficientBalance) as info:
        await rig.ledger.reserve(cid, "270", key="r", hold_id=uuid.uuid4())
    assert info.value.code == "insufficient_balance"
    assert (info.value.required, info.value.available) == (D("270.00"), D("50.00"))
    assert await ledger_rows(rig.db) == before


@pytest.mark.parametrize("status", ["blocked", "pending_deletion"])
async def test_inactive_client_cannot_reserve_or_top_up(rig: LedgerRig, status: str) -> None:
    cid = await new_client(rig.db, "100", rig)
    await set_client_status(rig.db, cid, status)
    before = await ledger_rows(rig.db)
    with pytest.raises(Forbidden) as info:
        await rig.ledger.reserve(cid, "10", key="r", hold_id=uuid.uuid4())
    assert info.value.code == f"client_{status}"
    with pytest.raises(Forbidden):
        await rig.ledger.credit(cid, "10", key="t")
    assert await ledger_rows(rig.db) == before
    # An operator adjustment still works, so a blocked account can be settled.
    assert (await rig.ledger.credit(cid, "5", key="adj", entry_type="adjustment")).balance == 105


BAD_INPUT = [
    ("negative amount", lambda w, c: w.credit(c, "-10", key="x"), "validation_error"),
    ("zero amount", lambda w, c: w.credit(c, "0", key="x"), "validation_error"),
    (
        "zero reserve",
        lambda w, c: w.reserve(c, 0, key="x", hold_id=uuid.uuid4()),
        "validation_error",
    ),
    ("three decimals", lambda w, c: w.credit(c, "10.001", key="x"), "validation_error"),
    ("not a number", lambda w, c: w.credit(c, "ten", key="x"), "validation_error"),
    ("NaN", lambda w, c: w.credit(c, "NaN", key="x"), "validation_error"),
    ("too large", lambda w, c: w.credit(c, "1e12", key="x"), "validation_error"),
    ("float", lambda w, c: w.credit(c, 0.1 + 0.2, key="x"), "validation_error"),
    (
        "malformed client id",
        lambda w, c: w.credit("not-a-uuid", "10", key="x"),
        "invalid_client_id",
    ),
    ("empty key", lambda w, c: w.credit(c, "10", key=""), "validation_error"),
    ("key with #", lambda w, c: w.credit(c, "10", key="a#2"), "validation_error"),
    (
        "adjust without reason",
        lambda w, c: w.adjust(c, "10", key="x", reason=" "),
        "validation_error",
    ),
    ("negative cost", lambda w, c: w.capture(uuid.uuid4(), "-1", key="x"), "validation_error"),
    (
        "unknown client for debit",
        lambda w, c: w.reserve(uuid.uuid4(), "10", key="x", hold_id=uuid.uuid4()),
        "client_not_found",
    ),
    (
        "unknown client for adjustment",
        lambda w, c: w.adjust(uuid.uuid4(), "-1", key="x", reason="r"),
        "client_not_found",
    ),
    (
        "unknown client for credit",
        lambda w, c: w.credit(uuid.uuid4(), "1", key="x"),
        "client_not_found",
    ),
    ("unknown hold", lambda w, c: w.capture(uuid.uuid4(), "1", key="x"), "hold_not_found"),
]


@pytest.mark.parametrize(("case", "call", "code"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_is_refused_and_writes_nothing(
    rig: LedgerRig, case: str, call: object, code: str
) -> None:
    cid = await new_client(rig.db, "100", rig)
    before = await ledger_rows(rig.db)
    with pytest.raises(CpmsError) as info:
        await call(rig.ledger, cid)  # type: ignore[operator]
    assert info.value.code == code
    assert isinstance(info.value, InvalidRequest | NotFound)
    assert await ledger_rows(rig.db) == before
    assert await rig.ledger.balance(cid) == D("100.00")


async def test_reusing_a_hold_id_is_refused(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "100", rig)
    hold = uuid.uuid4()
    await rig.ledger.reserve(cid, "10", key="r1", hold_id=hold)
    with pytest.raises(Conflict) as info:
        await rig.ledger.reserve(cid, "10", key="r2", hold_id=hold)
    assert info.value.code == "hold_exists"


async def test_balance_of_unknown_client_is_not_found(rig: LedgerRig) -> None:
    with pytest.raises(NotFound) as info:
        await rig.ledger.balance(uuid.uuid4())
    assert info.value.code == "client_not_found"


def claim_for(
    client: uuid.UUID, amount: str, connector: int = 1
) -> tuple[SessionClaim, dict[str, Any]]:
    """A new session on CP-L's ``connector`` and the reserve arguments that go with it."""
    session, hold = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    claim = SessionClaim(
        session_id=session,
        client_id=client,
        station_id="CP-L",
        connector_id=connector,
        id_tag="APP-1",
        origin="app",
        limit=Limit("amount", D(amount)),
        tariff_id=None,
        rate=D("12.50"),
        session_fee=D("0"),
        start_deadline=now,
        max_deadline=now,
        reserved=D(amount),
        hold_id=hold,
    )
    args = {"key": f"session:{session}:reserve", "hold_id": hold, "session_id": session}
    return claim, args


async def sessions_on(db: Database) -> list[tuple[uuid.UUID, int, Decimal]]:
    rows = await db.fetch(
        "SELECT id, connector_id, reserved_amount FROM charging_sessions ORDER BY created_at"
    )
    return [(r["id"], r["connector_id"], r["reserved_amount"]) for r in rows]


async def test_a_claimed_reservation_writes_its_session_or_nothing(rig: LedgerRig) -> None:
    await create_station(rig.db, "CP-L", connectors_count=2)
    cid = await new_client(rig.db, "100", rig)
    first, args = claim_for(cid, "30")
    await rig.ledger.reserve(cid, "30", claim=first, **args)
    assert await sessions_on(rig.db) == [(first.session_id, 1, D("30.00"))]
    assert await rig.ledger.balance(cid) == D("70.00")
    # a replay after a crash comes without the claim and answers the first result
    again = await rig.ledger.reserve(cid, "30", **args)
    assert again.replayed and again.balance == D("70.00")
    assert (await rig.ledger.reserve(cid, "30", claim=first, **args)).replayed

    before = await ledger_rows(rig.db)
    taken, args = claim_for(cid, "20")  # connector 1 has an open session
    with pytest.raises(Conflict) as info:
        await rig.ledger.reserve(cid, "20", claim=taken, **args)
    assert info.value.code == "connector_occupied"
    broke, args = claim_for(cid, "500", connector=2)
    with pytest.raises(InsufficientBalance):
        await rig.ledger.reserve(cid, "500", claim=broke, **args)
    assert await ledger_rows(rig.db) == before  # no hold, no entry, no operation
    assert await sessions_on(rig.db) == [(first.session_id, 1, D("30.00"))]  # and no row
    assert await rig.ledger.balance(cid) == D("70.00")


async def test_claims_on_one_connector_in_one_batch_one_wins(rig: LedgerRig) -> None:
    await create_station(rig.db, "CP-L", connectors_count=2)
    cid = await new_client(rig.db, "100", rig)
    ops = []
    for amount in ("10", "20", "30"):
        claim, args = claim_for(cid, amount)
        ops.append(Reserve(args["key"], cid, D(amount), claim.hold_id, claim.session_id, claim))
    outcomes = await rig.db.run_with_connection(apply_batch, ops)
    assert isinstance(outcomes[0], LedgerResult) and outcomes[0].balance == D("90.00")
    assert [getattr(o, "code", None) for o in outcomes[1:]] == ["connector_occupied"] * 2
    assert await sessions_on(rig.db) == [(ops[0].session_id, 1, D("10.00"))]
    assert await rig.ledger.balance(cid) == D("90.00")


async def test_a_reservation_with_a_minimum_holds_what_the_balance_covers(rig: LedgerRig) -> None:
    """Seed 001 §6, no limit: min(balance, 200), at least 10, sized on the balance it writes; the
    claimed session's row is written with what was held."""
    await create_station(rig.db, "CP-L", connectors_count=2)
    cid = await new_client(rig.db, "57.35", rig)
    claim, args = claim_for(cid, "200")
    held = await rig.ledger.reserve(cid, "200", minimum="10", claim=claim, **args)
    assert (held.held, held.balance) == (D("57.35"), D("0.00"))
    assert await sessions_on(rig.db) == [(claim.session_id, 1, D("57.35"))]
    again = await rig.ledger.reserve(cid, "200", minimum="10", **args)  # a replay
    assert again.replayed and again.held == D("57.35")
    with pytest.raises(Conflict) as conflict:  # the same key for a fixed amount
        await rig.ledger.reserve(cid, "57.35", **args)
    assert conflict.value.code == "idempotency_conflict"

    await rig.ledger.credit(cid, "9.99", key=f"more-{cid}")
    before = await ledger_rows(rig.db)
    short, args = claim_for(cid, "200", connector=2)
    with pytest.raises(InsufficientBalance) as info:
        await rig.ledger.reserve(cid, "200", minimum="10", claim=short, **args)
    assert (info.value.required, info.value.available) == (D("10.00"), D("9.99"))
    assert await ledger_rows(rig.db) == before
    assert await sessions_on(rig.db) == [(claim.session_id, 1, D("57.35"))]

    await rig.ledger.credit(cid, "500", key=f"rich-{cid}")
    capped, args = claim_for(cid, "200", connector=2)
    result = await rig.ledger.reserve(cid, "200", minimum="10", claim=capped, **args)
    assert (result.held, result.balance) == (D("200.00"), D("309.99"))
    assert (await sessions_on(rig.db))[-1] == (capped.session_id, 2, D("200.00"))


async def test_a_minimum_above_the_amount_is_refused(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "100", rig)
    with pytest.raises(InvalidRequest):
        await rig.ledger.reserve(cid, "10", minimum="20", key="k", hold_id=uuid.uuid4())


@pytest.mark.parametrize("meanwhile", ["client blocked", "hold settled", "connector taken"])
async def test_a_batch_planned_on_rows_changed_meanwhile_writes_nothing(
    rig: LedgerRig, meanwhile: str
) -> None:
    """Another process's ledger (an operator's command) writes between a batch's read and its
    write: the write checks the rows it was planned on, writes nothing, and the batch is redone
    on fresh rows."""
    await create_station(rig.db, "CP-L", connectors_count=2)
    cid = await new_client(rig.db, "100", rig)
    held, args = claim_for(cid, "30")
    await rig.ledger.reserve(cid, "30", claim=held, **args)
    mine, my_args = claim_for(cid, "20", connector=2)
    op: LedgerOp = {
        "client blocked": Credit("topup-2", cid, D("5")),
        "hold settled": Release("release-mine", held.hold_id),
        "connector taken": Reserve(
            my_args["key"], cid, D("20"), mine.hold_id, mine.session_id, mine
        ),
    }[meanwhile]
    async with rig.db.connection() as conn:
        state = await rig.db.run_on(conn, ledger_sql._read, [op])
        read = {c: (s.balance, s.status) for c, s in state.clients.items()}
        plan = plan_batch([op], state)
        if meanwhile == "client blocked":
            await set_client_status(rig.db, cid, "blocked")
        elif meanwhile == "hold settled":
            await rig.ledger.release(held.hold_id, key="release-theirs")
        else:
            theirs, their_args = claim_for(cid, "10", connector=2)
            await rig.ledger.reserve(cid, "10", claim=theirs, **their_args)
        before = await ledger_rows(rig.db)
        with pytest.raises(asyncpg.SerializationError):
            await rig.db.run_on(conn, ledger_sql._write, plan, read)
        assert await ledger_rows(rig.db) == before
        [outcome] = await rig.db.run_on(conn, apply_batch, [op])
    assert (
        getattr(outcome, "code", None)
        == {
            "client blocked": "client_blocked",
            "hold settled": "hold_already_settled",
            "connector taken": "connector_occupied",
        }[meanwhile]
    )
    assert await ledger_rows(rig.db) == before
    assert not await rig.ledger.discrepancies()


class Trips:
    """A connection that counts its round trips (the ledger's statements are fetch and
    fetchval)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.trips = conn, 0

    async def fetch(self, sql: str, *args: object) -> Any:
        self.trips += 1
        return await self.conn.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> Any:
        self.trips += 1
        return await self.conn.fetchval(sql, *args)


async def test_a_batch_on_rows_the_ledger_knows_makes_one_round_trip(rig: LedgerRig) -> None:
    cid = await new_client(rig.db, "100", rig)
    cache, hold = LedgerCache(), uuid.uuid4()
    steps: list[tuple[LedgerOp, int]] = [
        (Reserve("r", cid, D("30"), hold), 2),  # the client is read first
        (Credit("t", cid, D("5")), 1),
        (Capture("c", hold, D("12.50")), 1),
        (Release("x", hold), 1),  # settled holds are not kept: read, refused, nothing written
        (Reserve("r2", cid, D("10"), uuid.uuid4()), 1),
        (Reserve("r3", cid, D("500"), uuid.uuid4()), 1),  # refused: confirmed on fresh rows
    ]
    outcomes = []
    async with rig.db.connection() as conn:
        trips = Trips(conn)
        for op, expected in steps:
            before = trips.trips
            outcomes += await rig.db.run_on(
                cast(asyncpg.Connection, trips), apply_batch, [op], cache
            )
            assert trips.trips - before == expected, op
    assert [getattr(o, "balance", None) for o in outcomes] == [
        D("70.00"),
        D("75.00"),
        D("92.50"),
        None,
        D("82.50"),
        None,
    ]
    assert getattr(outcomes[3], "code", None) == "hold_already_settled"
    assert isinstance(outcomes[5], InsufficientBalance)
    assert await rig.ledger.balance(cid) == D("82.50")
    assert not await rig.ledger.discrepancies()


@pytest.mark.parametrize(
    "elsewhere", ["credited", "blocked", "hold settled", "connector taken", "key used"]
)
async def test_a_batch_planned_on_what_the_ledger_knew_is_checked(
    rig: LedgerRig, elsewhere: str
) -> None:
    """Another process's ledger (the rig's own StorageActor here) or an operator changed the
    rows this ledger keeps: what it plans on them is checked by the write, a refusal on fresh
    rows, and the outcome is the one those rows give."""
    await create_station(rig.db, "CP-L", connectors_count=2)
    cid = await new_client(rig.db, "40", rig)
    cache = LedgerCache()
    held, args = claim_for(cid, "30")
    async with rig.db.connection() as conn:

        async def apply(op: LedgerOp) -> Any:
            [outcome] = await rig.db.run_on(conn, apply_batch, [op], cache)
            return outcome

        await apply(Reserve(args["key"], cid, D("30"), held.hold_id, held.session_id, held))
        mine, mine_args = claim_for(cid, "20", connector=2)
        op: LedgerOp = {
            "credited": Reserve("more", cid, D("50"), uuid.uuid4()),
            "blocked": Reserve("more", cid, D("5"), uuid.uuid4()),
            "hold settled": Capture("capture-mine", held.hold_id, D("10")),
            "connector taken": Reserve(
                mine_args["key"], cid, D("5"), mine.hold_id, mine.session_id, mine
            ),
            "key used": Credit("topup-k", cid, D("7")),
        }[elsewhere]
        assert cache.state([op]) is not None  # the rows it touches are known
        if elsewhere == "credited":
            await rig.ledger.credit(cid, "100", key="theirs")
        elif elsewhere == "blocked":
            await set_client_status(rig.db, cid, "blocked")
        elif elsewhere == "hold settled":
            await rig.ledger.release(held.hold_id, key="release-theirs")
        elif elsewhere == "connector taken":
            theirs, their_args = claim_for(cid, "5", connector=2)
            await rig.ledger.reserve(cid, "5", claim=theirs, **their_args)
        else:
            await rig.ledger.credit(cid, "7", key="topup-k")
        before = await ledger_rows(rig.db)
        outcome = await apply(op)
    if elsewhere == "credited":
        assert isinstance(outcome, LedgerResult) and outcome.balance == D("60.00")
    elif elsewhere == "key used":
        assert isinstance(outcome, LedgerResult) and outcome.replayed
        assert outcome.balance == D("17.00")
    else:
        assert (
            getattr(outcome, "code", None)
            == {
                "blocked": "client_blocked",
                "hold settled": "hold_already_settled",
                "connector taken": "connector_occupied",
            }[elsewhere]
        )
    if elsewhere != "credited":
        assert await ledger_rows(rig.db) == before
    assert not await rig.ledger.discrepancies()
