"""The REST facade's door: every body, path value and query is read here, within bounds, before a
handler sees it: parsed once, at the boundary. What doesn't fit is a 400 with the error body,
never a 500: bodies are UTF-8 JSON objects within :mod:`cpms.kernel.jsontext`'s bounds (money
exact), path values short and free of control characters; query models keep their numbers and
dates within what the database holds with :mod:`cpms.kernel.bounded`'s types."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from quart import request

from cpms.kernel import jsontext
from cpms.kernel.errors import InvalidRequest
from cpms.kernel.validation import validate

M = TypeVar("M", bound=BaseModel)

#: The longest identifier a path may carry (station ids are at most 64 characters).
MAX_PATH_VALUE = 128


async def json_object() -> dict[str, Any]:
    """The request's body: a JSON object, its fractions as Decimals.

    Raises:
        InvalidRequest: ``invalid_request`` when the body is not UTF-8, not JSON, nested too
            deep, holds a number out of range, or is not an object.
    """
    raw = await request.get_data(as_text=False)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = jsontext.loads(text, exact=True)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8 text", code="invalid_request") from None
    except ValueError as error:
        raise InvalidRequest(
            f"the body is not valid JSON: {error}", code="invalid_request"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_request")
    if "\\u" in text and not jsontext.representable(data):
        raise InvalidRequest(jsontext.UNSTORABLE, code="invalid_request")
    return data


async def optional_json_object() -> dict[str, Any]:
    """:func:`json_object`, or ``{}`` for an empty body."""
    if not await request.get_data(as_text=False):
        return {}
    return await json_object()


async def body(model: type[M]) -> M:
    """The request's body (:func:`json_object`) as a ``model``.

    Raises:
        InvalidRequest: ``invalid_request`` for a body that is no JSON object,
            ``validation_error`` naming each field that doesn't fit the model.
    """
    return validate(model, await json_object())


async def optional_body(model: type[M]) -> M:
    """:func:`body`, an empty body read as ``{}``."""
    return validate(model, await optional_json_object())


def query(model: type[M]) -> M:
    """The request's query parameters as a ``model`` (``validation_error`` naming each bad
    one)."""
    values = request.args.to_dict()
    if not jsontext.representable(values):  # %00 decodes to a NUL
        raise InvalidRequest(jsontext.UNSTORABLE, code="validation_error")
    return validate(model, values)


async def check_path_values() -> None:
    """Every value taken from the path is a short printable string (the first
    ``before_request``: Quart runs an app's ``url_value_preprocessor`` for WebSockets too, and
    there it fails asking the request for its endpoint).

    Raises:
        InvalidRequest: ``validation_error`` naming the value.
    """
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and (len(value) > MAX_PATH_VALUE or not value.isprintable()):
            raise InvalidRequest(
                f"{name} must be at most {MAX_PATH_VALUE} printable characters",
                code="validation_error",
                field=name,
            )
