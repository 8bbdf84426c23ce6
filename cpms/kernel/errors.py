"""The domain error tree: every refusal a user can get, with the error code the app knows.

Each error carries ``code`` (the string the mobile app switches on: a stable snake_case name such
as ``insufficient_balance`` or ``station_offline``, never changed once shipped),
a human ``message`` and optional ``details`` that the REST layer adds to the JSON body
(``required_amount``/``current_balance`` for ``insufficient_balance``). ``api/errors.py`` is the one
place that turns these into HTTP status codes; actors and storage raise them and never format
responses themselves.

    CpmsError
    ├── InvalidRequest          invalid_request / validation_error (bad input, nothing changed)
    ├── NotFound                client_not_found, station_not_found, session_not_found, ...
    ├── Conflict                connector_occupied, session_already_active, idempotency_conflict
    ├── Forbidden               access_denied, client_blocked, client_pending_deletion
    ├── InsufficientBalance     insufficient_balance
    └── Unavailable             station_offline, timeout, internal_error, ...
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class CpmsError(Exception):
    """Base of every domain refusal."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidRequest(CpmsError):
    """The request itself is wrong: a bad amount, a malformed id, a missing field."""

    code = "invalid_request"


class NotFound(CpmsError):
    """The thing named does not exist."""

    code = "not_found"


class Conflict(CpmsError):
    """The request clashes with the current state or with an earlier request."""

    code = "conflict"


class Unauthorized(CpmsError):
    """No valid credentials (HTTP 401)."""

    code = "unauthorized"


class Forbidden(CpmsError):
    """The caller may not do this."""

    code = "access_denied"


class PaymentRefused(CpmsError):
    """The payment provider declined a top-up (``insufficient_funds``, ``card_blocked``,
    ``payment_declined``): nothing was taken, nothing credited."""

    code = "payment_declined"


class InsufficientBalance(CpmsError):
    """The wallet can't cover the amount asked for."""

    code = "insufficient_balance"

    def __init__(self, required: Decimal, available: Decimal) -> None:
        super().__init__(
            f"insufficient balance: {available} som, {required} som needed",
            required_amount=required,
            current_balance=available,
        )
        self.required = required
        self.available = available


class Unprocessable(CpmsError):
    """Well formed, but can't be done as sent (HTTP 422): an ``Idempotency-Key`` used before
    with another request."""

    code = "unprocessable"


class TooManyRequests(CpmsError):
    """Over a rate limit: try again in ``retry_after`` seconds (HTTP 429)."""

    code = "rate_limit_exceeded"

    def __init__(self, retry_after: int, *, code: str | None = None) -> None:
        super().__init__(
            f"too many requests; try again in {retry_after} s",
            code=code,
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class Unavailable(CpmsError):
    """A part of the system needed for this request can't answer now."""

    code = "internal_error"
