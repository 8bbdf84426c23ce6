"""Meter readings are billed only when plausible: no more energy than the connector's rated power
could deliver by then, never backwards; a register that restarts is recognised, not charged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cpms.kernel.charging import Meter, Plausibility, Tariff, Verdict

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TARIFF = Tariff("T", Decimal("12.50"), session_fee=Decimal("5"))
KW22 = Plausibility(Decimal("22"), margin=Decimal("1.25"), slack_wh=1000, max_hours=Decimal("13"))


def meter(start: int = 5_000, bounds: Plausibility = KW22) -> Meter:
    return Meter(TARIFF, start, bounds, started_at=T0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_readings_within_rated_power_are_billed() -> None:
    m = meter()
    # 22 kW for 10 minutes is 3,667 Wh; 3,600 Wh is plausible
    assert m.reading(8_600, at(600)) is Verdict.COUNTED
    assert m.energy_kwh == Decimal("3.6") and m.cost() == Decimal("50.00")  # 3.6 × 12.5 + 5
    assert m.anomalies == 0 and m.anomaly is None


def test_a_uint32_wrap_glitch_is_flagged_and_the_session_bills_its_last_plausible_reading() -> None:
    """Issue 15, item 2: one MeterValues of 4294967295 Wh a few seconds in, then the same
    meterStop, billed 42.9 million."""
    m = meter()
    assert m.reading(5_040, at(5)) is Verdict.COUNTED
    assert m.reading(4_294_967_295, at(8)) is Verdict.IMPLAUSIBLE
    assert m.reading(4_294_967_295, at(9)) is Verdict.IMPLAUSIBLE  # the meterStop
    assert m.energy_kwh == Decimal("0.04") and m.cost() == Decimal("5.50")
    assert m.anomalies == 2 and m.anomaly is not None and "4294967295" in m.anomaly


def test_an_absurd_meter_stop_is_not_billed() -> None:
    m = meter()
    m.reading(6_000, at(300))
    assert m.reading(10**15, at(400)) is Verdict.IMPLAUSIBLE
    assert m.energy_kwh == Decimal("1") and m.cost() == Decimal("17.50")


def test_a_glitch_back_to_zero_then_on_as_before_bills_only_the_real_energy() -> None:
    m = meter()
    m.reading(6_000, at(300))
    assert m.reading(0, at(310)) is Verdict.BACKWARDS
    assert m.reading(6_100, at(320)) is Verdict.COUNTED  # the old register goes on
    assert m.energy_kwh == Decimal("1.1") and m.anomalies == 1


def test_a_register_that_restarts_keeps_what_was_counted_and_counts_on_from_its_new_value() -> None:
    m = meter(start=4_294_960_000)
    m.reading(4_294_966_000, at(1_000))  # 6,000 Wh in 1,000 s at 22 kW: plausible
    assert m.reading(500, at(1_100)) is Verdict.BACKWARDS  # the 32-bit register wrapped
    assert m.reading(1_000, at(1_200)) is Verdict.COUNTED
    assert m.counted_wh == 6_000 + 500 and m.last_wh == 1_000


def test_the_time_counted_is_capped_whatever_the_chargers_clock_says() -> None:
    m = meter()
    far = T0 + timedelta(days=3650)  # a charger clock ten years ahead
    allowed = KW22.allowed_wh((far - T0).total_seconds())
    assert allowed == Decimal("22") * 1000 * 13 * Decimal("1.25") + 1000
    assert m.reading(5_000 + int(allowed) + 1, far) is Verdict.IMPLAUSIBLE
    assert m.reading(5_000 + int(allowed), far) is Verdict.COUNTED


def test_a_reading_stamped_before_the_start_gets_only_the_slack() -> None:
    m = meter()
    assert m.reading(5_000 + 1_000, at(-60)) is Verdict.COUNTED
    assert m.reading(5_000 + 1_001, at(-60)) is Verdict.IMPLAUSIBLE


@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2**63 - 1), st.integers(0, 7_200)),
        max_size=30,
    )
)
def test_whatever_the_readings_the_energy_billed_stays_within_what_the_connector_could_deliver(
    steps: list[tuple[int, int]],
) -> None:
    m = meter()
    clock = 0
    for wh, later in steps:
        clock += later
        m.reading(wh, at(clock))
        assert m.counted_wh <= KW22.allowed_wh(clock)
        assert m.counted_wh >= 0
    assert m.cost() <= round(KW22.allowed_wh(clock) / 1000 * TARIFF.price_per_kwh + 6)
