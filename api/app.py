"""``create_app``: the QuartTrio application, one blueprint per resource."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge

from actors.core import Core
from actors.payment.service import Payments
from actors.push.sender import PushSender
from actors.session.service import Sessions
from api.accounts import accounts_blueprint
from api.admin import admin_blueprint
from api.balance import balance_blueprint
from api.charging import charging_blueprint
from api.config import ApiConfig
from api.door import check_path_values
from api.errors import install_error_handlers
from api.favorites import favorites_blueprint
from api.health import health_blueprint
from api.idempotency import Idempotency
from api.identity import Identity
from api.jsonio import DecimalJSONProvider
from api.live_hub import LiveHub
from api.live_socket import live_blueprint
from api.locations import locations_blueprint
from api.metrics import metrics_blueprint
from api.notifications import notifications_blueprint
from api.openapi import openapi_blueprint
from api.owners import owners_blueprint
from api.payments import payments_blueprint
from api.protect import Protections
from api.rate_limit import Limit
from api.stations import stations_blueprint
from api.tokens import TokenIssuer
from api.webhook_door import WebhookDoor, WebhookIntake
from api.webhooks import WebhookGuard

MAX_BODY = 1024 * 1024


def create_app(
    core: Core,
    sessions: Sessions,
    config: ApiConfig,
    payments: Payments,
    intake: WebhookIntake | None = None,
    idempotency: Idempotency | None = None,
    hub: LiveHub | None = None,
    push: PushSender | None = None,
) -> QuartTrio:
    """Build the REST facade over ``core``; handlers reach actors and storage only through it.
    ``intake``: the provider's webhooks, when shared with their own port (else one of its own);
    ``idempotency``: the server's, with its keys loaded and its writer running (else one that
    asks the database and writes each answer at once); ``hub``: the app socket's, following the
    bus (else one that is not: its sockets hear nothing but their own answers); ``push``: the
    Web Push sender (else Web Push is off)."""
    app = QuartTrio("cpms")
    app.json = DecimalJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(health_blueprint(core, config))
    app.register_blueprint(admin_blueprint(core, config))
    app.register_blueprint(stations_blueprint(core))
    identity = Identity(config.verifier, core.db)
    app.register_blueprint(balance_blueprint(core, identity))
    app.register_blueprint(charging_blueprint(sessions, identity))
    app.register_blueprint(locations_blueprint(core))
    app.register_blueprint(favorites_blueprint(core, identity))
    issuer = config.issuer or TokenIssuer(None, config.verifier.audience)
    app.register_blueprint(
        accounts_blueprint(core, identity, issuer, config.sms, config.purge_after_days)
    )
    app.register_blueprint(payments_blueprint(payments, identity))
    app.register_blueprint(owners_blueprint(core.db, issuer))
    app.register_blueprint(live_blueprint(hub or LiveHub(core), config.verifier))
    sender = push or PushSender(core.db, None)
    app.register_blueprint(
        notifications_blueprint(core.db, config.verifier, sender, allow_http=config.push_allow_http)
    )
    app.register_blueprint(openapi_blueprint())
    app.register_blueprint(metrics_blueprint(core, config))
    default, critical, _webhook = config.rate_limits
    app.before_request(check_path_values)
    Protections(
        config.verifier,
        config.limiter,
        (Limit("default", default), Limit("critical", critical)),
        config.admin_token,
        config.cors_origins,
    ).install(app)
    (idempotency or Idempotency(core.db)).install(app)
    app.after_request(_finish_reading_the_body)
    install_error_handlers(app)
    intake = intake or webhook_intake(config, payments)
    # Flask's (and Quart's) way to put a door in front of the app: the provider's webhooks
    app.asgi_app = WebhookDoor(app.asgi_app, intake)  # type: ignore[method-assign, assignment]
    return app


def webhook_intake(config: ApiConfig, payments: Payments) -> WebhookIntake:
    """The provider's webhooks, answered under ``config``'s secret and addresses."""
    guard = WebhookGuard(config.webhook_secret, config.webhook_ips)
    limit = Limit("webhook", config.rate_limits[2])
    return WebhookIntake(guard, payments, config.limiter, limit)


async def _finish_reading_the_body(response: Response) -> Response:
    """An answer given without reading the request's body (a refusal: 401, 404, 405, ...)
    reads it now, so the connection is ready for the client's next request (left unread,
    the next request on a kept-alive connection was sometimes never answered); a body too
    large to read closes the connection instead."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not request.content_length and not chunked:  # no body (any method may carry one)
        return response
    try:
        await request.get_data(as_text=False)
    except RequestEntityTooLarge:
        response.headers["Connection"] = "close"
    return response
