"""The one error table: every failure an endpoint can meet leaves it as ``{"success": false,
"error", "message"}`` with its status; an actor that doesn't answer in time is a 504, one that
crashed or is gone a 503 with Retry-After, never the catch-all's 500."""

from __future__ import annotations

import pytest
from quart_trio import QuartTrio

from actors.runtime import ActorCrashed, ActorUnavailable, Address, AskTimeout
from api.errors import install_error_handlers
from cpms.kernel.errors import Conflict, InvalidRequest
from storage.errors import StorageUnavailable

STATION = Address("station", "CP-1")
FAILURES: dict[str, tuple[BaseException, int, str]] = {
    "timeout": (AskTimeout(STATION, "no answer in 5 s"), 504, "timeout"),
    "crashed": (ActorCrashed(STATION, RuntimeError("bug")), 503, "service_unavailable"),
    "gone": (ActorUnavailable(STATION, "stopped"), 503, "service_unavailable"),
    "database": (StorageUnavailable("down"), 503, "service_unavailable"),
    "invalid": (InvalidRequest("bad", code="validation_error"), 400, "validation_error"),
    "conflict": (Conflict("taken", code="connector_occupied"), 409, "connector_occupied"),
    "bug": (KeyError("oops"), 500, "internal_error"),
}


def app() -> QuartTrio:
    made = QuartTrio("errors")
    for name, (error, _, _) in FAILURES.items():

        async def fail(error: BaseException = error) -> None:
            raise error

        made.add_url_rule(f"/{name}", name, fail)
    install_error_handlers(made)
    return made


@pytest.mark.parametrize("name", list(FAILURES))
async def test_each_failure_has_its_status_and_code(name: str) -> None:
    _, status, code = FAILURES[name]
    reply = await app().test_client().get(f"/{name}")
    assert reply.status_code == status
    body = await reply.get_json()
    assert body["success"] is False and body["error"] == code and body["message"]
    if status == 503:
        assert int(reply.headers["Retry-After"]) > 0
