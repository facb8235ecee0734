"""The one harness for the real stack: redis-server, the database, Daphne and Celery worker processes.

Every suite (and the benchmarks in bench/) builds its service from `Stack`: each part on a free
port, the SQLite database (or PostgreSQL, when `database_url` says so), media and logs in one
temporary folder. Parts can be killed and restarted (the faults suite does), more web processes or
workers added (the auth and diffusers suites do).

    with Stack(tmp, env={"MAX_QUEUED_JOBS": "12"}) as stack:
        stack.start()                      # redis, migrate, web, one worker (builtin,describe)
        status, headers, body = http("GET", stack.base + "/api/models")
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from videoservice.launch import celery_worker_argv, daphne_argv

ROOT = Path(__file__).resolve().parent.parent.parent
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def postgres_wanted() -> bool:
    """TEST_DATABASE=postgres: every Stack gets a database on a real PostgreSQL server (tests/support/postgres.py)."""
    return os.environ.get("TEST_DATABASE", "sqlite") == "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, headers=None, timeout: float = 10.0):
    """(status, headers (an email.message.Message: case-insensitive, get_all), bytes); no raise on 4xx/5xx."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class Proc:
    """A child process in its own session, its output in `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: list, env: dict, log_dir: Path, cwd: Path = ROOT):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a Celery worker: main and pool processes)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.stop()

    def terminate(self) -> None:
        """SIGTERM, without waiting (`stop` waits): several parts shut down at once."""
        if self.alive() and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if not self.log.closed:
            self.log.close()


def wait_for(check, timeout: float, what: str, procs=()) -> None:
    """Poll `check()` until it is true; fail early (with its log) when one of `procs` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} exited with {p.proc.returncode} while waiting for {what}:\n{p.tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.2)


ISSUE_TOKENS = """
import json
from django.contrib.auth import get_user_model
from videoservice.models import ApiToken
User = get_user_model()
print(json.dumps({{name: ApiToken.issue(User.objects.create_user(name, is_staff=staff), "tests")[1]
                  for name, staff in {users!r}}}))
"""


_sqlite_template: Path | None = None


