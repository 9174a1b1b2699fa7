"""Config pieces shared by the OTTL processors (``transform``, ``filter``): error modes,
statement groups, and compiling statement lists with errors at the statement's own config path
(``trace_statements[0].statements[1]``), its file line and the column in the statement.

The module name starts with ``_``: it is not a plugin.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipeline import ConfigModel

ErrorMode = Literal["ignore", "silent", "propagate"]


class StatementGroup(ConfigModel):
    """The grouped form: ``{context, statements, conditions, error_mode}``."""

    context: str | None = None
    statements: list[str] = []
    conditions: list[str] = []
    error_mode: ErrorMode | None = None


class ConditionGroup(ConfigModel):
    """The grouped form of ``*_conditions``: ``{context, conditions, error_mode}``."""

    context: str | None = None
    conditions: list[str] = []
    error_mode: ErrorMode | None = None


def config_error(title: str, errors: list[tuple[tuple[Any, ...], str, Any]]) -> ValidationError:
    """A pydantic error at ``loc`` (relative to the model being validated) with ``message``."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{error}", {"error": message}),
                loc=loc,
                input=value,
            )
            for loc, message, value in errors
        ],
    )


def ottl_message(detail: str, text: str) -> str:
    """``invalid OTTL statement 'set(x': column 6: ...``."""
    return f"invalid OTTL {text!r}: {detail}"
