"""What every request to the app passes through, before and after its handler: a request id,
CORS, the rate limits, the security headers, ``X-API-Version``, and one line in the request log.

* **Request id**: the client's ``X-Request-ID`` when it is a plain token of at most 64
  characters (letters, digits, ``-_.:``), else a new one; echoed in the answer and the log.
* **CORS** for the origins configured (``CPMS_CORS_ORIGINS``; never a wildcard, since the app
  sends credentials): an allowed origin is echoed with ``Access-Control-Allow-Credentials``, and
  its preflight answered 204 with the methods and headers the app uses; a preflight from
  another origin is 403 ``cors_origin_refused``, its other requests get no CORS headers (so the
  browser keeps their answers from the page). quart-cors was not used: it refuses WebSocket
  upgrades without an ``Origin`` (a native app's) and rebuilds its settings on every request.
* **Rate limits** (:mod:`api.rate_limit`): per client where the request's token proves one, per
  address otherwise; the critical calls (:data:`CRITICAL`) have their own, lower limit. Every
  limited answer carries ``X-RateLimit-Limit/Remaining/Reset``; a refused one is 429
  ``rate_limit_exceeded`` with ``Retry-After``. ``/health``, ``/metrics``, the OpenAPI
  document, CORS preflights and the admin API called with its token are not limited.
* **Language**: with ``Accept-Language``, an error's message is in English, Russian or Kyrgyz
  (:mod:`api.i18n`; the code unchanged), and the answer says ``Content-Language``.
* **Request log**: ``method``, ``route`` (the rule, ``/api/v1/charging/status/<session_id>``,
  not the path), ``status``, ``duration_ms``, ``client``, ``ip``, ``request_id``; never a
  header's or a body's content.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import time
import uuid

from quart import Quart, Response, current_app, g, request

from api.auth import TokenVerifier
from api.errors import error_response
from api.i18n import Language, language, translated
from api.jsonio import dumps
from api.rate_limit import Limit, RateLimiter, Verdict
from cpms import __version__
from cpms.kernel import jsontext
from cpms.kernel.errors import TooManyRequests, Unauthorized
from cpms.loglines import hot_line
from cpms.metrics import HTTP_DURATION, HTTP_REQUESTS

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: endpoints whose every call costs the driver money or a sign-in attempt
CRITICAL = frozenset(
    {
        "charging.start",
        "charging.stop",
        "payments.topup_qr",
        "payments.topup_card",
        "accounts.otp_request",
        "accounts.otp_verify",
        "accounts.register",
        "accounts.login",
        "accounts.refresh",
    }
)
UNLIMITED_BLUEPRINTS = frozenset({"health", "openapi", "metrics"})
UNLIMITED_ENDPOINTS = frozenset({"accounts.jwks"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-site",
}


CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID, Accept-Language"
CORS_EXPOSED = (
    "X-Request-ID, X-API-Version, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
    "X-RateLimit-Reset"
)
CORS_MAX_AGE = "600"


async def _translate(response: Response, lang: Language) -> None:
    """The error's message in ``lang`` (:mod:`api.i18n`); the code and fields unchanged."""
    try:
        body = jsontext.loads(await response.get_data(as_text=True), exact=True)
    except ValueError:
        return
    if isinstance(body, dict):
        response.set_data(dumps(translated(body, lang)))


class Protections:
    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        limits: tuple[Limit, Limit],
        admin_token: str | None,
        cors_origins: frozenset[str] = frozenset(),
    ) -> None:
        self.verifier, self.limiter, self.admin_token = verifier, limiter, admin_token
        self.default, self.critical = limits
        self.cors_origins = cors_origins
        #: every answer's own headers, the same each time
        self.constant = (("X-API-Version", __version__), *SECURITY_HEADERS.items())

    def install(self, app: Quart) -> None:
        app.before_request(self.before)
        app.after_request(self.after)

    async def before(self) -> Response | None:
        g.began = time.perf_counter()
        sent = request.headers.get("X-Request-ID", "")
        g.request_id = sent if REQUEST_ID.match(sent) else uuid.uuid4().hex
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight()
        g.client = g.owner = None
        authorization = request.headers.get("Authorization")
        if request.blueprint == "admin":
            g.owner = "admin" if self._admin() else None
        elif authorization:
            with contextlib.suppress(Unauthorized):  # the handler refuses it; limited by address
                g.client = str(await self.verifier.client_id(authorization))
                g.owner = f"client:{g.client}"
        limit = self._limit()
        if limit is None:
            return None
        key = f"client:{g.client}" if g.client else f"ip:{request.remote_addr}"
        verdict = await self.limiter.hit(limit, key)
        g.rate = verdict
        if not verdict.allowed:
            raise TooManyRequests(verdict.retry_after)
        return None

    def _preflight(self) -> Response:
        origin = request.headers.get("Origin", "")
        if origin not in self.cors_origins:
            return error_response(
                "cors_origin_refused", f"cross-origin requests from {origin!r} are not allowed", 403
            )
        response = current_app.response_class("", status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response

    def _limit(self) -> Limit | None:
        if request.method == "OPTIONS" or request.blueprint in UNLIMITED_BLUEPRINTS:
            return None
        if request.endpoint in UNLIMITED_ENDPOINTS:
            return None
        if g.owner == "admin":
            return None
        return self.critical if request.endpoint in CRITICAL else self.default

    def _admin(self) -> bool:
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {self.admin_token}"
        return self.admin_token is not None and hmac.compare_digest(sent, expected)

    async def after(self, response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        present = response.headers
        fields = [("X-Request-ID", request_id), *self.constant]
        if "Authorization" in request.headers and "Cache-Control" not in present:
            fields.append(("Cache-Control", "no-store"))
        if self.cors_origins:
            fields.append(("Vary", "Origin"))
            origin = request.headers.get("Origin")
            if origin in self.cors_origins:
                fields += [
                    ("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"),
                    ("Access-Control-Expose-Headers", CORS_EXPOSED),
                ]
        verdict: Verdict | None = g.get("rate")
        if verdict is not None and verdict.limit:
            fields += [
                ("X-RateLimit-Limit", str(verdict.limit)),
                ("X-RateLimit-Remaining", str(verdict.remaining)),
                ("X-RateLimit-Reset", str(verdict.reset_at)),
            ]
            if not verdict.allowed and "Retry-After" not in present:
                fields.append(("Retry-After", str(verdict.retry_after)))
        accept = request.headers.get("Accept-Language")
        if accept is not None:
            lang = language(accept)
            fields += [("Content-Language", lang), ("Vary", "Accept-Language")]
            if response.status_code >= 400 and response.mimetype == "application/json":
                await _translate(response, lang)
        for name, value in fields:  # added, not set: set and setdefault scan every header
            present.add(name, value)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        took = time.perf_counter() - g.get("began", time.perf_counter())
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, route).observe(took)
        hot_line(
            "api.request",
            "request",
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round(took * 1e3, 2),
            client=g.get("client"),
            ip=request.remote_addr,
            request_id=request_id,
        )
        return response
