"""The sign-in and account operations of the OpenAPI document (:mod:`api.accounts`); the
others are in :mod:`api.operations`."""

from __future__ import annotations

from api import auth_responses as A
from api.accounts import (
    CodeRequest,
    CodeSignIn,
    PasswordSignIn,
    ProfileChange,
    RefreshBody,
    Registration,
)
from api.operations import Op


def auth_operations() -> list[Op]:
    refused = (400, 401, 403)
    return [
        Op(
            "post",
            "/api/v1/auth/otp/request",
            "Send a 6-digit sign-in code by SMS (valid 5 minutes; another after 60 s)",
            "auth",
            body=CodeRequest,
            errors=(400, 429, 503),
            response=A.CodeSent,
        ),
        Op(
            "post",
            "/api/v1/auth/otp/verify",
            "Sign in with the code (the account is made at the first sign-in)",
            "auth",
            body=CodeSignIn,
            errors=refused,
            response=A.SignedIn,
        ),
        Op(
            "post",
            "/api/v1/auth/register",
            "Make an account with an e-mail and/or a phone and a password",
            "auth",
            body=Registration,
            errors=(400, 409),
            response=A.SignedIn,
            status=201,
        ),
        Op(
            "post",
            "/api/v1/auth/login",
            "Sign in with an e-mail or a phone and the password",
            "auth",
            body=PasswordSignIn,
            errors=refused,
            response=A.SignedIn,
        ),
        Op(
            "post",
            "/api/v1/auth/refresh",
            "A new access token for a refresh token, which is replaced (each works once); in "
            "cookie mode (X-Auth-Mode: cookie) the refresh token is the httpOnly cpms_refresh "
            "cookie, with X-CSRF-Token",
            "auth",
            body=RefreshBody,
            errors=refused,
            response=A.Tokens,
        ),
        Op(
            "get",
            "/api/v1/auth/csrf",
            "A CSRF token, also set as the cpms_csrf cookie: cookie mode's refresh and sign-out "
            "send it back as X-CSRF-Token",
            "auth",
            response=A.Csrf,
        ),
        Op(
            "post",
            "/api/v1/auth/logout",
            "Revoke the refresh token and every token of its sign-in",
            "auth",
            body=RefreshBody,
            errors=(400,),
            response=A.SignedOut,
        ),
        Op("get", "/api/v1/auth/me", "The caller's account", "auth", "app", response=A.Me),
        Op(
            "patch",
            "/api/v1/auth/me",
            "Change the caller's name or e-mail",
            "auth",
            "app",
            body=ProfileChange,
            errors=(400, 401, 409),
            response=A.Me,
        ),
        Op(
            "delete",
            "/api/v1/auth/me",
            "Delete the caller's account (personal data erased after CPMS_ACCOUNT_PURGE_DAYS)",
            "auth",
            "app",
            errors=(401,),
            response=A.Deleted,
        ),
        Op(
            "get",
            "/.well-known/jwks.json",
            "The public keys of cpms's own tokens",
            "system",
            response=A.Jwks,
        ),
    ]
