"""A pooled connection the server dropped is replaced as it leaves the pool, not failed on."""

from typing import Any

import psycopg
from sqlalchemy import text

from identity.db import transaction


def test_a_connection_the_server_dropped_is_replaced_before_use(
    domain: None, db: psycopg.Connection[Any]
) -> None:
    with transaction() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the pooled connection dies idle
    with transaction() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
