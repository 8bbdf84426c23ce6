"""The one settings object, read once at start and frozen.

Values come from ``CPMS_*`` environment variables; command-line flags override them. An unknown
``CPMS_*`` variable or an invalid value stops the program at start with a message naming the
variable, never later and never silently.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actors.push.webpush import VapidKeys

ENV_PREFIX = "CPMS_"


class SettingsError(Exception):
    """The configuration can't be used; the message says which value and why."""


class Settings(BaseSettings):
    """Everything the server can be told. Frozen: nothing changes it after start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    http_host: str = Field("127.0.0.1", description="address the REST facade listens on")
    http_port: int = Field(8080, ge=0, le=65535, description="REST facade port (0 = any free)")
    ocpp_host: str = Field("127.0.0.1", description="address the OCPP listener listens on")
    ocpp_port: int = Field(9000, ge=0, le=65535, description="OCPP WebSocket port (0 = any free)")
    ocpp_path_prefix: str = Field("/ws", description="OCPP URL path before /{station_id}")
    ocpp_auto_register: bool = Field(
        False, description="provision unknown stations on first connection (dev/simulation)"
    )
    ocpp_offline_after: float = Field(
        300.0, gt=0, description="a station is offline after this many silent seconds"
    )
    ocpp_max_frame: int = Field(65536, ge=1024, description="largest OCPP frame accepted, bytes")
    ocpp_rate: float = Field(
        20.0, gt=0, description="frames per second a charger may send, sustained"
    )
    ocpp_burst: int = Field(100, ge=1, description="frames a charger may send at once")
    ocpp_backlog: int = Field(
        4096, ge=16, description="listen backlog of the OCPP port (capped by net.core.somaxconn)"
    )
    ocpp_handshakes: int = Field(
        32,
        ge=1,
        description="WebSocket handshakes served at once on the OCPP port (the others wait their "
        "turn, so chargers already online are not slowed by a reconnect storm)",
    )
    ocpp_admit_queue: int = Field(
        3000,
        ge=1,
        description="connections waiting (accept queue + handshakes) over which BootNotification "
        "is answered Pending",
    )
    ocpp_pending_min: float = Field(5, ge=1, description="shortest Pending interval, seconds")
    ocpp_pending_max: float = Field(20, ge=1, description="longest Pending interval, seconds")
    ocpp_tls_cert: Path | None = Field(None, description="TLS certificate (security profile 2)")
    ocpp_tls_key: Path | None = Field(None, description="TLS private key (security profile 2)")
    data_dir: Path = Field(Path(".cpms"), description="embedded database and local state")
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; unset = embedded PostgreSQL in <data dir>/pg"
    )
    db_pool_size: int = Field(10, ge=2, le=200, description="PostgreSQL connections in the pool")
    node_id: str = Field("node-1", min_length=1, description="this node's name in a cluster")

    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /api/v1/admin/*; unset = admin API disabled"
    )
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret for app tokens")
    auth_signing_key: SecretStr | None = Field(
        None,
        description="EC P-256 private key (PEM) cpms signs its own tokens with; unset = a new "
        "key at each start (development: tokens do not outlive a restart)",
    )
    sms_gateway_url: str | None = Field(
        None,
        description="SMS gateway URL template with {phone} and {text}; unset = codes printed "
        "to standard output (development)",
    )
    sms_gateway_method: Literal["GET", "POST"] = Field("GET", description="how it is called")
    sms_gateway_user: str | None = Field(None, description="HTTP Basic user of the SMS gateway")
    sms_gateway_password: SecretStr | None = Field(None, description="and its password")
    account_purge_days: int = Field(
        30, ge=0, description="days after DELETE /auth/me before the personal data is erased"
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token GET /metrics asks for; unset = /metrics open"
    )
    payment_provider: Literal["sandbox", "odengi"] = Field(
        "sandbox",
        description="who issues QR invoices: the in-process sandbox (no real money) or an "
        "O!Dengi-style provider at CPMS_ODENGI_URL",
    )
    card_provider: Literal["sandbox", "obank", "off"] | None = Field(
        None,
        description="who charges cards: the sandbox, an OBANK-style provider at "
        "CPMS_OBANK_URL, or off; unset = the sandbox with the sandbox QR provider, else off",
    )
    payment_invoice_lifetime: float = Field(
        300.0, ge=1, le=86400, description="s a top-up invoice and its QR code are payable"
    )
    payment_poll_every: float = Field(
        15.0, ge=0.1, le=3600, description="s between status polls of a pending invoice"
    )
    odengi_url: str | None = Field(None, description="O!Dengi-style JSON API address")
    odengi_sid: str | None = Field(None, description="O!Dengi merchant id")
    odengi_password: SecretStr | None = Field(None, description="O!Dengi merchant API password")
    odengi_test: bool = Field(False, description="mark O!Dengi invoices as test payments")
    obank_url: str | None = Field(None, description="OBANK-style host-to-host address (https)")
    obank_point_id: str | None = Field(None, description="OBANK point id")
    obank_service_id: str | None = Field(None, description="OBANK service id")
    obank_cert: Path | None = Field(None, description="client certificate for OBANK (PEM)")
    obank_key: Path | None = Field(None, description="its private key (PEM)")
    obank_ca: Path | None = Field(None, description="CA bundle OBANK's certificate is checked with")
    payment_webhook_secret: SecretStr | None = Field(
        None, description="HMAC secret of the provider's webhooks; unset = webhooks refused"
    )
    payment_webhook_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="a port of its own for the provider's webhooks (0 = any free); unset = "
        "webhooks only on the REST port",
    )
    payment_webhook_ips: str = Field(
        "127.0.0.1,::1", description="addresses webhooks are accepted from, comma separated"
    )
    cors_origins: str = Field(
        "",
        description="browser origins allowed to call the API, comma separated "
        "(https://app.example.com); unset = none",
    )
    rate_limit_default: int = Field(60, ge=0, description="requests a minute per client or address")
    rate_limit_critical: int = Field(
        10, ge=0, description="start, stop, top-up and sign-in calls a minute per client"
    )
    rate_limit_webhook: int = Field(
        30, ge=0, description="webhooks a minute per address not in the webhook allowlist"
    )
    ws_ping_interval: float = Field(
        30.0, gt=0, le=3600, description="s between the app socket's ping messages"
    )
    ws_full_update_interval: float = Field(
        60.0, gt=0, le=3600, description="s between the app socket's full stations_update"
    )
    ws_idle_timeout: float = Field(
        90.0, gt=0, le=86400, description="s without a message from an app socket, then closed"
    )
    ws_outbox: int = Field(
        512, ge=1, le=100_000, description="messages waiting for one app socket; more: dropped"
    )
    app_ws_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="a port of its own for the app's live socket (0 = any free); unset = the "
        "socket only on the REST port",
    )
    ws_max_clients: int = Field(
        20_000, ge=1, le=1_000_000, description="app sockets at once; more are closed with 1013"
    )
    http_stall_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="s a REST or app-socket peer may take no data before the kernel cuts it off",
    )
    vapid_private_key: SecretStr | None = Field(
        None,
        description="Web Push's VAPID private key (P-256: base64url raw, PEM, or base64 "
        "PEM/DER; `cpms vapid-keys` makes one); unset = Web Push off",
    )
    vapid_public_key: str | None = Field(
        None, description="its public key (base64url); derived from the private key when unset"
    )
    vapid_subject: str | None = Field(
        None, description="who push services can contact: mailto:ops@example.com or https://"
    )
    push_max_retries: int = Field(3, ge=1, le=10, description="tries per push message, in all")
    push_ttl: int = Field(
        86_400, ge=0, le=2_419_200, description="s a push service keeps an undelivered message"
    )
    push_timeout: float = Field(10.0, gt=0, le=120, description="s to wait for a push service")
    push_queue: int = Field(
        10_000, ge=1, le=1_000_000, description="notifications waiting to be sent; more: dropped"
    )
    push_low_balance: Decimal = Field(
        Decimal("100"),
        ge=0,
        max_digits=12,
        decimal_places=2,
        description="a driver whose balance is below this after a session is told to top up",
    )
    push_allow_http: bool = Field(
        False, description="accept http:// push endpoints (development only)"
    )
    session_start_timeout: float = Field(
        600.0, gt=0, description="s a session waits for StartTransaction, then refunds"
    )
    session_max_duration: float = Field(43200.0, gt=0, description="s before a session is stopped")
    session_offline_grace: float = Field(
        600.0, gt=0, description="s a charging session waits for an offline charger, then settles"
    )
    session_stop_check: float = Field(
        60.0,
        gt=0,
        description="s a stopping session waits for StopTransaction, then looks at the charger",
    )
    session_settle_wait: float = Field(
        15.0,
        gt=0,
        description="s between the two looks that must find no transaction before a stopping "
        "session settles on its last reading",
    )
    meter_power_margin: Decimal = Field(
        Decimal("1.25"),
        ge=1.0,
        le=10.0,
        description="a meter reading counts if the energy stays within the connector's rated "
        "power × elapsed time × this margin (+ meter_slack_wh); beyond, it is flagged, not billed",
    )
    meter_slack_wh: int = Field(
        1000, ge=0, le=100_000, description="Wh a meter may run ahead of rated power × time"
    )
    sim_password: SecretStr | None = Field(
        None, description="password `cpms sim` stations present (instead of --password)"
    )
    jwt_audience: str = Field("authenticated", description="required `aud` claim")
    jwt_issuer: str | None = Field(None, description="required `iss` claim, if set")
    jwt_jwks_url: str | None = Field(None, description="JWKS document for RS256/ES256 tokens")
    jwt_access_ttl: int = Field(3600, ge=60, description="lifetime of issued access tokens, s")
    jwt_refresh_ttl: int = Field(
        30 * 24 * 3600, ge=300, description="lifetime of issued refresh tokens, s"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="")
    log_format: Literal["console", "json"] = Field(
        "console", description="readable lines or one JSON object per line"
    )
    shutdown_timeout: float = Field(10.0, gt=0, le=120, description="graceful stop budget, s")
    gc_tuning: bool = Field(
        True,
        description="freeze live objects every second and collect fully after growth, not by "
        "allocation count",
    )
    storage_inbox: int = Field(1024, ge=1, description="StorageActor inbox capacity")
    storage_batch: int = Field(64, ge=1, le=1000, description="ledger operations per commit")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            if origin == "*":
                raise ValueError("list the origins: a wildcard can't be used with credentials")
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return value

    @property
    def cors(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.cors_origins.split(",") if o.strip())

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgres://", "postgresql://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _providers_configured(self) -> Settings:
        if self.payment_provider == "odengi":
            missing = [
                n for n in ("odengi_url", "odengi_sid", "odengi_password") if not getattr(self, n)
            ]
            if missing:
                raise ValueError(f"the O!Dengi provider needs {', '.join(missing)}")
        if self.cards == "obank":
            needed = ("obank_url", "obank_point_id", "obank_service_id", "obank_cert", "obank_key")
            missing = [n for n in needed if not getattr(self, n)]
            if missing:
                raise ValueError(f"the OBANK provider needs {', '.join(missing)}")
            if not str(self.obank_url).startswith("https://"):
                raise ValueError("obank_url must be https:// (no plain-HTTP fallback)")
        if self.vapid_private_key is not None:
            self.vapid_keys()
        if self.ocpp_pending_min > self.ocpp_pending_max:
            raise ValueError("ocpp_pending_min must not be over ocpp_pending_max")
        return self

    def vapid_keys(self) -> VapidKeys | None:
        """Web Push's keys, or None when it is off; ValueError for keys that can't be used."""
        if self.vapid_private_key is None:
            return None
        if not self.vapid_subject:
            raise ValueError("CPMS_VAPID_PRIVATE_KEY needs CPMS_VAPID_SUBJECT (mailto: or https:)")
        try:
            return VapidKeys(
                self.vapid_private_key.get_secret_value(),
                self.vapid_subject,
                self.vapid_public_key,
            )
        except ValueError as bad:
            raise ValueError(f"the VAPID keys can't be used: {bad}") from None

    @property
    def cards(self) -> str:
        """The card provider in effect."""
        if self.card_provider is not None:
            return self.card_provider
        return "sandbox" if self.payment_provider == "sandbox" else "off"

    @property
    def database_dsn(self) -> str | None:
        """The configured PostgreSQL URL, or None for the embedded database."""
        return None if self.database_url is None else self.database_url.get_secret_value()

    @property
    def pg_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps its cluster."""
        return self.data_dir / "pg"


def _unknown_env(environ: Mapping[str, str]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    problems = []
    for key in sorted(environ):
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            hint = difflib.get_close_matches(upper, known, n=1)
            problems.append(
                f"{key}: unknown setting" + (f" (did you mean {hint[0]}?)" if hint else "")
            )
    return problems


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the settings once: environment first, then ``overrides`` (the CLI flags).

    Raises:
        SettingsError: an unknown ``CPMS_*`` variable or an invalid value, all listed.
    """
    problems = _unknown_env(os.environ)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them, never values
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            source = (
                "--" + field.replace("_", "-") if field in given else ENV_PREFIX + field.upper()
            )
            shown = "" if field in _SECRET_FIELDS else f" (got {err.get('input')!r})"
            problems.append(f"{source}: {err['msg']}{shown}")
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings


_SECRET_FIELDS = {
    "database_url",
    "jwt_secret",
    "admin_token",
    "metrics_token",
    "auth_signing_key",
    "sms_gateway_password",
    "payment_webhook_secret",
    "odengi_password",
    "vapid_private_key",
}
