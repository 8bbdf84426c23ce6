"""``Idempotency-Key`` on every POST, PATCH and DELETE of a client (or of the operator with the
admin token): a retry after a lost answer gets that answer again instead of a second start or
top-up.

* The same key with the same request (method, path, query and body, by SHA-256) within 24 hours
  replays the answer kept for it: its status and body, marked ``Idempotent-Replayed: true``.
* The same key with another request is 422 ``idempotency_conflict``.
* The same key while its first request is still being answered is 409 ``request_in_progress``.
* A key is 1–255 visible ASCII characters (else 400 ``invalid_idempotency_key``); keys are each
  client's own. An answer of 5xx is not kept (the retry is tried afresh), nor is a refusal made
  before the handler ran (401, 429).

The answers are kept in the database (``storage/idempotency.py``), so a retry after a restart
is answered too, but not on the request's way: an answer is held in memory and written behind
it, in batches (:meth:`Idempotency.write_behind`; one round trip each 50 ms at most), and the
keys kept in the last 24 hours are known in memory (loaded at start), so a new key, the common
case, costs no database round trip at all. A retry of a key answered before the restart is
looked up. Answers older than 24 hours are deleted once an hour.

Known limit: an answer not yet written when the server is killed (the last 50 ms) is lost, so
its retry is done again (a start then answers ``connector_occupied``); the keys are known to
this node only (a cluster would share them, as the rate limits, in Redis).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time

import structlog
import trio
from quart import Quart, Response, current_app, g

from api.protect import bound
from cpms.kernel.errors import Conflict, InvalidRequest, Unprocessable
from storage import Database
from storage.errors import StorageUnavailable
from storage.idempotency import (
    StoredAnswer,
    find_answer,
    forget_expired_answers,
    keep_answer,
    keep_answers,
    kept_keys,
)

log = structlog.stdlib.get_logger("api.idempotency")

KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
CHANGING = frozenset({"POST", "PATCH", "DELETE"})
FLUSH_S = 0.05  # an answer waits at most this long to be written
RETRY_S = 1.0  # after a failed write
PURGE_EVERY_S = 3600.0
KEPT_S = 24 * 3600.0
RECENT_S = 600.0  # answers stay in memory this long after they are written

Slot = tuple[str, str]  # owner, key


class Idempotency:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.in_flight: set[Slot] = set()
        #: answers given lately, by the time they were given (replayed from here)
        self.recent: dict[Slot, tuple[float, StoredAnswer]] = {}
        #: keys with an answer in the database → when (None until :meth:`load`: ask it each time)
        self.kept: dict[Slot, float] | None = None
        self.pending: list[tuple[Slot, StoredAnswer]] = []
        self.writing = False  # a write_behind task runs: answers are queued, not written inline
        self._wake = trio.Event()

    async def load(self) -> None:
        """Learn the keys kept in the last 24 hours (at start, before serving)."""
        self.kept = {(o, k): at.timestamp() for o, k, at in await kept_keys(self.db)}

    def install(self, app: Quart) -> None:
        """After :class:`api.protect.Protections` (it says whose request this is)."""
        app.before_request(self.before)
        app.after_request(self.after)
        app.teardown_request(self.teardown)

    async def before(self) -> Response | None:
        req, here = bound()
        key = req.headers.get("Idempotency-Key")
        owner = here.get("owner")
        if key is None or owner is None or req.method not in CHANGING:
            return None
        if not KEY.match(key):
            raise InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                code="invalid_idempotency_key",
            )
        slot = (owner, key)
        if slot in self.in_flight:
            raise Conflict(
                "a request with this Idempotency-Key is still being answered; retry shortly",
                code="request_in_progress",
            )
        self.in_flight.add(slot)
        here.idempotency_slot = slot
        body = await req.get_data(as_text=False)  # kept for the handler
        assert isinstance(body, bytes)
        target = req.full_path.rstrip("?").encode()
        fingerprint = hashlib.sha256(req.method.encode() + b" " + target + b"\n" + body)
        stored = await self._answered(slot)
        if stored is None:
            here.idempotency_fingerprint = fingerprint.digest()
            return None
        if stored.fingerprint != fingerprint.digest():
            raise Unprocessable(
                "this Idempotency-Key was used with another request",
                code="idempotency_conflict",
            )
        replay = current_app.response_class(
            stored.body, status=stored.status, content_type=stored.media_type
        )
        replay.headers["Idempotent-Replayed"] = "true"
        return replay

    async def _answered(self, slot: Slot) -> StoredAnswer | None:
        lately = self.recent.get(slot)
        if lately is not None:
            return lately[1]
        if self.kept is not None and slot not in self.kept:
            return None  # a new key: no answer anywhere
        return await find_answer(self.db, *slot)

    async def after(self, response: Response) -> Response:
        here = bound()[1]
        fingerprint = here.get("idempotency_fingerprint")
        if fingerprint is None or response.status_code >= 500:
            return response
        slot: Slot = here.idempotency_slot
        answer = StoredAnswer(
            fingerprint,
            response.status_code,
            await response.get_data(as_text=False),
            response.mimetype or "application/json",
        )
        self.recent[slot] = (time.time(), answer)
        if self.writing:
            self.pending.append((slot, answer))
            self._wake.set()
            return response
        try:  # no writer (an app made without the server): written now
            await keep_answer(self.db, *slot, answer)
            self._written([slot])
        except StorageUnavailable as error:  # the answer stands; a retry is replayed from memory
            log.warning("an idempotent answer could not be kept", error=str(error))
        return response

    async def teardown(self, _error: BaseException | None) -> None:
        slot = g.get("idempotency_slot")
        if slot is not None:
            self.in_flight.discard(slot)

    async def write_behind(self, shutdown: trio.Event) -> None:
        """Write the answers given, in batches, until ``shutdown``; then :meth:`flush` is the
        server's to call once no request is left."""
        self.writing = True
        purged_at = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._wake_at, shutdown)
            while not shutdown.is_set():
                with trio.move_on_after(PURGE_EVERY_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                with trio.move_on_after(FLUSH_S):  # let a burst gather
                    await shutdown.wait()
                if not await self.flush():
                    with trio.move_on_after(RETRY_S):
                        await shutdown.wait()
                if time.monotonic() - purged_at > PURGE_EVERY_S:
                    purged_at = time.monotonic()
                    with contextlib.suppress(StorageUnavailable):
                        await forget_expired_answers(self.db)
                    self._prune()
            nursery.cancel_scope.cancel()

    async def _wake_at(self, shutdown: trio.Event) -> None:
        await shutdown.wait()
        self._wake.set()

    async def flush(self) -> bool:
        """Write what waits; False when the database could not take it (kept for next time)."""
        batch, self.pending = self.pending, []
        if not batch:
            return True
        try:
            await keep_answers(self.db, [(o, k, a) for (o, k), a in batch])
        except StorageUnavailable as error:
            self.pending = batch + self.pending
            log.warning("idempotent answers not written yet", error=str(error))
            return False
        self._written([slot for slot, _ in batch])
        return True

    def _written(self, slots: list[Slot]) -> None:
        if self.kept is not None:
            now = time.time()
            self.kept.update(dict.fromkeys(slots, now))

    def _prune(self) -> None:
        now = time.time()
        waiting = {slot for slot, _ in self.pending}
        self.recent = {
            s: v for s, v in self.recent.items() if now - v[0] < RECENT_S or s in waiting
        }
        if self.kept is not None:
            self.kept = {s: at for s, at in self.kept.items() if now - at < KEPT_S}
