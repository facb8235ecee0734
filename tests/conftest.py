"""Fixtures that run the service on real parts (tests/support/stack.py): redis-server, a Celery
worker process and Daphne.

`live_service` (session scope, started on first use) is one `Stack` shared by the suites that do not
kill parts of it; `strict_service` adds a second Daphne configured as off loopback.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# One torch thread in the test processes (set before anything imports torch), as in the stacks'
# processes (tests/support/stack.py): four test processes share two cores, and a second thread
# only waits for the core the first one holds.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from xdist.scheduler import LoadFileScheduling  # noqa: E402

from tests.support.stack import ROOT, Stack, http, wait_for  # noqa: E402

# Every service process reads this model configuration (VIDEO_MODELS_CONFIG): a tiny LTX-Video
# (T2V + I2V) next to the built-in model. Its checkpoint folder is built before the service starts
# (every process checks the configured folders at start-up); a worker for its queue is started only
# by tests/test_service_diffusers.py.
TINY_LTX = "tiny-ltx"
TINY_LTX_QUEUE = "tiny-ltx-cpu"
TINY_LTX_ENTRY = {
    "path": "checkpoints/tiny-ltx", "pipeline": ["ltx", "ltx-i2v"], "dtype": "float32",
    "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9, "fps": 8},
    "limits": {"min_size": 32, "max_size": 128, "max_frames": 25, "max_steps": 1000},
    "max_sequence_length": 16, "queue": TINY_LTX_QUEUE,
}


def pytest_configure(config):
    """A folder the session's test processes share (xdist workers inherit the environment of the
    process that starts them): the migrated SQLite template is made once there (tests/support/stack.py)."""
    if not hasattr(config, "workerinput"):
        folder = tempfile.mkdtemp(prefix="videoservice-session-")
        os.environ["TEST_SESSION_DIR"] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


# The test ladder (markers in pyproject.toml): `./scripts/test.sh quick` runs what is neither.
# A module is e2e when it starts the service's own processes (a Stack, serve.py, manage.py,
# Chromium), else model when it runs real models or pipelines in-process (torch: seconds a test);
# a test that uses a shared stack or the browser is e2e wherever it is. Read from the source, so
# that a new test module is sorted without a list to keep up to date.
E2E_SIGNS = re.compile(r"\b(Stack|fault_service|Served|Proc|playwright_api|live_service|strict_service)\b"
                       r"|manage\.py")
MODEL_SIGNS = re.compile(r"^\s*(import (torch|diffusers|tiny_checkpoints|tiny_vlm)\b|from (diffusers|tiny_checkpoints|"
                         r"tiny_vlm)\b|from generator\.(builtin|understanding|diffusers_backend|families|longvideo|"
                         r"metrics|evaluate|model_config)\b|from generator import (longvideo|metrics|evaluate)\b)",
                         re.M)
E2E_FIXTURES = {"live_service", "strict_service", "browser"}
QUICK = "not e2e and not model"


REPEATS = re.compile(r"^from tests\.(test_\w+) import", re.M)  # a suite run again (test_x_on_postgres)


@functools.cache
def tier_of(path: Path) -> str | None:
    source = path.read_text()
    if repeated := REPEATS.search(source):
        return tier_of(path.with_name(repeated.group(1) + ".py"))
    return "e2e" if E2E_SIGNS.search(source) else "model" if MODEL_SIGNS.search(source) else None


def pytest_ignore_collect(collection_path, config):
    """The quick tier does not even import the modules it would leave out (torch, Playwright)."""
    if config.getoption("markexpr") == QUICK and collection_path.name.startswith("test_") \
            and collection_path.suffix == ".py" and tier_of(collection_path) is not None:
        return True
    return None


# Scheduling (`--dist loadfile --no-loadscope-reorder`, scripts/test.sh): a module's tests stay in one
# process (its module-scoped stack with them), and modules start in this order: the longest first
# (they are the critical path), then the rest of the real-stack tests, then the in-process ones.
# A module missing from LONGEST only starts later; nothing else depends on the list.
LONGEST = ("test_contract",  # the first module of the session stacks' unit (SharedStackScheduling), ~180 s
           "test_worker_loss_on_postgres", "test_worker_kills", "test_worker_loss", "test_fleet", "test_model_faults",
           "test_service_families", "test_serve", "test_browser", "test_live", "test_queue", "test_redis_faults",
           "test_model_families", "test_generator", "test_database_faults", "test_queue_on_postgres",
           "test_generator_cli", "test_worker_kills_on_postgres", "test_queue_caps", "test_queue_caps_on_postgres")


def start_order(item) -> tuple:
    module = item.module.__name__.rpartition(".")[2]
    tier = 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("model") else 2
    return (LONGEST.index(module) if module in LONGEST else len(LONGEST), tier)


# The session stacks (live_service, strict_service) start once per test process that uses them: the
# modules that use either run as one unit, so one process starts them instead of every process (each
# start: a worker loading the built-in model, Daphne, ~20 s of CPU with the jobs it serves).
SHARED_STACK_USE = re.compile(r"\b(strict_service|live_service)\b")


@functools.cache
def shared_stack_unit(path: Path) -> str | None:
    return "session-stacks" if SHARED_STACK_USE.search(path.read_text()) else None


class SharedStackScheduling(LoadFileScheduling):
    """--dist loadfile, but the modules that use the session stacks form one unit."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return shared_stack_unit(Path(self.config.rootpath, module)) or module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "loadfile":
        return SharedStackScheduling(config, log)
    return None


