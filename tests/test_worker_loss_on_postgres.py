"""tests/test_worker_loss.py again on a real PostgreSQL server (tests/support/postgres.py): the database is
under load there: the leases and the reaper's sweeps.
Its own module, so that it runs in parallel with the SQLite run (scripts/test.sh)."""
from __future__ import annotations

import pytest

from tests.support.postgres import new_database_url
from tests.test_worker_loss import (  # noqa: F401  (collected here again)
    faults,
    test_periodic_reaper_of_another_worker_requeues_the_job_of_a_vanished_worker,
    test_task_running_longer_than_the_visibility_timeout_runs_once,
    test_frozen_worker_taken_for_dead_loses_its_lease_and_stores_nothing,
    test_a_worker_with_the_same_name_does_not_take_over_a_live_workers_job,
    test_a_cancel_accepted_before_the_worker_died_is_final,
)


@pytest.fixture(scope="module")
def database_url() -> str:
    return new_database_url()
