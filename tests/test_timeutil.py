"""Timestamps: ``iso_now`` as the message log and status events carry it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpms.kernel.timeutil import iso_at, iso_now, parse_time

MICROSECOND = timedelta(microseconds=1)


def test_iso_now_is_now_in_utc_with_microseconds() -> None:
    before = datetime.now(UTC)
    text = iso_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
    stamp = parse_time(text)
    assert stamp is not None and before - MICROSECOND <= stamp <= after + MICROSECOND


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (1_764_806_399.0, "2025-12-03T23:59:59.000000Z"),
        (1_764_806_399.75, "2025-12-03T23:59:59.750000Z"),
        (1_764_806_399.999_999_9, "2025-12-04T00:00:00.000000Z"),  # rounded into the next day
        (1_764_806_400.5, "2025-12-04T00:00:00.500000Z"),
        (0.0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_iso_at_the_edges_of_a_second(epoch: float, expected: str) -> None:
    assert iso_at(epoch) == expected


@given(st.floats(min_value=0, max_value=4_102_444_800))  # up to 2100
def test_iso_at_is_the_instant_to_the_microsecond(epoch: float) -> None:
    stamp = parse_time(iso_at(epoch))
    assert stamp is not None
    assert abs(stamp - datetime.fromtimestamp(epoch, UTC)) <= MICROSECOND