def pytest_collection_modifyitems(items):
    for item in items:
        tier = tier_of(Path(item.module.__file__))
        if tier == "e2e" or E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
        elif tier == "model":
            item.add_marker(pytest.mark.model)
    items.sort(key=start_order)  # stable: collection order within a module


@pytest.fixture(scope="module")
def database_url() -> str | None:
    """The database of a suite's own stack: SQLite (None); TEST_DATABASE=postgres puts every stack on
    PostgreSQL. The suites where the database is under load (claims, leases, the reaper's sweeps, queue
    order, the caps) run again as `<suite>_on_postgres`, which overrides this with a PostgreSQL one."""
    return None


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, driven by Playwright) for a module's tests; each test opens its
    own context. Not one per session: Playwright's sync API holds an event loop while it runs, and
    the asyncio tests that share the test process need it gone."""
    from playwright import sync_api

    if not Path(CHROMIUM).exists():  # scripts/test.sh installs it: a missing browser is a failure, not a skip
        pytest.fail(f"{CHROMIUM} not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def live_service(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed (apt-get install redis-server; scripts/test.sh does)")
    # live jobs (the Python client's and the browser's Live mode) keep 1 s ahead of playback and report
    # every chunk, so that a steer shows within the tests' patience
    stack = Stack(tmp_path_factory.mktemp("service"), models={TINY_LTX: TINY_LTX_ENTRY},
                  env={"LIVE_MAX_LEAD_S": "1", "LIVE_STATUS_EVERY": "1"})
    stack.tiny_ltx_path = stack.tmp / "checkpoints" / "tiny-ltx"
    from tests.tiny_checkpoints import save_tiny_checkpoint

    save_tiny_checkpoint("ltx", str(stack.tiny_ltx_path))
    try:
        stack.start(worker_queues="builtin,describe", worker_name="test-builtin")
        yield stack
    finally:
        stack.stop()


# The settings a server bound to a public address runs with (authentication required), with small
# limits so that tests reach them. Plain HTTP: HTTPS=0 (the deploy check is in test_settings.py).
STRICT_ENV = {
    "BIND_ADDRESS": "0.0.0.0",
    "SECRET_KEY": "strict-test-" + "k3Y9#x!Q" * 8,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "HTTPS": "0",
    "SUBMISSIONS_PER_MINUTE": "4",
    "WS_MESSAGES_PER_MINUTE": "40",
    "MAX_VIDEO_PIXELS": "40000",
}
STRICT_USERS = """
import json
from django.contrib.auth import get_user_model
from videoservice.models import ApiToken
User = get_user_model()
User.objects.create_user("dave", password="dave-pass-Xy7!")
User.objects.create_superuser("root", password="root-pass-Qw3!")
tokens = {}
for name in ("alice", "bob", "carol", "erin", "boss"):
    user = User.objects.create_user(name, is_staff=name == "boss")
    tokens[name] = ApiToken.issue(user, "tests")[1]
print(json.dumps(tokens))
"""


@pytest.fixture(scope="session")
def strict_service(live_service):
    """A second Daphne on the live service's Redis, database and worker, configured as when bound to a
    non-loopback address (STRICT_ENV). Users: alice, bob, carol, erin (API tokens), boss (staff, token),
    dave (password, for session login), root (superuser with a password, for the admin)."""
    stack = live_service
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", STRICT_USERS], cwd=ROOT,
                         env={**stack.env, **STRICT_ENV}, check=True, timeout=120, capture_output=True, text=True)
    tokens = json.loads(out.stdout.strip().splitlines()[-1])
    web = stack.start_web("strict", env=STRICT_ENV)
    base = stack.url("strict")
    try:
        wait_for(lambda: http("GET", f"{base}/healthz?timeout=1", timeout=5)[0] == 200, 120, "strict web", [web])
        yield StrictService(stack, tokens)
    finally:
        web.stop(grace=5)


class StrictService:
    """The strict Daphne's addresses, with the stack it shares and the users' API tokens."""

    def __init__(self, stack: Stack, tokens: dict):
        self.stack, self.tokens = stack, tokens
        self.base = self.origin = stack.url("strict")
        self.ws = stack.ws_url("strict")
        self.env = {**stack.env, **STRICT_ENV}
