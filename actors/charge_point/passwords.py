"""Station passwords at the OCPP door (security profiles 1 and 2: HTTP Basic): checked fast when
they were checked before, even across a restart, and slow (scrypt) only the first time.

A stored password hash is scrypt, 56 ms a check on purpose. A node restarted under 10,000
chargers with passwords would spend nine minutes on them, one at a time, before the last charger
got in. So a password once accepted leaves a *verifier*: an HMAC-SHA256, keyed with a secret
derived from ``CPMS_AUTH_SIGNING_KEY``, of the station, its stored hash and the password. It is
written to the station's record (in batches, never awaited by a connection) and read with the
record: the next check, in this process or the next, is one HMAC. It proves nothing without the
key (a copy of the database can't be guessed against any faster than the scrypt hashes), binds
the stored hash (a new password makes it worthless) and is cleared with it. Without
``CPMS_AUTH_SIGNING_KEY`` the key is made at start, and each restart costs one scrypt per station
again (as tokens then don't outlive a restart either).

Wrong passwords are counted per station and per address (:class:`LoginThrottle`); past the limit
a password that would need the slow check is refused (429) until the window has passed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets

import structlog
import trio

from cpms.kernel.passwords import verify_password
from storage import Database
from storage import stations as store
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("cpms.ocpp")

#: seconds between writes of new verifiers
KEEP_EVERY = 1.0


def verifier_key(signing_key: bytes | None) -> bytes:
    """The verifiers' HMAC key: derived from the token signing key (the same secret lasts as
    long), or made now when there is none."""
    if signing_key is None:
        return secrets.token_bytes(32)
    return hashlib.sha256(b"cpms station password verifier\0" + signing_key).digest()


def station_verifier(key: bytes, station_id: str, stored: str, password: str) -> str:
    """The verifier of ``password`` for the station whose record holds hash ``stored``."""
    message = b"\0".join(part.encode() for part in (station_id, stored, password))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class LoginThrottle:
    """Failed station logins, counted per station and per address: past ``limit`` failures
    within ``window`` seconds for either, a password that would need checking is refused (429)
    until the window has passed. Each check is a deliberately slow scrypt; unthrottled, sixty
    wrong guesses delayed a bystander's heartbeat by half a second. A charger whose password
    was accepted before is let in all the same (its check is fast), so an attacker can't lock a
    station out."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, *keys: str) -> float:
        """Seconds until attempts for ``keys`` are checked again (0: now)."""
        now, wait = trio.current_time(), 0.0
        for key in keys:
            times = self._failures.get(key)
            while times and now - times[0] > self.window:
                times.popleft()
            if times is not None and len(times) >= self.limit:
                wait = max(wait, times[0] + self.window - now)
        return wait

    def failed(self, *keys: str) -> None:
        if len(self._failures) > 100_000:  # bounded: forget what has aged out
            now = trio.current_time()
            self._failures = {
                k: t for k, t in self._failures.items() if t and now - t[-1] <= self.window
            }
        for key in keys:
            self._failures.setdefault(key, collections.deque()).append(trio.current_time())


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class StationPasswords:
    """The door's password checks, and the verifiers they leave."""

    def __init__(self, db: Database, key: bytes, throttle: LoginThrottle | None = None) -> None:
        self.db, self.key = db, key
        self.throttle = throttle or LoginThrottle()
        #: one slow check at a time: a flood of guesses can't take every core
        self.hashing = trio.CapacityLimiter(1)
        self.slow_checks = 0
        #: station → the verifier of its password as accepted in this process (its record's
        #: may be older, or not written yet)
        self._known: dict[str, str] = {}
        self._unsaved: dict[str, tuple[str, str]] = {}  # station → (stored hash, verifier)
        self._wake = trio.Event()

    def verifier(self, station_id: str, stored: str, password: str) -> str:
        return station_verifier(self.key, station_id, stored, password)

    async def check(
        self, station_id: str, password: str, stored: str, verifier: str | None, remote: str
    ) -> bool:
        """Whether ``password`` is the station's (``stored``: its hash; ``verifier``: the one
        its record holds, if any).

        Raises:
            Throttled: too many failures for this station or from ``remote`` lately, and this
                password would need the slow check.
        """
        mine = self.verifier(station_id, stored, password)
        for known in (self._known.get(station_id), verifier):
            if known is not None and hmac.compare_digest(known, mine):
                return True
        keys = (f"station:{station_id}", f"ip:{remote}")
        wait = self.throttle.retry_after(*keys)
        if wait:
            raise Throttled(wait)
        self.slow_checks += 1
        if not await trio.to_thread.run_sync(
            verify_password, password, stored, limiter=self.hashing
        ):
            self.throttle.failed(*keys)
            return False
        self._known[station_id] = mine
        self._unsaved[station_id] = (stored, mine)
        self._wake.set()
        return True

    async def keep(self) -> None:
        """Write new verifiers to their stations' records, a batch each :data:`KEEP_EVERY`
        seconds, until cancelled (then what is left, for two seconds at most)."""
        try:
            while True:
                await self._wake.wait()
                await trio.sleep(KEEP_EVERY)
                await self._write()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self._write()

    async def _write(self) -> None:
        self._wake = trio.Event()
        rows, self._unsaved = self._unsaved, {}
        if not rows:
            return
        try:
            await store.remember_verifiers(
                self.db, [(station, *kept) for station, kept in rows.items()]
            )
        except StorageUnavailable:  # kept for the next round (a newer one wins)
            self._unsaved = rows | self._unsaved
            self._wake.set()
            log.warning("station password verifiers not written: the database is away")
