"""Station passwords at the OCPP door: the slow scrypt check once, then a verifier (an HMAC keyed
from CPMS_AUTH_SIGNING_KEY) that a restarted server checks instead, so a fleet with passwords is
not held up behind one scrypt per charger; a wrong password, another key or a new password never
pass on a verifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.charge_point import passwords as door
from actors.charge_point.passwords import StationPasswords, station_verifier, verifier_key
from actors.provisioning import StationPatch, update_station
from storage import Database
from storage import stations as store
from tests.ocpp_client import connect
from tests.ocpp_server import PASSWORD, provision, start_server

PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)
BOOT = {"chargePointVendor": "ACME", "chargePointModel": "Fast-120"}


async def _record(db: Database, station: str) -> tuple[str, str | None]:
    row = await store.get_station(db, station)
    assert row is not None
    return row["password_hash"], row["password_verifier"]


async def test_a_password_is_checked_slowly_once_then_by_its_verifier(
    db: Database, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    await provision(db, "CP-1")
    stored, kept = await _record(db, "CP-1")
    assert kept is None
    key = verifier_key(PEM.encode())
    checks = StationPasswords(db, key)
    nursery.start_soon(checks.keep)
    assert await checks.check("CP-1", PASSWORD, stored, None, "10.0.0.1")
    assert await checks.check("CP-1", PASSWORD, stored, None, "10.0.0.1")  # remembered here
    assert checks.slow_checks == 1
    await trio.sleep(door.KEEP_EVERY * 2)  # written in the next batch
    _, kept = await _record(db, "CP-1")
    assert kept == station_verifier(key, "CP-1", stored, PASSWORD)

    restarted = StationPasswords(db, verifier_key(PEM.encode()))  # the same secret
    assert await restarted.check("CP-1", PASSWORD, stored, kept, "10.0.0.1")
    assert restarted.slow_checks == 0
    assert not await restarted.check("CP-1", "wrong-pass", stored, kept, "10.0.0.1")
    assert restarted.slow_checks == 1  # a wrong password is always checked the slow way

    other_key = StationPasswords(db, verifier_key(None))  # no signing key: made at start
    assert await other_key.check("CP-1", PASSWORD, stored, kept, "10.0.0.1")
    assert other_key.slow_checks == 1


async def test_a_new_password_clears_the_verifier_and_the_old_one_fails(db: Database) -> None:
    await provision(db, "CP-1")
    stored, _ = await _record(db, "CP-1")
    checks = StationPasswords(db, verifier_key(PEM.encode()))
    old = checks.verifier("CP-1", stored, PASSWORD)
    await store.remember_verifiers(db, [("CP-1", stored, old)])
    assert (await _record(db, "CP-1"))[1] == old

    await update_station(db, "CP-1", StationPatch(password="n3w-secret-pass"))
    new_stored, kept = await _record(db, "CP-1")
    assert kept is None
    await store.remember_verifiers(db, [("CP-1", stored, old)])  # late, for the old hash
    assert (await _record(db, "CP-1"))[1] is None  # not written over the new password
    fresh = StationPasswords(db, checks.key)
    assert not await fresh.check("CP-1", PASSWORD, new_stored, old, "10.0.0.1")
    assert await fresh.check("CP-1", "n3w-secret-pass", new_stored, None, "10.0.0.1")


async def test_repeated_failures_are_throttled_but_a_known_charger_gets_in(db: Database) -> None:
    await provision(db, "CP-1")
    stored, _ = await _record(db, "CP-1")
    checks = StationPasswords(db, verifier_key(None), door.LoginThrottle(limit=2, window=60))
    kept = checks.verifier("CP-1", stored, PASSWORD)
    for _ in range(2):
        assert not await checks.check("CP-1", "guess-guess", stored, kept, "10.6.6.6")
    with pytest.raises(door.Throttled):
        await checks.check("CP-1", "guess-again", stored, kept, "10.6.6.6")
    assert await checks.check("CP-1", PASSWORD, stored, kept, "10.0.0.1")  # by its verifier


async def test_a_restarted_server_lets_known_chargers_in_without_scrypt(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first server checks each password once and writes its verifier; the next one (the
    same CPMS_AUTH_SIGNING_KEY) reads them with the stations and never runs scrypt."""
    for station in ("CP-1", "CP-2"):
        await provision(db, station)
    first, stop = await start_server(nursery, dsn, tmp_path / "a", auth_signing_key=PEM)
    for station in ("CP-1", "CP-2"):
        async with connect(first.ocpp_url, station, PASSWORD) as charger:
            assert (await charger.call("BootNotification", BOOT))["status"] == "Accepted"
    with trio.fail_after(30):
        while any([(await _record(db, s))[1] is None for s in ("CP-1", "CP-2")]):  # noqa: ASYNC110 - the server's batch, seen in the database
            await trio.sleep(0.05)
    stop.set()

    def no_scrypt(password: str, stored: str) -> bool:
        raise AssertionError("a known charger's password was checked with scrypt")

    monkeypatch.setattr(door, "verify_password", no_scrypt)
    second, _ = await start_server(nursery, dsn, tmp_path / "b", auth_signing_key=PEM)
    for station in ("CP-1", "CP-2"):
        async with connect(second.ocpp_url, station, PASSWORD) as charger:
            assert (await charger.call("BootNotification", BOOT))["status"] == "Accepted"
