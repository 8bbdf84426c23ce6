"""Input checked against a pydantic model, every problem named: the one way a request body, a
query or a command line's values become a typed value (or a ``validation_error``)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cpms.kernel.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any) -> M:
    """``data`` as a ``model``.

    Raises:
        InvalidRequest: ``validation_error`` naming each bad field.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(problems, code="validation_error") from None
