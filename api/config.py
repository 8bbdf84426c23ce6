"""What the REST facade is configured with, given by the server from its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.session.machine import Timings
from api.auth import TokenVerifier
from api.rate_limit import RateLimiter
from api.sms import ConsoleSms, SmsSender
from api.tokens import TokenIssuer


@dataclass(frozen=True)
class ApiConfig:
    """``admin_token``: the Bearer token of ``/api/v1/admin/*`` (None: the admin API is off);
    ``verifier``: checks the app's access tokens; ``timings``: the session deadlines the open
    sessions report measures against; ``node_id`` and ``embedded_database`` are shown by
    ``/health``; ``webhook_secret`` and ``webhook_ips`` guard the payment webhook;
    ``rate_limits`` are requests a minute (default, critical calls, webhooks from addresses not
    the provider's; 0 = no limit), counted by ``limiter``; ``cors_origins`` may call from a
    browser."""

    verifier: TokenVerifier
    timings: Timings
    admin_token: str | None = None
    node_id: str = "node-1"
    embedded_database: bool = True
    #: the payment provider's webhook secret (None: webhooks refused) and allowed addresses
    webhook_secret: str | None = None
    webhook_ips: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    rate_limits: tuple[int, int, int] = (60, 10, 30)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    cors_origins: frozenset[str] = frozenset()
    metrics_token: str | None = None  # GET /metrics asks for it when set
    #: cpms's own tokens, the sign-in codes' delivery, days before a deleted account is erased
    issuer: TokenIssuer | None = None
    sms: SmsSender = field(default_factory=ConsoleSms)
    purge_after_days: int = 30
    push_allow_http: bool = False  # http:// push endpoints (development)
