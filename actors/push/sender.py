"""The push sender: notifications queued without waiting, delivered by a few workers.

:meth:`PushSender.notify` never blocks: a full queue (``CPMS_PUSH_QUEUE``) drops the
notification (counted), so a session or a request never waits for a push service. Each worker
takes one notification, reads its recipient's subscriptions, encrypts the message for each on a
worker thread (RFC 8291) and POSTs it with the server's VAPID ``Authorization`` and ``TTL``
(``CPMS_PUSH_TTL``, 24 h). Outcomes:

* 2xx: delivered (the subscription's ``last_used_at`` moves);
* 404 / 410: the browser unsubscribed: the subscription is deleted;
* 429, 5xx, no answer within ``CPMS_PUSH_TIMEOUT``: tried again after 1 s, 2 s, ... (or the
  service's ``Retry-After``, up to a minute), ``CPMS_PUSH_MAX_RETRIES`` tries in all;
* another 4xx: given up (the service refuses this message; trying again would not help).

Endpoints are never logged whole (their path is the browser's capability): only their host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import structlog
import trio

from actors.push.texts import render
from actors.push.webpush import VapidKeys, encrypt
from cpms import metrics
from storage import Database, wallets
from storage import push as store
from storage.errors import StorageUnavailable

log = structlog.stdlib.get_logger("actors.push")

UserType = Literal["client", "owner"]
RETRY_AFTER_MAX_S = 60.0
#: how long a stopping server goes on sending what is queued
DRAIN_S = 5.0


@dataclass(frozen=True, slots=True)
class Push:
    """One notification for one user: ``user_id``, or the owner of ``station_id`` (looked up
    when it is sent). ``below``: sent only if the client's balance is then below it."""

    kind: str
    data: dict[str, Any]
    user_type: UserType = "client"
    user_id: UUID | None = None
    station_id: str | None = None
    tag: str | None = None
    below: Decimal | None = None


@dataclass(frozen=True)
class PushSettings:
    tries: int = 3
    backoff_s: float = 1.0
    ttl_s: int = 86_400
    timeout_s: float = 10.0
    queue: int = 10_000
    workers: int = 16


@dataclass
class PushCounts:
    delivered: int = 0
    gone: int = 0
    failed: int = 0
    dropped: int = 0


class PushSender:
    def __init__(
        self,
        db: Database,
        keys: VapidKeys | None,
        settings: PushSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db, self.keys = db, keys
        self.settings = settings or PushSettings()
        self.transport = transport
        self.counts = PushCounts()
        #: set (and made anew) whenever a delivery ends, however it ends: for whoever watches
        self.changed = trio.Event()
        self._send, self._receive = trio.open_memory_channel[Push](self.settings.queue)

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def notify(self, push: Push) -> bool:
        """Queue ``push``; False when it is dropped (push is off, or the queue is full)."""
        if self.keys is None:
            return False
        try:
            self._send.send_nowait(push)
        except trio.ClosedResourceError:  # the server is stopping
            return False
        except trio.WouldBlock:
            self.counts.dropped += 1
            metrics.PUSH_SENT.labels("dropped").inc()
            log.warning("push queue full: notification dropped", kind=push.kind)
            return False
        return True

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver until ``shutdown``; then what is queued, for at most :data:`DRAIN_S`."""
        timeout = httpx.Timeout(self.settings.timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, transport=self.transport) as http,
            trio.open_nursery() as workers,
        ):
            for _ in range(self.settings.workers):
                workers.start_soon(self._work, http)
            task_status.started()
            await shutdown.wait()
            self._send.close()  # the workers end with the queue
            workers.cancel_scope.deadline = trio.current_time() + DRAIN_S

    async def _work(self, http: httpx.AsyncClient) -> None:
        async for push in self._receive:
            try:
                await self._send_one(http, push)
            except StorageUnavailable as error:
                log.warning("push not sent: storage unavailable", kind=push.kind, error=str(error))
            except Exception:  # a notification that can't be made: never the server's end
                self.counts.failed += 1
                metrics.PUSH_SENT.labels("failed").inc()
                log.exception("push not sent", kind=push.kind)
                self._changed()

    async def _send_one(self, http: httpx.AsyncClient, push: Push) -> None:
        user_id = push.user_id
        if user_id is None and push.station_id is not None:
            user_id = await store.station_owner(self.db, push.station_id)
        if user_id is None:
            return
        data = push.data
        if push.below is not None:
            balance = await wallets.balance(self.db, user_id)
            if balance is None or balance >= push.below:
                return
            data = {**data, "balance": balance}
        for sub in await store.subscriptions_of(self.db, user_id, push.user_type):
            payload = render(push.kind, data, sub.language, push.tag)
            try:
                body = await trio.to_thread.run_sync(encrypt, payload, sub.p256dh, sub.auth)
            except ValueError:  # keys checked when subscribed: a row changed by hand
                await self._count(sub, "gone")
                continue
            await self._count(sub, await self._deliver(http, sub.endpoint, body))

    async def _deliver(self, http: httpx.AsyncClient, endpoint: str, body: bytes) -> str:
        """``delivered``, ``gone`` or ``failed``, after up to ``tries`` tries."""
        assert self.keys is not None
        host = urlsplit(endpoint).hostname
        wait = self.settings.backoff_s
        for attempt in range(1, self.settings.tries + 1):
            headers = {
                "Authorization": self.keys.authorization(endpoint),
                "TTL": str(self.settings.ttl_s),
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "Urgency": "normal",
            }
            retry_after: float | None = None
            try:
                reply = await http.post(endpoint, content=body, headers=headers)
            except httpx.HTTPError as error:
                log.info("push service unreachable", host=host, attempt=attempt, error=repr(error))
            else:
                status = reply.status_code
                if reply.is_success:
                    return "delivered"
                if status in (404, 410):
                    return "gone"
                if status != 429 and status < 500:
                    log.warning("push refused", host=host, status=status)
                    return "failed"
                log.info("push service busy", host=host, status=status, attempt=attempt)
                retry_after = _seconds(reply.headers.get("Retry-After"))
            if attempt < self.settings.tries:
                pause = wait if retry_after is None else min(retry_after, RETRY_AFTER_MAX_S)
                await trio.sleep(pause * random.uniform(1.0, 1.25))
                wait *= 2
        log.warning("push not delivered", host=host, tries=self.settings.tries)
        return "failed"

    async def _count(self, sub: store.Subscription, outcome: str) -> None:
        metrics.PUSH_SENT.labels(outcome).inc()
        if outcome == "delivered":
            self.counts.delivered += 1
            await store.delivered(self.db, sub.id)
        elif outcome == "gone":
            self.counts.gone += 1
            await store.forget(self.db, sub.id)
            log.info("push subscription removed", subscription=str(sub.id))
        else:
            self.counts.failed += 1
        self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: the doubling wait instead
    return seconds if 0 <= seconds < float("inf") else None
