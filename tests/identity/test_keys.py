"""Key parsing: pure functions, no services."""

import uuid

import pytest

from identity.errors import IdmirrorError, InvalidAgentKey, InvalidAgentRef, InvalidUserId
from identity.keys import AgentKey, AgentRef, UserKey, parse_ledger_key, searched_keys


def test_agent_key_round_trips() -> None:
    key = AgentKey.parse("scout@govind")
    assert (key.slug, key.user_slug, str(key)) == ("scout", "govind", "agent:scout@govind")
    assert parse_ledger_key(str(key)) == key


@pytest.mark.parametrize("raw", ["scout", "a@b@c", "A@b", "a@", "@b", "a-@b", "a@" + "b" * 65])
def test_malformed_agent_keys_raise_a_typed_error(raw: str) -> None:
    with pytest.raises(InvalidAgentKey):
        AgentKey.parse(raw)


def test_user_key_accepts_only_uuids() -> None:
    user_id = uuid.uuid4()
    assert parse_ledger_key(str(UserKey.parse(str(user_id)))) == UserKey(user_id)
    with pytest.raises(InvalidUserId):
        UserKey.parse("nope")


def test_agent_ref_is_an_id_or_a_key() -> None:
    assert AgentRef.parse("agt_abcDEF123456").agent_id == "agt_abcDEF123456"
    assert AgentRef.parse("scout@govind").key == AgentKey("scout", "govind")
    with pytest.raises(InvalidAgentRef):
        AgentRef.parse("agt_short")


def test_a_search_names_ledger_keys_with_or_without_their_prefix() -> None:
    some_id = uuid.uuid4()
    assert searched_keys("agent:scout@govind") == ["agent:scout@govind"]
    assert searched_keys(" Scout@Govind ") == ["agent:scout@govind"]
    assert searched_keys(f"user:{some_id}") == [f"user:{some_id}"]
    assert searched_keys(str(some_id).upper()) == [f"user:{some_id}", f"node_type:{some_id}"]


@pytest.mark.parametrize("raw", ["govind", "", "a@b@c", "user:nope", "agent:Bad_Slug@x"])
def test_a_search_that_names_no_key_is_a_typed_error(raw: str) -> None:
    with pytest.raises(IdmirrorError) as refused:
        searched_keys(raw)
    assert refused.value.status == 400
