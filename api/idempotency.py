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
is answered too; answers older than 24 hours are deleted once an hour. Known limit: a request
whose server was killed after the handler acted but before its answer was kept is done again on
retry (the start of a session then answers ``connector_occupied``).
"""

from __future__ import annotations

import hashlib
import re
import time

import structlog
from quart import Quart, Response, current_app, g, request

from cpms.kernel.errors import Conflict, InvalidRequest, Unprocessable
from storage import Database
from storage.errors import StorageUnavailable
from storage.idempotency import StoredAnswer, find_answer, forget_expired_answers, keep_answer

log = structlog.stdlib.get_logger("api.idempotency")

KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
CHANGING = frozenset({"POST", "PATCH", "DELETE"})
PURGE_EVERY_S = 3600.0


class Idempotency:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.in_flight: set[tuple[str, str]] = set()
        self._purged_at = time.monotonic()

    def install(self, app: Quart) -> None:
        """After :class:`api.protect.Protections` (it says whose request this is)."""
        app.before_request(self.before)
        app.after_request(self.after)
        app.teardown_request(self.teardown)

    async def before(self) -> Response | None:
        key = request.headers.get("Idempotency-Key")
        owner = g.get("owner")
        if key is None or owner is None or request.method not in CHANGING:
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
        g.idempotency_slot = slot
        body = await request.get_data(as_text=False)  # kept for the handler
        assert isinstance(body, bytes)
        target = request.full_path.rstrip("?").encode()
        fingerprint = hashlib.sha256(request.method.encode() + b" " + target + b"\n" + body)
        stored = await find_answer(self.db, owner, key)
        if stored is None:
            g.idempotency_fingerprint = fingerprint.digest()
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

    async def after(self, response: Response) -> Response:
        fingerprint = g.get("idempotency_fingerprint")
        if fingerprint is None or response.status_code >= 500:
            return response
        owner, key = g.idempotency_slot
        answer = StoredAnswer(
            fingerprint,
            response.status_code,
            await response.get_data(as_text=False),
            response.mimetype or "application/json",
        )
        try:
            await keep_answer(self.db, owner, key, answer)
            if time.monotonic() - self._purged_at > PURGE_EVERY_S:
                self._purged_at = time.monotonic()
                await forget_expired_answers(self.db)
        except StorageUnavailable as error:  # the answer stands; only a retry's replay is lost
            log.warning("an idempotent answer could not be kept", error=str(error))
        return response

    async def teardown(self, _error: BaseException | None) -> None:
        slot = g.get("idempotency_slot")
        if slot is not None:
            self.in_flight.discard(slot)
