"""Settings that contradict each other are refused when a process starts."""

import pytest
from pydantic import ValidationError

from identity.settings import Settings


def test_an_accept_statement_must_fit_inside_the_accept_bound() -> None:
    with pytest.raises(ValidationError, match="IDMIRROR_ACCEPT_STATEMENT_TIMEOUT_SECONDS"):
        Settings(accept_timeout_seconds=2, accept_statement_timeout_seconds=2)
    assert Settings(accept_timeout_seconds=2, accept_statement_timeout_seconds=1)
