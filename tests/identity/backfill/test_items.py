"""Backfill lines: agent and user lines read without the models are judged as the models judge them."""

import json

import pytest

from identity.backfill.digests import line_digest
from identity.backfill.items import Failure, ItemParser, Parsed

SNAPSHOT = 1_700_000_000_000_000
_IDNA_LABEL = "xn--" + ("\u4e2d" * 35).encode("punycode").decode()  # 35 CJK characters


def agent_line(**fields: object) -> bytes:
    body = {"type": "agent", "key": "scout@govind", "display_name": "Scout", **fields}
    return json.dumps(body, ensure_ascii=False).encode()


LINES = [
    agent_line(),
    agent_line(webhook_url="https://hooks.example.com/scout", metadata={"team": "a", "n": 1}),
    agent_line(webhook_url=None, metadata={}),
    agent_line(source_updated_at="2025-06-01T10:15:02.131877Z"),
    agent_line(source_updated_at="2025-06-01t10:15:02+02:00"),
    agent_line(source_updated_at="2025-06-01T10:15:02"),  # no time zone
    agent_line(source_updated_at="2025-13-01T10:15:02Z"),
    agent_line(source_updated_at=1_700_000_000),
    agent_line(source_updated_at=None),
    agent_line(source_updated_at="2999-01-01T00:00:00Z"),  # too far ahead of the clock
    agent_line(display_name=""),
    agent_line(display_name="x" * 255),
    agent_line(display_name="x" * 256),
    agent_line(display_name="é" * 255),
    agent_line(display_name=7),
    agent_line(display_name=None),
    agent_line(key="scout@@govind"),
    agent_line(key="Scout@govind"),
    agent_line(key="scout@govind-"),
    agent_line(key="scout"),
    agent_line(key=["scout@govind"]),
    agent_line(webhook_url="http://169.254.169.254/latest"),
    agent_line(webhook_url="http://localhost:8080/hook"),
    agent_line(webhook_url="https://user:pw@hooks.example.com/"),
    agent_line(webhook_url="ftp://hooks.example.com/"),
    agent_line(webhook_url="https://hooks.example.com/" + "x" * 2048),
    agent_line(webhook_url=5),
    agent_line(metadata=None),
    agent_line(metadata=[1]),
    agent_line(metadata={"big": "x" * 16_400}),
    agent_line(metadata={"just": "x" * 16_360}),
    agent_line(metadata={"n": [1e5] * 1_900}),  # short text, over the limit once re-serialised
    agent_line(metadata={"deep": json.loads("[" * 60 + "]" * 60)}),
    agent_line(metadata={"deep": json.loads("[" * 250 + "]" * 250)}),
    agent_line(metadata={"nul": "a\x00b"}),
    agent_line(metadata={"text": "caf\u00e9 \u2028 \U0001f600"}),
    agent_line(extra=1),
    agent_line(type="user"),
    agent_line().replace(
        b'"display_name": "Scout"', b'"display_name": "Scout", "display_name": ""'
    ),
    agent_line().replace(b'"display_name": "Scout"', b'"display_name": "", "display_name": "S"'),
    agent_line().replace(b'"Scout"', b'"Sc\\ud800out"'),
    agent_line().replace(b'"Scout"', '"Scöut"'.encode("latin-1")),
    agent_line().replace(b'"Scout"', b'"Sc\xed\xa0\x80out"'),  # an encoded lone surrogate
    agent_line().replace(b'"Scout"', b'"Sc\tout"'),
    agent_line(metadata={"n": 0}).replace(b'"n": 0', b'"n": NaN'),
    agent_line(metadata={"n": 0}).replace(b'"n": 0', b'"n": 1e999999'),
    agent_line(metadata={"n": 0}).replace(b'"n": 0', b'"n": 1' + b"0" * 400 + b".5"),
    agent_line(metadata={"n": 0}).replace(b'"n": 0', b'"n": 01'),
    agent_line() + b" x",
    b"[" + agent_line() + b"]",
    agent_line().decode().encode("utf-16"),
]


def user_line(**fields: object) -> bytes:
    body = {
        "type": "user",
        "id": "6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11",
        "email": "govind@example.com",
        "slug": "govind",
        **fields,
    }
    return json.dumps(body, ensure_ascii=False).encode()


