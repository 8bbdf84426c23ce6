"""Money is :class:`~decimal.Decimal` with two places, from parsing to the database and back.

Amounts arrive as JSON numbers, strings or Decimals; :func:`parse_amount` is the one door they go
through. Floats are accepted only when their shortest decimal repr has at most two places (a JSON
``150.5`` is a float by the time Python sees it), and are converted via that repr, never via
binary arithmetic.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from cpms.kernel.errors import InvalidRequest

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
#: NUMERIC(12,2) holds at most this much.
MAX_AMOUNT = Decimal("9999999999.99")


def parse_amount(
    value: object, *, field: str = "amount", allow_zero: bool = False, allow_negative: bool = False
) -> Decimal:
    """Turn ``value`` into an exact two-place Decimal or refuse it.

    Raises:
        InvalidRequest: not a number, NaN/inf, more than two decimal places, zero or negative
            (unless allowed), or beyond NUMERIC(12,2).
    """
    if isinstance(value, bool) or not isinstance(value, int | str | float | Decimal):
        raise InvalidRequest(f"{field} must be a number", code="validation_error", field=field)
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise InvalidRequest(
            f"{field} must be a number", code="validation_error", field=field
        ) from None
    if not amount.is_finite():
        raise InvalidRequest(f"{field} must be finite", code="validation_error", field=field)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and amount != amount.quantize(CENT):
        raise InvalidRequest(
            f"{field} has more than two decimal places", code="validation_error", field=field
        )
    amount = amount.quantize(CENT)
    if amount.is_zero() and not allow_zero:
        raise InvalidRequest(f"{field} must not be zero", code="validation_error", field=field)
    if amount < 0 and not allow_negative:
        raise InvalidRequest(f"{field} must be positive", code="validation_error", field=field)
    if abs(amount) > MAX_AMOUNT:
        raise InvalidRequest(f"{field} is too large", code="validation_error", field=field)
    return amount


def round_money(value: Decimal) -> Decimal:
    """Round a computed amount (kWh × rate) to the cent, half up, as a cashier would."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
