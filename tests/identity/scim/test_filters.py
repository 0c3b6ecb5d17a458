"""SCIM filters run in SQL: every operator and logical form on 10,000 users inserted in one
statement, totals and pages that agree, and the lookups providers make served by indexes."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from identity.scim.filters import where
from tests.stack import Stack, database_url_for

pytestmark = pytest.mark.slow
USERS = 10_000


@pytest.fixture(scope="module")
def many(
    postgres_server: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An API of its own over 10,000 users, every tenth inactive, every third with an
    externalId, written set-based as SCIM would have stored them."""
    url = database_url_for(postgres_server, f"idmirror_scim_{uuid.uuid4().hex[:10]}")
    stack = Stack(url, redis_url, tmp_path_factory.mktemp("scim-filters"))
    try:
        stack.start("api")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """
                INSERT INTO users (id, email, slug, plan, metadata, version, created_at,
                                   updated_at, active, user_name, external_id, scim)
                SELECT gen_random_uuid(), format('user%%s@example.com', i), format('u-%%s', i),
                       'free', '{}', i,
                       timestamptz '2025-01-01' + make_interval(secs => i),
                       timestamptz '2025-01-01' + make_interval(secs => i),
                       i %% 10 <> 0, format('User%%s@Example.com', i),
                       CASE WHEN i %% 3 = 0 THEN format('ext-%%s', i) END,
                       jsonb_build_object('emails', jsonb_build_array(
                           jsonb_build_object('value', format('user%%s@example.com', i),
                                              'type', 'work', 'primary', true),
                           jsonb_build_object('value', format('home%%s@example.org', i),
                                              'type', 'home')))
                FROM generate_series(1, %s) AS i
                """,
                (USERS,),
            )
            conn.execute("ANALYZE users")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def scim(many: Stack) -> Iterator[httpx.Client]:
    with many.client() as client:
        client.base_url = httpx.URL(f"{many.base_url}/scim/v2/")
        yield client


def listed(scim: httpx.Client, filter: str, **params: Any) -> dict[str, Any]:
    response = scim.get("Users", params={"filter": filter, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("filter", "total"),
    [
        ('userName eq "user42@example.com"', 1),
        ('userName eq "USER42@EXAMPLE.COM"', 1),
        ('userName sw "user99"', 111),
        ('userName ew "7@example.com"', 1000),
        ('userName co "r123"', 11),
        ('userName ne "user1@example.com"', USERS - 1),
        ('externalId eq "ext-9"', 1),
        ('externalId eq "EXT-9"', 0),
        ("externalId pr", 3333),
        ("not (externalId pr)", USERS - 3333),
        ('emails.value eq "home5@example.org"', 1),
        ('emails eq "user5@example.com"', 1),
        ('emails co "@example.org"', USERS),
        ('emails[type eq "home" and value sw "home12"]', 111),
        ("active eq false", 1000),
        ('active eq true and userName sw "user1"', 1112 - 112),
        ('meta.lastModified gt "2025-01-01T02:46:30Z"', USERS - 9990),
        ('meta.created le "2025-01-01T00:00:10+00:00"', 10),
        ('userName eq "user1@example.com" or (externalId eq "ext-3" and active eq true)', 2),
        ('not (userName sw "user1" or userName sw "user2")', USERS - 2223),
        ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "user8@example.com"', 1),
    ],
)
def test_filters_count_what_they_match(scim: httpx.Client, filter: str, total: int) -> None:
    assert listed(scim, filter, count=0)["totalResults"] == total


def test_pages_of_count_100_cover_a_filter_once(scim: httpx.Client) -> None:
    seen: list[str] = []
    start = 1
    while True:
        page = listed(scim, 'userName sw "user1"', startIndex=start, count=100)
        assert page["totalResults"] == 1112 and page["startIndex"] == start
        seen += [user["id"] for user in page["Resources"]]
        if page["itemsPerPage"] < 100:
            break
        start += 100
    assert len(seen) == len(set(seen)) == 1112


def test_a_start_index_past_the_end_is_an_empty_page(scim: httpx.Client) -> None:
    page = listed(scim, "active eq false", startIndex=5000, count=10)
    assert page["totalResults"] == 1000 and page["Resources"] == []


@pytest.mark.parametrize(
    "filter",
    [
        'userName eq "user42@example.com"',
        'externalId eq "ext-9"',
        'emails.value eq "home5@example.org"',
        'userName co "r123"',
    ],
)
def test_provider_lookups_are_served_by_an_index(many: Stack, filter: str) -> None:
    clause, params = where(filter)
    sql = f"EXPLAIN SELECT id FROM users AS u WHERE {clause}"
    with psycopg.connect(many.database_url, autocommit=True) as conn:
        named = sql
        for name in params:
            named = named.replace(f":{name}", f"%({name})s")
        plan = "\n".join(row[0] for row in conn.execute(named, params))
    assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize(
    "filter",
    ['password eq "x"', 'active co "t"', "userName eq true", 'meta.created eq "yesterday"'],
)
def test_unsupported_filters_are_invalid_filter(scim: httpx.Client, filter: str) -> None:
    response = scim.get("Users", params={"filter": filter})
    assert response.status_code == 400, response.text
    assert response.json()["scimType"] == "invalidFilter"
