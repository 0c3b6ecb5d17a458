"""Untrusted JSON, read on every path (live bodies, backfill lines) under the same rules.

Python's json module reads more than PostgreSQL's jsonb can store or this service can bound:
`NaN`, `Infinity` and numbers like `1e400` (which become infinite floats), lone UTF-16
surrogates (`"\\ud800"`, which no UTF-8 text can hold), and nesting deep enough to exhaust the
interpreter's recursion limit. `check` refuses each with a 422 `validation_error` whose type says
which. Most documents contain none of the tokens that can lead there; those are passed after a
scan of their bytes, without parsing.

A number overflows a float only with an exponent of three digits or more, or with two hundred
digits or more in a row (with a smaller exponent, nothing shorter reaches 1e308). The scan finds
those on a copy of the bytes in which every digit is `0` and every `E` an `e`: a few substring
searches in C, where a regular expression trying a number at every digit costs several times
the parse it would save.
"""

import json
import re
from typing import Any

from identity.errors import ValidationFailed

MAX_DEPTH = 64
# The tokens that can make json.loads read something jsonb cannot store.
_SUSPECT = re.compile(rb"NaN|Infinity|\\u[dD][89a-fA-F]")
_NUMERALS = bytes.maketrans(b"0123456789E", b"0000000000e")
_BIG_NUMBERS = (b"0e000", b"0e+000", b"0e-000", b"0" * 200)


def may_overflow(data: bytes) -> bool:
    """Whether `data` may hold a number that json.loads reads as an infinite float."""
    numerals = data.translate(_NUMERALS)
    return any(big in numerals for big in _BIG_NUMBERS)


def _refuse(kind: str, message: str, loc: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"loc": loc, "message": message, "type": kind}])


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _refuse("json_not_finite", f"the number {text[:40]} is out of range", "body")
    return value


def _constant(name: str) -> Any:
    raise _refuse("json_not_finite", f"{name} is not a JSON number", "body")


def _walk(value: Any, loc: str) -> None:
    """Refuse nesting over MAX_DEPTH and text with lone surrogates, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise _refuse(
                        "json_lone_surrogate", "text holds a lone UTF-16 surrogate", loc
                    ) from None
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _refuse(
                "json_too_deep", f"JSON is nested deeper than {MAX_DEPTH} levels", loc
            ) from None
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def check(data: bytes, loc: str = "body") -> None:
    """Raise ValidationFailed if `data`, read as JSON, holds what this service refuses."""
    if (
        not _SUSPECT.search(data)
        and data.count(b"{") + data.count(b"[") <= MAX_DEPTH
        and not may_overflow(data)
    ):
        return
    try:
        value = json.loads(data, parse_constant=_constant, parse_float=_finite)
    except ValidationFailed as exc:
        exc.details["errors"][0]["loc"] = loc
        raise
    except RecursionError:
        raise _refuse(
            "json_too_deep", f"JSON is nested deeper than {MAX_DEPTH} levels", loc
        ) from None
    except ValueError:
        return  # not JSON at all: the parser that reads it next says so
    _walk(value, loc)


def loads(data: bytes, loc: str = "body") -> Any:
    """`data` read as JSON after `check`; ValueError if it is not JSON."""
    check(data, loc)
    return json.loads(data)
