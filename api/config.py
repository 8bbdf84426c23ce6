"""What the REST facade is configured with, given by the server from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from actors.session.machine import Timings
from api.auth import TokenVerifier


@dataclass(frozen=True)
class ApiConfig:
    """``admin_token``: the Bearer token of ``/api/v1/admin/*`` (None: the admin API is off);
    ``verifier``: checks the app's access tokens; ``timings``: the session deadlines the open
    sessions report measures against; ``node_id`` and ``embedded_database`` are shown by
    ``/health``."""

    verifier: TokenVerifier
    timings: Timings
    admin_token: str | None = None
    node_id: str = "node-1"
    embedded_database: bool = True
