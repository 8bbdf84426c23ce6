"""What cpms counts for Prometheus (``GET /metrics``, prometheus-client's text format).

The metrics live in one registry of their own (not the library's global one, which also carries
the process collector's per-scrape ``/proc`` reads); every layer records into them, this module
imports nothing of cpms. Labels are bounded: an HTTP route is its rule
(``/api/v1/charging/status/<session_id>``, never a path with ids), an OCPP action one of the
protocol's.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "cpms_http_requests",
    "REST requests answered, by method, route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "cpms_http_request_duration_seconds",
    "Time from a request's start to its answer, by method and route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
OCPP_MESSAGES = Counter(
    "cpms_ocpp_messages",
    "OCPP CALLs by action and direction (received from chargers, sent to them)",
    ["action", "direction"],
    registry=REGISTRY,
)
STATIONS_CONNECTED = Gauge(
    "cpms_stations_connected", "Chargers connected to this node now", registry=REGISTRY
)
OCPP_ADMISSION = Counter(
    "cpms_ocpp_boots_total",
    "BootNotifications by what admission control answered: accepted, pending (the door was "
    "saturated), accepted_after_pending",
    ["outcome"],
    registry=REGISTRY,
)
SESSIONS = Gauge(
    "cpms_sessions",
    "Charging sessions not yet settled, by state (read from the database at each scrape)",
    ["state"],
    registry=REGISTRY,
)
LEDGER_BATCH = Histogram(
    "cpms_ledger_batch_seconds",
    "Time to apply and commit one batch of ledger operations",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
LEDGER_BATCH_SIZE = Histogram(
    "cpms_ledger_batch_operations",
    "Ledger operations per committed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
WS_CLIENTS = Gauge(
    "cpms_ws_clients",
    "App WebSocket clients connected now (/api/v1/ws/locations)",
    registry=REGISTRY,
)
WS_SENT = Counter(
    "cpms_ws_messages_sent", "Messages queued for app WebSocket clients", registry=REGISTRY
)
PUSH_SENT = Counter(
    "cpms_push_notifications",
    "Web Push messages by outcome: delivered, gone (subscription removed), failed (after its "
    "tries), dropped (the queue was full)",
    ["outcome"],
    registry=REGISTRY,
)
WS_DROPPED = Counter(
    "cpms_ws_clients_dropped",
    "App WebSocket clients dropped for reading too slowly (their outbox full)",
    registry=REGISTRY,
)
ACTOR_RESTARTS = Counter(
    "cpms_actor_restarts", "Actors restarted by their supervisor after a crash", registry=REGISTRY
)


_OCPP_CHILDREN: dict[tuple[str, str], Any] = {}


def count_ocpp(action: str, direction: str) -> None:
    """One OCPP CALL received or sent (``action`` is one of the protocol's, so the keys are
    bounded; the children are kept as for :func:`count_request`)."""
    child = _OCPP_CHILDREN.get((action, direction))
    if child is None:
        child = _OCPP_CHILDREN[(action, direction)] = OCPP_MESSAGES.labels(action, direction)
    child.inc()


_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """One REST request answered: its count and its duration. The labelled children are kept
    (a route is a rule and a status one of a few, so the keys are bounded): ``labels()`` costs
    more than the counting itself."""
    children = _HTTP_CHILDREN.get((method, route, status))
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_DURATION.labels(method, route),
        )
        _HTTP_CHILDREN[(method, route, status)] = children
    children[0].inc()
    children[1].observe(seconds)
