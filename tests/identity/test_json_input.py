"""The rules every JSON input is read under: pure functions, no services."""

import pytest

from identity.errors import ValidationFailed
from identity.json_input import MAX_DEPTH, check


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'{"a": NaN}', "json_not_finite"),
        (b'{"a": [Infinity]}', "json_not_finite"),
        (b'{"a": -Infinity}', "json_not_finite"),
        (b'{"a": 1e400}', "json_not_finite"),
        (b'{"a": -2.5E+999}', "json_not_finite"),
        (b'{"a": 1' + b"0" * 400 + b".5}", "json_not_finite"),  # no exponent, still too big
        (b'{"a": 1' + b"0" * 250 + b"e60}", "json_not_finite"),  # a two-digit exponent
        (b'{"a": "\\ud800"}', "json_lone_surrogate"),
        (b'{"\\udfff": 1}', "json_lone_surrogate"),
        (nested(MAX_DEPTH + 1), "json_too_deep"),
        (nested(990), "json_too_deep"),
        (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
    ],
)
def test_what_jsonb_cannot_store_or_the_service_bound_is_refused(data: bytes, kind: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check(data, "line")
    assert refused.value.details["errors"] == [
        {"loc": "line", "message": refused.value.message, "type": kind}
    ]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1e300, "b": -1.5e-300, "c": 12345678901234567890}',
        b'{"emoji": "\\ud83d\\ude00", "text": "e123 NaNa"}',
        b'{"id": "6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11", "n": 1' + b"0" * 400 + b"}",  # an int
        nested(MAX_DEPTH),
        b"not json at all",  # left to the parser that reads it next
    ],
)
def test_ordinary_json_passes(data: bytes) -> None:
    check(data)
