"""Fuzzing the OCPP door (issue 15): frames made from the OCPP 1.6 schemas with Hypothesis, then
mutated (a field dropped or added, a value swapped for an edge case, the text cut or nested
deep, the frame's type or action changed). Every one gets a CALLRESULT or a well-formed CALLERROR
that is not InternalError (an InternalError is a bug of ours), the connection stays open, other
stations are served and ``/health`` answers 200.

Hypothesis draws the frames (a fixed budget, derandomized so a run is repeatable); the test then
sends them to a real server over a real WebSocket."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpms.ocpp import schemas
from cpms.ocpp.frames import ErrorCode
from storage import Database
from tests.ocpp_client import connect
from tests.ocpp_server import PASSWORD, provision, start_server

EXAMPLES = 400
CODES = set(get_args(ErrorCode)) - {"InternalError"}  # an InternalError is a bug of ours
EDGES: list[Any] = [
    2**63,
    -(2**31) - 1,
    2**31,
    1e308,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    "x" * 5000,
    "\u0000",
    "\ud800",
    "1e999999999",
    "NaN",
    None,
    True,
    [],
    {},
    [[[[[[]]]]]],
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
]


@cache
def _schema(action: str) -> dict[str, Any]:
    path = resources.files("ocpp").joinpath("v16", "schemas", f"{action}.json")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    schema.pop("$schema", None)
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy ``schema``, for the JSON-schema subset the OCPP 1.6 schemas use
    (objects with required and optional properties, enums, bounded strings, date-times,
    integers, numbers, booleans, arrays)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), min_size=1, max_size=3)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda at: at.isoformat())
        return st.text(min_size=1, max_size=schema.get("maxLength", 50))
    if kind == "integer":
        return st.integers(min_value=-(2**31), max_value=2**31 - 1)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind == "boolean":
        return st.booleans()
    return st.none()


def _calls() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.sampled_from(sorted(schemas.FROM_CHARGER)).flatmap(
        lambda action: st.tuples(st.just(action), from_schema(_schema(action)))
    )


def _mutate(draw: Callable[[st.SearchStrategy[Any]], Any], payload: dict[str, Any]) -> Any:
    how = draw(st.sampled_from(["none", "edge", "drop", "add", "nest"]))
    keys = sorted(payload)
    if how == "edge" and keys:
        payload[draw(st.sampled_from(keys))] = draw(st.sampled_from(EDGES))
    elif how == "drop" and keys:
        payload.pop(draw(st.sampled_from(keys)))
    elif how == "add":
        payload[draw(st.text(max_size=10))] = draw(st.sampled_from(EDGES))
    elif how == "nest" and keys:
        key = draw(st.sampled_from(keys))
        payload[key] = json.loads("[" * 40 + "1" + "]" * 40)
    return payload


@st.composite
def frames(draw: Callable[[st.SearchStrategy[Any]], Any], uid: str) -> str:
    action, payload = draw(_calls())
    payload = _mutate(draw, payload)
    frame: list[Any] = [2, uid, action, payload]
    shape = draw(st.sampled_from(["call"] * 6 + ["action", "type", "cut", "deep", "text"]))
    if shape == "action":
        frame[2] = draw(st.sampled_from(["Reset", "Nope", "", "heartbeat"]))
    elif shape == "type":
        frame[0] = draw(st.sampled_from([5, "2", 2.5, -1, None]))
    text = json.dumps(frame)  # NaN and Infinity come out as such: Python's JSON allows them
    if shape == "cut":
        text = text[: draw(st.integers(1, max(1, len(text) - 1)))]
    elif shape == "deep":
        text = f'[2,"{uid}","DataTransfer",' + '{"a":' * 5000 + "1" + "}" * 5000 + "]"
    elif shape == "text":
        text = draw(st.text(max_size=200))
    return text


def draw_frames() -> list[str]:
    drawn: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames(uid="fz"))
    def collect(text: str) -> None:
        drawn.append(text)

    collect()
    return drawn


def well_formed(reply: list[Any]) -> bool:
    if reply[0] == 3:
        return len(reply) == 3 and isinstance(reply[1], str) and isinstance(reply[2], dict)
    return (
        reply[0] == 4
        and len(reply) == 5
        and reply[2] in CODES
        and isinstance(reply[3], str)
        and isinstance(reply[4], dict)
    )


async def test_every_fuzzed_frame_gets_a_well_formed_answer_and_the_server_goes_on(
    db: Database, dsn: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    texts = await trio.to_thread.run_sync(draw_frames)
    assert len(texts) >= EXAMPLES // 2
    for name in ("CP-1", "CP-2"):
        await provision(db, name)
    endpoints, shutdown = await start_server(
        nursery, dsn, tmp_path, ocpp_rate=100_000, ocpp_burst=100_000
    )
    answers: dict[int, int] = {3: 0, 4: 0}
    async with connect(endpoints.ocpp_url, "CP-2", PASSWORD) as bystander:
        async with connect(endpoints.ocpp_url, "CP-1", PASSWORD) as cp:
            for text in texts:
                await cp.send_raw(text)
                with trio.fail_after(10):
                    reply = await cp.receive()
                assert well_formed(reply), (text[:300], reply)
                answers[reply[0]] += 1
            assert "currentTime" in await cp.call("Heartbeat", {})  # still open, still served
        assert "currentTime" in await bystander.call("Heartbeat", {})
    async with httpx.AsyncClient(base_url=endpoints.http_url) as http:
        assert (await http.get("/health")).status_code == 200
    assert answers[3] > 20 and answers[4] > 100, answers  # both kinds were exercised
    shutdown.set()