USER_LINES = [
    user_line(),
    user_line(plan="pro", metadata={"region": "r1"}, external_owner="crm"),
    user_line(plan=None),
    user_line(plan=""),
    user_line(plan="p" * 64),
    user_line(plan="p" * 65),
    user_line(external_owner=None),
    user_line(external_owner="o" * 65),
    user_line(external_owner=3),
    user_line(id="6F1C2A52-3D1E-4C8A-9A4B-2F4F0C9D7E11"),
    user_line(id="{6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11}"),
    user_line(id="6f1c2a523d1e4c8a9a4b2f4f0c9d7e11"),
    user_line(id="not-a-uuid"),
    user_line(id=12),
    user_line(email="Govind@EXAMPLE.com"),
    user_line(email="Govind <govind@example.com>"),
    user_line(email=" govind@example.com "),
    user_line(email="gövind@exämple.com"),
    user_line(email='"odd local"@example.com'),
    user_line(email="govind@localhost"),
    user_line(email="govind@test"),
    user_line(email="govind@@example.com"),
    user_line(email="govind"),
    user_line(email="a..b@example.com"),
    user_line(email=".ab@example.com"),
    user_line(email="ab.@example.com"),
    user_line(email="a.b+tag_%-x@Sub.Example.COM"),
    user_line(email="g" * 64 + "@example.com"),
    user_line(email="g" * 65 + "@example.com"),
    user_line(email="g@" + "d" * 60 + "." + "e" * 60 + "." + "f" * 60 + "." + "g" * 60 + ".com"),
    user_line(email="g@exa_mple.com"),
    user_line(email="g@-example.com"),
    user_line(email="g@example"),
    user_line(email="g@example.c0m"),
    user_line(email="g@example.invalid"),
    user_line(email="g@123.123.123.123"),
    user_line(email="a" * 60 + "@" + _IDNA_LABEL + "." + _IDNA_LABEL + ".com"),  # long as Unicode
    user_line(email="g@" + _IDNA_LABEL + ".com"),
    user_line(email="g" * 2050 + "@example.com"),
    user_line(email=None),
    user_line(slug="Govind"),
    user_line(slug="govind-"),
    user_line(slug="g" * 64),
    user_line(slug="g" * 65),
    user_line(slug="govind\n"),
    user_line(metadata=None),
    user_line(metadata={"big": "x" * 70_000}),
    user_line(metadata={"n": [1e5] * 7_000}),
    user_line(source_updated_at="2025-06-01T10:15:02Z"),
    user_line(source_updated_at="2025-06-01T10:15:02"),
    user_line(source_updated_at="2999-01-01T00:00:00+01:00"),
    user_line(extra=True),
    user_line(type="node_type"),
    user_line(metadata={"nul": "a\x00b"}),
]


@pytest.mark.parametrize("raw", LINES + USER_LINES)
@pytest.mark.parametrize("allow_private", [False, True])
def test_agent_lines_read_without_the_models_get_the_models_verdict(
    raw: bytes, allow_private: bool
) -> None:
    parser = ItemParser(SNAPSHOT, allow_private_webhooks=allow_private)
    expected = parser.parse_with_models(7, raw)
    assert parser.parse(7, raw) == expected


def test_an_item_dated_too_far_ahead_of_the_clock_fails_with_its_line() -> None:
    parser = ItemParser(SNAPSHOT, allow_private_webhooks=False)
    result = parser.parse(9, user_line(source_updated_at="2999-01-01T00:00:00Z"))
    assert isinstance(result, Failure) and result.line == 9
    assert result.key == "user:6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11"
    assert result.error["details"]["errors"][0]["type"] == "too_far_ahead"


def test_plain_agent_and_user_lines_skip_the_models() -> None:
    parser = ItemParser(SNAPSHOT, allow_private_webhooks=False)
    raw = agent_line(webhook_url="https://hooks.example.com/scout")
    digest = line_digest(raw, "agent:scout@govind", allow_private_webhooks=False).encode()
    assert parser.parse_plain(3, raw) == Parsed(
        "agent", "agent:scout@govind", b'{"l":3,"v":%d,"h":"%s","d":%s}' % (SNAPSHOT, digest, raw)
    )
    user = parser.parse_plain(4, user_line(email="Govind@EXAMPLE.com"))
    assert user is not None and json.loads(user.stored)["email"] == "Govind@example.com"
    assert parser.parse_plain(3, agent_line(display_name="")) is None
    assert isinstance(parser.parse(3, agent_line(display_name="")), Failure)
