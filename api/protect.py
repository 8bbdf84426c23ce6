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
import itertools
import re
import secrets
import time

from quart import Quart, Request, Response, current_app, g, request
from quart.ctx import _AppCtxGlobals

from api.asgi import ASGIApp, Message, Receive, Scope, Send
from api.auth import TokenVerifier, bearer
from api.errors import error_response
from api.i18n import Language, language, translated
from api.jsonio import dumps
from api.rate_limit import Limit, RateLimiter, Verdict
from cpms import __version__
from cpms.kernel import jsontext
from cpms.kernel.errors import TooManyRequests, Unauthorized
from cpms.loglines import hot_line
from cpms.metrics import count_request

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: a new request's id: this process's random prefix and a counter (unique, and cheaper than
#: a UUID on every request)
_PREFIX = secrets.token_hex(6)
_SEQUENCE = itertools.count(1)


def bound() -> tuple[Request, _AppCtxGlobals]:
    """The request and ``g`` themselves, not their proxies (each pass through a proxy costs a
    context lookup; a hook that reads them a dozen times binds them once)."""
    return request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_SEQUENCE):x}"


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
        "owners.login",
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
CORS_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, X-Request-ID, Accept-Language, X-Auth-Mode, "
    "X-CSRF-Token"
)
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

    def install(self, app: Quart) -> None:
        app.before_request(self.before)
        app.after_request(self.after)
        constant = {"X-API-Version": __version__, **SECURITY_HEADERS}
        app.asgi_app = ConstantHeaders(app.asgi_app, constant)  # type: ignore[method-assign, assignment]

    async def before(self) -> Response | None:
        req, here = bound()
        here.began = time.perf_counter()
        headers = req.headers
        sent = headers.get("X-Request-ID", "")
        here.request_id = sent if REQUEST_ID.match(sent) else new_request_id()
        if req.method == "OPTIONS" and "Access-Control-Request-Method" in headers:
            return self._preflight()
        here.client = here.owner = None
        authorization = headers.get("Authorization")
        if req.blueprint == "admin":
            here.owner = "admin" if self._admin() else None
        elif authorization:
            with contextlib.suppress(Unauthorized):  # the handler refuses it; limited by address
                proof = await self.verifier.subject(bearer(authorization))
                here.client = str(proof.subject)
                here.owner = f"{proof.role}:{here.client}"
        limit = self._limit(req.method, req.blueprint, req.endpoint, here.owner)
        if limit is None:
            return None
        key = f"client:{here.client}" if here.client else f"ip:{req.remote_addr}"
        verdict = await self.limiter.hit(limit, key)
        here.rate = verdict
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

    def _limit(
        self, method: str, blueprint: str | None, endpoint: str | None, owner: str | None
    ) -> Limit | None:
        if method == "OPTIONS" or blueprint in UNLIMITED_BLUEPRINTS:
            return None
        if endpoint in UNLIMITED_ENDPOINTS or owner == "admin":
            return None
        return self.critical if endpoint in CRITICAL else self.default

    def _admin(self) -> bool:
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {self.admin_token}"
        return self.admin_token is not None and hmac.compare_digest(sent, expected)

    async def after(self, response: Response) -> Response:
        req, here = bound()
        headers = req.headers
        request_id = here.get("request_id") or new_request_id()
        present = response.headers
        fields = [("X-Request-ID", request_id)]
        if "Authorization" in headers and "Cache-Control" not in present:
            fields.append(("Cache-Control", "no-store"))
        if self.cors_origins:
            fields.append(("Vary", "Origin"))
            origin = headers.get("Origin")
            if origin in self.cors_origins:
                fields += [
                    ("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true"),
                    ("Access-Control-Expose-Headers", CORS_EXPOSED),
                ]
        verdict: Verdict | None = here.get("rate")
        if verdict is not None and verdict.limit:
            fields += [
                ("X-RateLimit-Limit", str(verdict.limit)),
                ("X-RateLimit-Remaining", str(verdict.remaining)),
                ("X-RateLimit-Reset", str(verdict.reset_at)),
            ]
            if not verdict.allowed and "Retry-After" not in present:
                fields.append(("Retry-After", str(verdict.retry_after)))
        accept = headers.get("Accept-Language")
        if accept is not None:
            lang = language(accept)
            fields += [("Content-Language", lang), ("Vary", "Accept-Language")]
            if response.status_code >= 400 and response.mimetype == "application/json":
                await _translate(response, lang)
        for name, value in fields:  # added, not set: set and setdefault scan every header
            present.add(name, value)
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"
        took = time.perf_counter() - here.get("began", time.perf_counter())
        status = response.status_code
        count_request(req.method, route, status, took)
        hot_line(
            "api.request",
            "request",
            method=req.method,
            route=route,
            status=status,
            duration_ms=round(took * 1e3, 2),
            client=here.get("client"),
            ip=req.remote_addr,
            request_id=request_id,
        )
        return response


class ConstantHeaders:
    """Every HTTP answer's constant headers (``X-API-Version``, the security headers), added
    as ASGI bytes where the answer starts: the same for every answer, so not worth a pass
    through each response's header checks."""

    def __init__(self, app: ASGIApp, fields: dict[str, str]) -> None:
        self.app = app
        self.fields = [(name.lower().encode(), value.encode()) for name, value in fields.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.fields]}
            await send(message)

        await self.app(scope, receive, sending)
