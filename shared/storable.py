"""What client-supplied text and JSON may hold, checked once at the edge of the domain.

PostgreSQL refuses the NUL character in text and in JSON (as ``\\u0000``), and a lone
surrogate (``\\ud800``, valid in JSON as an escape) is not Unicode text: neither can be stored
or encoded as UTF-8. Free-form values (call-bulk ``metadata``, dynamic variables, prompt tags)
have sizes, since they are stored per call and sent back in every read, export and webhook.

The schemas use ``Text``/``OptionalText``, ``Variables``/``PromptTags`` and ``FreeJson``; the
API checks path and query values with ``text_problem``. A rejected value is never echoed back
as it is (``displayable``).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter
from pydantic_core import PydanticCustomError

# Dynamic variables (submit) and prompt tags (call-bulk), per recipient: how many, how long a
# name, how long one text value, and names and text values together.
MAX_VARIABLES = 100
MAX_VARIABLE_NAME_CHARS = 100
MAX_VARIABLE_VALUE_CHARS = 10_000
MAX_VARIABLES_TOTAL_CHARS = 20_000
# Call-bulk metadata and every other free-form JSON value (custom_llm_extra_body, unknown
# override keys), as compact JSON text.
MAX_FREE_JSON_CHARS = 16_384
# Webhook URLs: what browsers, proxies and most HTTP servers take.
MAX_URL_CHARS = 2_048


class TextProblem(Enum):
    """Why a string cannot be stored: the error ``type`` and its message."""

    NUL = ("value_error.nul", "may not contain the NUL character (\\u0000)")
    SURROGATE = (
        "value_error.surrogate",
        "may not contain a lone surrogate (\\ud800 to \\udfff): it is not Unicode text",
    )

    def __init__(self, kind: str, msg: str) -> None:
        self.kind = kind
        self.msg = msg


def text_problem(value: str) -> TextProblem | None:
    """Why ``value`` cannot be stored, or None (ASCII text costs two scans, no copy)."""
    if "\x00" in value:
        return TextProblem.NUL
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return TextProblem.SURROGATE
    return None


def displayable(value: str) -> str:
    """``value`` safe to put in an answer: a lone surrogate written as its escape."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse(problem: TextProblem, where: str = "") -> PydanticCustomError:
    prefix = f"{where}: " if where else ""
    return PydanticCustomError(problem.kind, f"{prefix}{problem.msg}")


def check_text(value: Any) -> Any:
    """A pydantic validator run on the input: refuses text that cannot be stored, before the
    field's other rules (a length limit would refuse a lone surrogate in vaguer words)."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise _refuse(problem)
    return value


def _json_path(path: tuple[str | int, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f"[{json.dumps(displayable(p))}]" for p in path]
    return "value" + "".join(parts)


def _first_unstorable(value: Any) -> tuple[tuple[str | int, ...], TextProblem] | None:
    """The path to the first key or string in a JSON value that cannot be stored."""
    # Iterative: a value parsed from JSON may nest as deep as the parser allowed.
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return path, problem
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    return (*path, key), problem
                pending.append(((*path, key), child))
        elif isinstance(item, list | tuple):
            pending.extend(((*path, i), child) for i, child in enumerate(item))
    return None


_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def check_free_json(value: Any) -> Any:
    """A pydantic validator for a free-form JSON value: storable text, and its size."""
    # One C-speed serialisation measures the value and finds NUL (always written \u0000);
    # only a value that may hold a problem is walked, to say where.
    try:
        text = _COMPACT_JSON.encode(value)
    except RecursionError:
        raise PydanticCustomError("too_deep", "the value nests too deeply") from None
    if len(text) > MAX_FREE_JSON_CHARS:
        raise PydanticCustomError(
            "too_large",
            "the value is {size} characters as JSON; at most {limit} are accepted",
            {"size": len(text), "limit": MAX_FREE_JSON_CHARS},
        )
    if "\\u0000" in text or text_problem(text) is not None:
        found = _first_unstorable(value)
        if found is not None:
            path, problem = found
            raise _refuse(problem, _json_path(path) if path else "")
    return value


def _check_variable_value(value: Any) -> Any:
    # Ahead of the value's union, so a bad text value is one error, not one per member.
    if isinstance(value, str):
        check_text(value)
        if len(value) > MAX_VARIABLE_VALUE_CHARS:
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                {"max_length": MAX_VARIABLE_VALUE_CHARS},
            )
    return value


# Client text that is stored: refused when it holds NUL or a lone surrogate. A field's own
# limits (``Field(max_length=...)``) still apply; ``OptionalText`` is the nullable form.
Text = Annotated[str, BeforeValidator(check_text)]
OptionalText = Annotated[str | None, BeforeValidator(check_text)]
# Any free-form JSON value the client sends and we store.
FreeJson = Annotated[Any, AfterValidator(check_free_json)]
FreeJsonObject = Annotated[dict[str, Any], AfterValidator(check_free_json)]

VariableName = Annotated[
    str, Field(max_length=MAX_VARIABLE_NAME_CHARS), BeforeValidator(check_text)
]
# A dynamic variable's value: text, a number, a boolean or null (a JSON bool stays a bool).
VariableValue = Annotated[str | int | float | bool | None, BeforeValidator(_check_variable_value)]
# Variable by variable: errors name the variable (and a CSV upload's column).
_EACH_VARIABLE: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[VariableName, VariableValue])


def _check_variables(variables: dict[str, Any]) -> dict[str, Any]:
    # A submit carries up to 10,000 of these: the common case is two joins and a few scans at
    # C speed (when all the names together are within one name's limit, so is each); only a
    # set with a problem is validated variable by variable, to name the variable.
    texts = [value for value in variables.values() if isinstance(value, str)]
    names, values = "".join(variables), "".join(texts)
    if (
        (
            len(names) > MAX_VARIABLE_NAME_CHARS
            and max(map(len, variables)) > MAX_VARIABLE_NAME_CHARS
        )
        or (
            len(values) > MAX_VARIABLE_VALUE_CHARS
            and max(map(len, texts)) > MAX_VARIABLE_VALUE_CHARS
        )
        or text_problem(names) is not None
        or text_problem(values) is not None
    ):
        _EACH_VARIABLE.validate_python(variables)
    total = len(names) + len(values)
    if total > MAX_VARIABLES_TOTAL_CHARS:
        raise PydanticCustomError(
            "too_large",
            "names and text values are {size} characters together; at most {limit} are accepted",
            {"size": total, "limit": MAX_VARIABLES_TOTAL_CHARS},
        )
    return variables


# Dynamic variables (submit) and prompt tags (call-bulk): names to values.
Variables = Annotated[
    dict[str, str | int | float | bool | None],
    Field(max_length=MAX_VARIABLES),
    AfterValidator(_check_variables),
]
PromptTags = Annotated[
    dict[str, str], Field(max_length=MAX_VARIABLES), AfterValidator(_check_variables)
]
