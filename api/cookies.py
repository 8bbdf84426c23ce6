"""Cookie mode for a browser app (a PWA): its refresh token in an httpOnly cookie, where the
page's scripts cannot read it, guarded against cross-site requests by a CSRF token.

* A sign-in (``/auth/otp/verify``, ``/auth/register``, ``/auth/login``) or ``/auth/refresh``
  sent with ``X-Auth-Mode: cookie`` answers the access token in its body as usual, but the
  refresh token only as the cookie ``cpms_refresh`` (httpOnly, ``Path=/api/v1/auth``, as long
  as the token lasts).
* ``GET /auth/csrf`` answers a CSRF token and sets it as the cookie ``cpms_csrf`` (readable by
  the page). ``/auth/refresh`` and ``/auth/logout`` sent without a refresh token in the body
  take the cookie's, and then only with the header ``X-CSRF-Token`` equal to the ``cpms_csrf``
  cookie (else 403 ``csrf_failed``): another site's page can make the browser send the cookies
  but cannot read them to copy one into a header (double submit).
* ``SameSite`` is chosen by the request's ``Origin`` (changelog 1.4.0): a page served over
  plain HTTP from ``localhost``, ``127.0.0.1`` or ``[::1]`` (development) gets ``Lax`` without
  ``Secure``, which browsers accept over HTTP; any other gets ``None; Secure``, so that an app
  on another origin (listed in ``CPMS_CORS_ORIGINS``) can send it, over HTTPS only.
* ``/auth/logout`` clears both cookies.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from quart import Response, request

from cpms.kernel.errors import Forbidden

REFRESH_COOKIE = "cpms_refresh"
CSRF_COOKIE = "cpms_csrf"
CSRF_HEADER = "X-CSRF-Token"
MODE_HEADER = "X-Auth-Mode"
REFRESH_PATH = "/api/v1/auth"
CSRF_TTL_S = 24 * 3600
DEVELOPMENT_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def cookie_mode() -> bool:
    """The caller asked for its refresh token as a cookie."""
    return request.headers.get(MODE_HEADER, "").strip().lower() == "cookie"


def _site() -> tuple[Literal["Lax", "None"], bool]:
    """``(SameSite, Secure)`` for the request's origin."""
    origin = urlsplit(request.headers.get("Origin", ""))
    if origin.scheme == "http" and origin.hostname in DEVELOPMENT_HOSTS:
        return "Lax", False
    return "None", True


def set_refresh_cookie(response: Response, token: str, expires_at: datetime) -> None:
    same_site, secure = _site()
    max_age = max(0, int((expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age,
        path=REFRESH_PATH,
        secure=secure,
        httponly=True,
        samesite=same_site,
    )


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, token: str) -> None:
    same_site, secure = _site()
    response.set_cookie(
        CSRF_COOKIE, token, max_age=CSRF_TTL_S, path="/", secure=secure, samesite=same_site
    )


def clear_cookies(response: Response) -> None:
    same_site, secure = _site()
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_PATH, secure=secure, httponly=True, samesite=same_site
    )
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite=same_site)


def refresh_cookie() -> str | None:
    """The refresh token of the request's cookie, once its CSRF token is proven; None when
    there is no such cookie.

    Raises:
        Forbidden: ``csrf_failed`` when the cookie is there but ``X-CSRF-Token`` is missing or
            differs from the ``cpms_csrf`` cookie.
    """
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    sent = request.headers.get(CSRF_HEADER, "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(
            f"a refresh by cookie needs the {CSRF_HEADER} header equal to the {CSRF_COOKIE} "
            "cookie (GET /api/v1/auth/csrf)",
            code="csrf_failed",
        )
    return token
