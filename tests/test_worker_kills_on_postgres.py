"""tests/test_worker_kills.py again on a real PostgreSQL server (tests/support/postgres.py): the database is
under load there. Its own module, so that it runs in parallel with the SQLite run (scripts/test.sh)."""
from __future__ import annotations

import pytest

from tests.support.postgres import new_database_url
from tests.test_worker_kills import *  # noqa: F403  (its tests and fixtures, collected here again)


@pytest.fixture(scope="module")
def database_url() -> str:
    return new_database_url()
