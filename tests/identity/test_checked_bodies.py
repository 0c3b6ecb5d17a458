"""A write applied where it was accepted takes the body its request validated, not its payload
parsed again: both must be the same body. And email addresses are checked once each, as
pydantic's EmailStr checks them."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError

from identity import agents, users
from identity.appliers import _upserts
from identity.keys import AgentKey, UserKey
from identity.ledger.apply import PendingJob
from identity.ledger.jobs import Submission
from identity.schemas import AgentUpsert, UserUpsert, normalized_email

USER_BODIES: list[dict[str, Any]] = [
    {"email": "ada@example.com", "slug": "ada"},
    {"email": "Ada@EXAMPLE.COM", "slug": "ada", "plan": "pro"},
    {"email": "Ada Lovelace <ada@example.com>", "slug": "ada"},
    {"email": "  ada@example.com ", "slug": "ada"},
    {"email": "ünïcode@bücher.de", "slug": "ada", "metadata": {"a": [1, {"b": None}], "c": 1.5}},
    {
        "email": "ada@example.com",
        "slug": "ada",
        "external_owner": "crm-42",
        "source_updated_at": "2025-06-01T12:15:02.118204+02:00",
    },
]
AGENT_BODIES: list[dict[str, Any]] = [
    {"display_name": "Scout"},
    {"display_name": " Scout ", "webhook_url": "https://hooks.example.com/scout?a=1"},
    {"display_name": "Ünï", "metadata": {"nested": {"list": [True, 2, "x"]}}},
    {"display_name": "Scout", "source_updated_at": "2025-06-01T10:15:02Z"},
]


def _user_submission(body: dict[str, Any]) -> Submission:
    return users.upsert_submission(str(uuid.uuid4()), UserUpsert.model_validate(body), None)


def _agent_submission(body: dict[str, Any]) -> Submission:
    checked = AgentUpsert.model_validate(body)
    return agents.upsert_submission("scout@ada", checked, None, allow_private_webhooks=False)


def _job(sub: Submission, payload: dict[str, Any] | None = None) -> PendingJob:
    payload = sub.payload if payload is None else payload
    now = datetime.now(UTC)
    return PendingJob(uuid.uuid4(), sub.key, 1, sub.kind, payload, 1, now, checked=sub.checked)


Submit = Callable[[dict[str, Any]], Submission]
CASES: list[tuple[Submit, type[UserUpsert] | type[AgentUpsert], dict[str, Any]]] = [
    *((_user_submission, UserUpsert, body) for body in USER_BODIES),
    *((_agent_submission, AgentUpsert, body) for body in AGENT_BODIES),
]


@pytest.mark.parametrize(("submit", "model", "body"), CASES)
def test_a_body_parsed_again_from_its_payload_is_the_requests_body(
    submit: Submit, model: type[UserUpsert] | type[AgentUpsert], body: dict[str, Any]
) -> None:
    sub = submit(body)
    assert isinstance(sub.checked, model)
    assert model.model_validate(sub.payload) == sub.checked


def test_upserts_applied_where_accepted_take_the_requests_body() -> None:
    user, agent = _user_submission(USER_BODIES[0]), _agent_submission(AGENT_BODIES[1])
    # The payload is not read when the request's body is there (an empty one would fail).
    ((key, body, version),) = _upserts([_job(user, payload={})], UserKey, UserUpsert)
    assert (key, body, version) == (UserKey.parse(user.key.partition(":")[2]), user.checked, 1)
    assert body is user.checked
    ((_, agent_body, _),) = _upserts([_job(agent, payload={})], AgentKey, AgentUpsert)
    assert agent_body is agent.checked


def test_upserts_a_worker_drains_are_parsed_from_their_payload() -> None:
    sub = _user_submission(USER_BODIES[1])
    drained = _job(sub)
    drained.checked = None  # as read from the ledger
    ((_, body, _),) = _upserts([drained], UserKey, UserUpsert)
    assert body == sub.checked and body is not sub.checked
    with pytest.raises(ValidationError):
        _upserts([_job(sub, payload={"slug": "ada"})], UserKey, AgentUpsert)


EMAILSTR: TypeAdapter[str] = TypeAdapter(EmailStr)


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "Ada@EXAMPLE.com",
        "Ada Lovelace <ada@example.com>",
        "ünïcode@bücher.de",
        "ada@xn--bcher-kva.de",
        " ada@example.com",
    ],
)
def test_an_address_is_normalised_as_emailstr_normalises_it(address: str) -> None:
    assert normalized_email(address) == EMAILSTR.validate_python(address)
    hits = normalized_email.cache_info().hits
    assert normalized_email(address) == EMAILSTR.validate_python(address)
    assert normalized_email.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    "address", ["x", "ada@", "@example.com", "ada@localhost", "ada@@example.com", "a@" * 2000]
)
def test_an_address_emailstr_refuses_is_refused_every_time(address: str) -> None:
    with pytest.raises(ValidationError):
        EMAILSTR.validate_python(address)
    for _ in range(2):
        with pytest.raises(ValidationError) as refused:
            UserUpsert(email=address, slug="ada")
        assert refused.value.errors()[0]["loc"] == ("email",)
        assert refused.value.errors()[0]["type"] == "value_error"