def _migrated_sqlite_template(migrate) -> Path:
    """The session's migrated SQLite database, made on first use with `migrate(url)` by whichever test
    process needs it first while the others wait on the lock. TEST_SESSION_DIR is the folder the
    session's processes share (tests/conftest.py); without it this process makes its own."""
    global _sqlite_template
    if _sqlite_template is None:
        folder = os.environ.get("TEST_SESSION_DIR")
        if folder is None:
            folder = tempfile.mkdtemp(prefix="videoservice-db-template-")
            atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "migrated.sqlite3"
        with open(Path(folder) / "migrated.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                partial = path.with_name(f"migrating-{os.getpid()}.sqlite3")
                migrate(f"sqlite:///{partial}")
                with sqlite3.connect(partial) as db:  # (WAL mode: the schema must be in the main file to copy it)
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                os.replace(partial, path)
        _sqlite_template = path
    return _sqlite_template


class Stack:
    """One service: Redis, a database, Daphne processes and Celery workers, all in `tmp`."""

    def __init__(self, tmp: Path, env: dict | None = None, models: dict | None = None,
                 persist_redis: bool = False, database_url: str | None = None):
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis_port = free_port()
        self.persist_redis = persist_redis
        if database_url is None and postgres_wanted():
            from tests.support.postgres import new_database_url

            database_url = new_database_url()
        self.env = dict(os.environ)
        self.env.pop("DEBUG", None)
        self.env.update({
            "DJANGO_SETTINGS_MODULE": "videoservice.settings",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": database_url or f"sqlite:///{self.tmp / 'db.sqlite3'}",
            "MEDIA_ROOT": str(self.tmp / "media"),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",  # two small cores, often busy: one torch thread is faster
            "WEBSOCKET_MAX_MESSAGE_BYTES": str(WS_MAX_MESSAGE_BYTES),
            "LOG_LEVEL": "INFO",
        })
        if models is not None:
            self.models_config = self.tmp / "models.json"  # relative checkpoint paths resolve against its folder
            self.models_config.write_text(json.dumps(models))
            self.env["VIDEO_MODELS_CONFIG"] = str(self.models_config)
        self.env.update(env or {})
        self.redis: Proc | None = None
        self.webs: dict = {}  # name -> (Proc, port)
        self.workers: dict = {}  # name -> Proc (with .node)
        self.others: list = []
        self.starts = 0

    # ------------------------------------------------------------------ the whole thing
    def start(self, worker_queues: str | None = "builtin,describe", worker_name: str = "w1") -> "Stack":
        self.start_redis()
        self.migrate()
        self.start_web()
        if worker_queues:
            self.start_worker(worker_name, worker_queues, wait=False)
            self.wait_healthy(workers=[self.workers[worker_name].node])
        else:
            self.wait_healthy(workers=[])
        return self

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """The end of a test's service: workers are SIGKILLed (their warm shutdown took seconds of
        every suite's teardown, and no test reads anything a worker does after it), web processes and
        the rest get SIGTERM together, Redis last."""
        for proc in self.workers.values():
            proc.kill()
        parts = [*self.others, *(proc for proc, _ in self.webs.values())]
        for proc in parts:
            proc.terminate()
        for proc in parts:
            proc.stop(grace=5)
        if self.redis is not None:
            self.redis.stop(grace=5)
        self.workers.clear()
        self.webs.clear()

    @property
    def database(self) -> str:
        """"postgres" or "sqlite": what this stack's DATABASE_URL points at."""
        return "postgres" if self.env["DATABASE_URL"].startswith("postgres") else "sqlite"

    @property
    def base(self) -> str:
        return self.url("web")

    @property
    def ws(self) -> str:
        return self.ws_url("web")

    @property
    def origin(self) -> str:
        return self.base

    def url(self, web: str = "web") -> str:
        return f"http://127.0.0.1:{self.webs[web][1]}"

    def ws_url(self, web: str = "web", path: str = "/ws/lobby/") -> str:
        return f"ws://127.0.0.1:{self.webs[web][1]}{path}"

    def _name(self, name: str) -> str:
        self.starts += 1
        return f"{name}-{self.starts}"

    # ------------------------------------------------------------------ redis
    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--daemonize", "no"]
        if self.persist_redis:
            (self.tmp / "redis").mkdir(exist_ok=True)
            argv += ["--dir", str(self.tmp / "redis"), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        self.redis = Proc(self._name("redis"), argv, self.env, self.tmp)

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", self.redis_port), 1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        wait_for(pong, 30, "redis", [self.redis])

    def kill_redis(self) -> None:
        self.redis.kill()

    # ------------------------------------------------------------------ database
    def migrate(self, url: str | None = None) -> None:
        """The schema of the stack's database (or of the one at `url`), copied from this test process's
        migrated template (`manage.py migrate` runs once per process and database kind, not once per
        stack: ~4 s each on a busy machine)."""
        url = url or self.env["DATABASE_URL"]
        if url.startswith("postgres"):
            from tests.support.postgres import copy_of_template

            copy_of_template(url, lambda template_url: self._migrate_into(template_url))
        else:
            template = _migrated_sqlite_template(self._migrate_into)
            shutil.copyfile(template, url.removeprefix("sqlite:///"))

    def _migrate_into(self, database_url: str) -> None:
        env = {key: value for key, value in self.env.items() if key != "VIDEO_MODELS_CONFIG"}
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True,
                       timeout=180, capture_output=True, env={**env, "DATABASE_URL": database_url})

    def manage(self, *args, env: dict | None = None) -> str:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**self.env, **(env or {})},
                             check=True, timeout=180, capture_output=True, text=True)
        return out.stdout

    def issue_tokens(self, *names: str, staff: tuple = ()) -> dict:
        """New users `names` (those in `staff` are staff) and an API token each, made in one
        `manage.py shell`: name -> token."""
        made = self.manage("shell", "-c", ISSUE_TOKENS.format(users=[(name, name in staff) for name in names]))
        return json.loads(made.strip().splitlines()[-1])

    def row(self, job_id: str) -> dict:
        """The job's row straight from the database (fields the API does not show: attempts, lease)."""
        rows = self.select("SELECT * FROM videoservice_job WHERE id = ?", (uuid.UUID(job_id),))
        return rows[0]

    def select(self, sql: str, params: tuple = ()) -> list:
        """Rows (dicts) of a query on the stack's database, read in this process: no `manage.py shell`
        start (~1 s CPU) for a test that only looks. `?` placeholders; UUIDs as the backend stores them."""
        if self.env["DATABASE_URL"].startswith("postgres"):
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1),
                                 row_factory=dict_row) as db:
                rows = db.execute(sql.replace("?", "%s"), params).fetchall()
            return [{key: (value.hex if isinstance(value, uuid.UUID) else value) for key, value in row.items()}
                    for row in rows]
        path = self.env["DATABASE_URL"].removeprefix("sqlite:///")
        with sqlite3.connect(path, timeout=30) as db:
            db.row_factory = sqlite3.Row
            params = tuple(value.hex if isinstance(value, uuid.UUID) else value for value in params)
            return [dict(row) for row in db.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------ web
    def start_web(self, name: str = "web", env: dict | None = None, port: int | None = None,
                  launcher: tuple = ()) -> Proc:
        """`launcher` goes in front of the daphne command (test_storage_faults: a full media folder)."""
        port = port or free_port()
        proc = Proc(self._name(name), [*launcher, *daphne_argv("127.0.0.1", port, WS_MAX_MESSAGE_BYTES)],
                    {**self.env, **(env or {})}, self.tmp)
        self.webs[name] = (proc, port)
        return proc

    def web(self, name: str = "web") -> Proc:
        return self.webs[name][0]

    def health(self, web: str = "web") -> dict:
        status, _, body = http("GET", f"{self.url(web)}/healthz?timeout=1", timeout=5)
        return {"status_code": status, **json.loads(body)}

    def wait_healthy(self, workers=(), web: str = "web", timeout: float = 120) -> None:
        """Until /healthz answers 200 and lists every node name in `workers`."""
        def ready() -> bool:
            health = self.health(web)
            return health["status_code"] == 200 and set(workers) <= set(health["workers"])
        wait_for(ready, timeout, f"{self.url(web)}/healthz with workers {list(workers)}",
                 [self.web(web), *[self.workers[n] for n in self.workers]])

    # ------------------------------------------------------------------ workers
    def start_worker(self, name: str = "w1", queues: str = "builtin,describe", concurrency: int = 1,
                     env: dict | None = None, wait: bool = True, node: str | None = None,
                     pool: str = "prefork", launcher: tuple = (), cwd: Path = ROOT) -> Proc:
        """`launcher` goes in front of the celery command (the fleet suite's other "host"); a `cwd`
        other than the repository finds the code through PYTHONPATH."""
        node = node or f"{name}@%h"
        proc = Proc(self._name(f"worker-{name}"), [*launcher, *celery_worker_argv(queues, node, concurrency, pool)],
                    {**self.env, "PYTHONPATH": str(ROOT), **(env or {})}, self.tmp, cwd=cwd)
        proc.node = node.replace("%h", socket.gethostname())
        self.workers[name] = proc
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: Proc, timeout: float = 90) -> None:
        wait_for(lambda: " ready." in proc.tail(100000), timeout, f"{proc.name} ready", [proc])

    def kill_worker(self, name: str = "w1") -> None:
        """SIGKILL the whole worker: main process and pool processes at once (its process group)."""
        self.workers.pop(name).kill()

    def stop_worker(self, name: str) -> None:
        self.workers.pop(name).stop(grace=20)

    def pool_pids(self, name: str = "w1") -> list:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.workers[name].pid)], capture_output=True,
                             text=True).stdout
        return sorted(int(p) for p in out.split())

    # ------------------------------------------------------------------ jobs over HTTP
    def job(self, job_id: str, headers=None) -> dict:
        status, _, body = http("GET", f"{self.base}/api/jobs/{job_id}", headers=headers)
        assert status == 200, body
        return json.loads(body)["job"]

    def wait_job(self, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 90,
                 headers=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id, headers)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(0.2)
