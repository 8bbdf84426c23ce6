"""Frame encoding and the payload text the message log stores."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpms.ocpp.frames import Call, CallResult, OcppError, dumps, parse_frame, payload_text

# What text can hold (NUL and unpaired surrogates are refused, see below).
storable = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(storable, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(storable, max_size=5), inner)
    ),
    max_leaves=10,
)
payloads = st.dictionaries(st.text(storable, max_size=6), json_values, max_size=4)
ids = st.text(storable, min_size=1, max_size=36)


@given(ids, st.sampled_from(["Heartbeat", "MeterValues", "Authorize"]), payloads)
def test_payload_is_cut_from_compact_text(uid: str, action: str, payload: dict[str, Any]) -> None:
    text = json.dumps([2, uid, action, payload], separators=(",", ":"), ensure_ascii=False)
    frame = parse_frame(text)
    assert isinstance(frame, Call)
    cut = payload_text(frame, text)
    assert json.loads(cut) == payload
    assert text.endswith(cut + "]")  # really cut, not encoded again


@given(ids, st.sampled_from(["Heartbeat", "MeterValues", "Authorize"]), payloads)
def test_payload_is_cut_from_any_other_layout_too(
    uid: str, action: str, payload: dict[str, Any]
) -> None:
    for frame_list in ([3, uid, payload], [2, uid, action, payload]):
        for text in (
            json.dumps(frame_list),  # spaces after separators, escapes
            json.dumps(frame_list, indent=1),
            json.dumps(frame_list, separators=(",", ":"), ensure_ascii=False) + " \n",
            "[ " + json.dumps(frame_list)[1:-1].replace(", ", " ,\t", 2) + "\r\n]",
        ):
            frame = parse_frame(text)
            assert isinstance(frame, CallResult | Call)
            cut = payload_text(frame, text)
            assert json.loads(cut) == payload
            assert cut in text  # cut, not encoded again


def test_payload_without_text_is_encoded() -> None:
    frame = CallResult("7", {"status": "Accepted"})
    assert payload_text(frame, None) == '{"status":"Accepted"}'


def test_decimals_are_written_as_json_numbers() -> None:
    call = Call("1", "SetChargingProfile", {"limit": Decimal("16.5"), "n": 1})
    assert call.encode() == '[2,"1","SetChargingProfile",{"limit":16.5,"n":1}]'
    assert dumps({"a": [Decimal("0.10")]}) == '{"a":[0.10]}'
    assert dumps({"name": "Бишкек"}) == '{"name":"Бишкек"}'


def test_strings_no_text_can_hold_are_refused() -> None:
    for text in (
        '[2,"a","DataTransfer",{"vendorId":"V","data":"\\u0000"}]',
        '[2,"a","DataTransfer",{"vendorId":"V","data":"\\ud800"}]',
        '[2,"a","DataTransfer",{"vendorId":"V","\\udfff":1}]',
    ):
        with pytest.raises(OcppError) as caught:
            parse_frame(text)
        assert (caught.value.code, caught.value.unique_id) == ("FormationViolation", "a")
    # escapes that spell ordinary text, a surrogate pair, or a backslash are fine
    frame = parse_frame(
        '[2,"a","DataTransfer",{"vendorId":"\\u0056","data":"\\ud83d\\ude00 \\\\u0000"}]'
    )
    assert isinstance(frame, Call)
    assert frame.payload == {"vendorId": "V", "data": "😀 \\u0000"}


@given(
    st.text(st.characters(min_codepoint=1, exclude_categories=["Cs"]), min_size=1, max_size=36),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=36),
)
def test_a_payload_is_cut_from_any_frame_whose_id_needs_escapes_or_not(
    unique_id: str, printable: str
) -> None:
    payload = {"connectorId": 1}
    for uid in (unique_id, printable):
        text = dumps([2, uid, "Heartbeat", payload])
        frame = parse_frame(text)
        assert isinstance(frame, Call)
        assert payload_text(frame, text) == '{"connectorId":1}'
