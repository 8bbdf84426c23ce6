"""JSON text from outside, read within bounds: at most ``MAX_DEPTH`` levels of nesting; numbers
finite, within ``MAX_EXPONENT`` orders of magnitude and ``MAX_NUMBER_TEXT`` characters; no
``NaN``/``Infinity``. Past this door no code meets a ``RecursionError``, an infinity or a number
no column can hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

MAX_DEPTH = 32
MAX_EXPONENT = 300
MAX_NUMBER_TEXT = 100
#: why text that is not :func:`representable` is refused
UNSTORABLE = "strings must not hold NUL characters or unpaired surrogates"


def _exponent_ok(literal: str) -> None:
    if len(literal) > MAX_NUMBER_TEXT:  # no measurement has this many digits (PostgreSQL's
        raise ValueError("number has too many digits")  # numeric holds 16,383 after the point)
    _, _, exponent = literal.lower().partition("e")
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        raise ValueError("number out of range")


def _number(literal: str) -> float | int:
    """A number with a fraction or an exponent; an integral one (``1.0``, ``1e3``) is read as
    the integer it is, so a field typed as an integer gets an int."""
    _exponent_ok(literal)
    value = float(literal)
    return int(value) if value.is_integer() else value


def _decimal(literal: str) -> Decimal:
    """A number with a fraction or an exponent, exactly (money)."""
    _exponent_ok(literal)
    return Decimal(literal)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity, -Infinity


def _decoder(parse_float: Callable[[str], Any]) -> json.JSONDecoder:
    return json.JSONDecoder(parse_float=parse_float, parse_constant=_constant)


_NUMBERS = _decoder(_number)
_EXACT = _decoder(_decimal)


def too_deep(value: object) -> bool:
    """Whether containers nest deeper than ``MAX_DEPTH``."""
    level: list[dict[str, Any] | list[Any]] = [value] if isinstance(value, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [
            item
            for container in level
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, dict | list)
        ]
        if not level:
            return False
    return True


def loads(text: str, *, exact: bool = False) -> Any:
    """Parse ``text``; fractions as floats (integral ones as ints), or as Decimals if ``exact``.

    Raises:
        ValueError: not JSON, nested too deep, or a number out of range.
    """
    try:
        value = (_EXACT if exact else _NUMBERS).decode(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    # cheap first: only text with enough brackets can nest that deep
    if text.count("[") + text.count("{") > MAX_DEPTH and too_deep(value):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def representable(value: object) -> bool:
    """Whether every string (keys too) can be stored as text: JSON's escapes can spell a NUL or
    half a surrogate pair, which no UTF-8 text (nor PostgreSQL) can hold. Only text with a
    ``\\u`` escape can hold either."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(representable(k) and representable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(representable(v) for v in value)
    return True
