"""Money parsing and the settings object."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpms.kernel.errors import InvalidRequest
from cpms.kernel.money import parse_amount, round_money
from cpms.settings import SettingsError, load_settings

D = Decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("150.5", D("150.50")),
        (150, D("150.00")),
        (150.5, D("150.50")),
        (D("0.01"), D("0.01")),
        ("1e2", D("100.00")),
        ("12.300", D("12.30")),
    ],
)
def test_parse_amount(value: object, expected: Decimal) -> None:
    assert parse_amount(value) == expected


@pytest.mark.parametrize(
    "value", ["-1", "0", "0.001", "abc", "NaN", "Infinity", True, None, [1], 0.1 + 0.2, "1e11"]
)
def test_parse_amount_refuses(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_amount(value)


@given(st.decimals(min_value=D("0.01"), max_value=D("9999999999.99"), places=2))
def test_parse_amount_is_exact_for_every_cent_value(value: Decimal) -> None:
    assert parse_amount(str(value)) == value
    assert parse_amount(float(value)) == value  # JSON numbers arrive as floats


def test_round_money_half_up() -> None:
    assert round_money(D("20") * D("13.5") / 7) == D("38.57")
    assert round_money(D("0.005")) == D("0.01")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("CPMS_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert (settings.http_port, settings.ocpp_port) == (8080, 9000)
    assert settings.data_dir == Path(".cpms") and settings.pg_dir == Path(".cpms/pg")
    assert settings.database_dsn is None
    assert settings.jwt_audience == "authenticated"


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPMS_HTTP_PORT", "8181")
    monkeypatch.setenv("CPMS_LOG_LEVEL", "debug")
    monkeypatch.setenv("CPMS_OCPP_PORT", "9191")
    settings = load_settings({"ocpp_port": 9292, "data_dir": None})
    assert (settings.http_port, settings.ocpp_port, settings.log_level) == (8181, 9292, "DEBUG")
    with pytest.raises(Exception, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]


def test_unknown_variable_is_named_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPMS_HTTP_PROT", "8080")
    with pytest.raises(
        SettingsError, match=r"CPMS_HTTP_PROT: unknown setting \(did you mean CPMS_HTTP_PORT"
    ):
        load_settings()


def test_invalid_values_are_all_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPMS_HTTP_PORT", "70000")
    monkeypatch.setenv("CPMS_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as info:
        load_settings({"ocpp_port": -1})
    message = str(info.value)
    assert "CPMS_HTTP_PORT" in message and "CPMS_LOG_FORMAT" in message
    assert "--ocpp-port" in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPMS_DATABASE_URL", "mysql://admin:hunter2@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CPMS_DATABASE_URL" in str(info.value) and "hunter2" not in str(info.value)


def test_payment_providers_need_their_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("CPMS_")]:
        monkeypatch.delenv(key)
    assert (load_settings().payment_provider, load_settings().cards) == ("sandbox", "sandbox")
    monkeypatch.setenv("CPMS_PAYMENT_PROVIDER", "odengi")
    monkeypatch.setenv("CPMS_ODENGI_PASSWORD", "odengi-hunter2")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "odengi_url, odengi_sid" in str(info.value) and "hunter2" not in str(info.value)
    monkeypatch.setenv("CPMS_ODENGI_URL", "https://odengi.test/api/json/json.php")
    monkeypatch.setenv("CPMS_ODENGI_SID", "4672496329")
    assert load_settings().cards == "off"  # cards only when configured
    monkeypatch.setenv("CPMS_CARD_PROVIDER", "obank")
    monkeypatch.setenv("CPMS_OBANK_URL", "http://obank.test/h2h")
    for name in ("POINT_ID", "SERVICE_ID", "CERT", "KEY"):
        monkeypatch.setenv(f"CPMS_OBANK_{name}", "x")
    with pytest.raises(SettingsError, match="https"):  # no plain-HTTP fallback
        load_settings()
    monkeypatch.setenv("CPMS_OBANK_URL", "https://obank.test/h2h")
    assert load_settings().cards == "obank"
