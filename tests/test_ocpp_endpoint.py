"""The sans-IO OCPP endpoint: text in, typed events out, no socket and no clock of its own."""

from __future__ import annotations

import json

import pytest

from cpms.ocpp.endpoint import (
    Answered,
    CallReceived,
    CallRefused,
    Close,
    EndpointConfig,
    Failed,
    OcppEndpoint,
    Reply,
    Stray,
)
from cpms.ocpp.frames import Call, CallError, CallResult, OcppError

HEARTBEAT = '[2,"h1","Heartbeat",{}]'


def endpoint(**config: float) -> OcppEndpoint:
    return OcppEndpoint(EndpointConfig(**config), now=0.0)  # type: ignore[arg-type]


def test_a_valid_call_is_received_with_its_text() -> None:
    event = endpoint().receive(HEARTBEAT, 0.0)
    assert event == CallReceived(Call("h1", "Heartbeat", {}), HEARTBEAT)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('[2,"x","RemoteStartTransaction",{"idTag":"T"}]', "NotSupported"),
        ('[2,"x","MakeCoffee",{}]', "NotImplemented"),
        ('[2,"x","StatusNotification",{"connectorId":1}]', "ProtocolError"),  # fields missing
    ],
)
def test_a_call_not_handled_or_off_schema_is_refused_with_its_error(text: str, code: str) -> None:
    event = endpoint().receive(text, 0.0)
    assert isinstance(event, CallRefused)
    assert (event.error.unique_id, event.error.code) == ("x", code)


def test_text_that_is_no_frame_gets_a_callerror_without_being_read() -> None:
    event = endpoint().receive("not json", 0.0)
    assert isinstance(event, Reply)
    assert json.loads(event.text)[2] == "FormationViolation"


def test_a_frame_over_the_size_limit_is_refused_by_its_bytes_on_the_wire() -> None:
    big = '[2,"b1","DataTransfer",{"vendorId":"v","data":"' + "ж" * 600 + '"}]'  # 2 bytes each
    event = endpoint(max_frame=1000).receive(big, 0.0)
    assert isinstance(event, Reply)
    assert json.loads(event.text)[:3] == [4, "b1", "FormationViolation"]
    assert isinstance(endpoint(max_frame=2000).receive(big, 0.0), CallReceived)


def test_the_excess_over_the_rate_is_refused_and_a_flood_is_closed() -> None:
    ep = endpoint(rate=10, burst=5)
    events = [ep.receive(HEARTBEAT, 0.0) for _ in range(5 + 101)]  # 101 refused > 10 × rate
    assert all(isinstance(e, CallReceived) for e in events[:5])
    refused = [e for e in events[5:] if isinstance(e, Reply)]
    assert refused and json.loads(refused[0].text)[2] == "GenericError"
    assert isinstance(events[-1], Close) and events[-1].code == 1008


def test_the_rate_refills_with_time() -> None:
    ep = endpoint(rate=10, burst=1)
    assert isinstance(ep.receive(HEARTBEAT, 0.0), CallReceived)
    assert isinstance(ep.receive(HEARTBEAT, 0.0), Reply)
    assert isinstance(ep.receive(HEARTBEAT, 0.1), CallReceived)


def test_our_call_is_answered_by_the_result_with_its_id_checked_against_the_schema() -> None:
    ep = endpoint()
    call = ep.call("cs-1", "RemoteStopTransaction", {"transactionId": 7}, now=0.0, timeout=30)
    assert ep.deadline() == 30
    with pytest.raises(RuntimeError):  # one outstanding at a time
        ep.call("cs-2", "Reset", {"type": "Soft"}, now=0.0, timeout=30)
    stray = ep.receive('[3,"cs-9",{"status":"Accepted"}]', 1.0)
    assert isinstance(stray, Stray) and stray.reply is not None
    assert stray.reply.code == "ProtocolError"
    answered = ep.receive('[3,"cs-1",{"status":"Accepted"}]', 1.0)
    assert answered == Answered(
        call, CallResult("cs-1", {"status": "Accepted"}), '[3,"cs-1",{"status":"Accepted"}]'
    )
    assert ep.outstanding is None and ep.deadline() == float("inf")


def test_an_answer_that_breaks_the_schema_or_a_callerror_fails_the_call() -> None:
    ep = endpoint()
    call = ep.call("cs-1", "RemoteStopTransaction", {"transactionId": 7}, now=0.0, timeout=30)
    failed = ep.receive('[3,"cs-1",{"status":"Maybe"}]', 1.0)
    assert isinstance(failed, Failed) and failed.call == call and failed.reason == "error"
    assert "invalid answer" in failed.description
    ep.call("cs-2", "Reset", {"type": "Soft"}, now=1.0, timeout=30)
    failed = ep.receive('[4,"cs-2","NotSupported","no",{}]', 2.0)
    assert isinstance(failed, Failed) and failed.description == "Reset: NotSupported no"
    assert isinstance(ep.receive('[4,"cs-3","GenericError","",{}]', 2.0), Stray)  # never answered


def test_an_unanswered_call_fails_at_its_deadline_or_when_the_connection_goes() -> None:
    ep = endpoint()
    ep.call("cs-1", "Reset", {"type": "Soft"}, now=0.0, timeout=30)
    assert ep.expire(29.9) is None
    failed = ep.expire(30.0)
    assert failed is not None and failed.reason == "timeout"
    ep.call("cs-2", "Reset", {"type": "Soft"}, now=31.0, timeout=30)
    lost = ep.lost("the charger disconnected")
    assert lost is not None and lost.reason == "disconnected"
    assert ep.lost("again") is None


def test_an_answer_to_our_call_passes_the_rate_limit() -> None:
    ep = endpoint(rate=1, burst=1)
    assert isinstance(ep.receive(HEARTBEAT, 0.0), CallReceived)
    ep.call("cs-1", "Reset", {"type": "Soft"}, now=0.0, timeout=30)
    assert isinstance(ep.receive('[3,"cs-1",{"status":"Accepted"}]', 0.0), Answered)


def test_our_own_answer_is_checked_against_the_schema() -> None:
    call = Call("h1", "Heartbeat", {})
    frame, problem = OcppEndpoint.answer(call, {"currentTime": "2026-01-01T00:00:00Z"})
    assert isinstance(frame, CallResult) and problem is None
    frame, problem = OcppEndpoint.answer(call, {"currentTime": 5})
    assert isinstance(frame, CallError) and frame.code == "InternalError" and problem
    refused = OcppEndpoint.refuse(call, OcppError("PropertyConstraintViolation", "no"))
    assert (refused.unique_id, refused.code) == ("h1", "PropertyConstraintViolation")
