"""tests/test_queue.py again on a real PostgreSQL server (tests/support/postgres.py): the database is
under load there: the queue's order, pause, retry and turns (not the webhooks, metrics and logs).
Its own module, so that it runs in parallel with the SQLite run (scripts/test.sh)."""
from __future__ import annotations

import pytest

from tests.support.postgres import new_database_url
from tests.test_queue import (  # noqa: F401  (collected here again)
    queue,
    test_one_owners_many_jobs_do_not_hold_back_another_owners_one,
    test_priority_order_holds_and_raising_it_is_for_staff,
    test_pause_holds_jobs_through_a_worker_kill_and_a_redis_restart_then_resume_runs_them,
    test_a_cancelled_job_is_retried_as_a_new_linked_job_that_succeeds,
    test_a_queued_row_without_a_turn_runs_on_an_idle_worker,
)


@pytest.fixture(scope="module")
def database_url() -> str:
    return new_database_url()
