"""The three checks every provider webhook passes before anything is read from it: it comes from
an allowed address, its timestamp is within five minutes of now, and its signature
(``X-Webhook-Signature``: hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with the shared secret,
compared in constant time) is right; and a fourth: a signature already acted on is a replay."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from cpms.kernel.errors import Conflict, Forbidden, Unauthorized
from cpms.kernel.payments import webhook_signature as sign

WINDOW_S = 300


class WebhookGuard:
    """``secret`` None: webhooks are refused (none configured)."""

    def __init__(
        self,
        secret: str | None,
        allowed: frozenset[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret, self.allowed, self.clock = secret, allowed, clock
        self._seen: dict[str, float] = {}

    def check(
        self, remote: str | None, timestamp: str | None, signature: str | None, body: bytes
    ) -> None:
        """Raises:
        Forbidden: not configured, or from an address not allowed (403).
        Unauthorized: no timestamp, one outside the window, or a wrong signature (401).
        Conflict: ``webhook_replayed``, a signature already acted on (409).
        """
        if self.secret is None:
            raise Forbidden("payment webhooks are not configured", code="webhook_disabled")
        if remote not in self.allowed:
            raise Forbidden(f"webhooks are not accepted from {remote}", code="forbidden_source")
        now = self.clock()
        try:
            at = float(timestamp or "")
        except ValueError:
            at = float("nan")
        if not abs(now - at) <= WINDOW_S:  # a NaN fails too
            raise Unauthorized("the webhook's timestamp is missing or stale", code="stale_webhook")
        expected = sign(self.secret, timestamp or "", body)
        if not hmac.compare_digest(expected, signature or ""):
            raise Unauthorized("the webhook's signature is wrong", code="invalid_signature")
        self._forget(now)
        if expected in self._seen:
            raise Conflict("this webhook was already acted on", code="webhook_replayed")

    def accepted(self, signature: str | None) -> None:
        """The webhook was acted on: the same one again is a replay (within the window)."""
        if signature:
            self._seen[signature] = self.clock()

    def _forget(self, now: float) -> None:
        if len(self._seen) > 10_000:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= WINDOW_S}
