"""A real PostgreSQL server for the suites (Debian's `postgresql` package; scripts/test.sh installs it).

One cluster per test process, in a temporary folder, on a free port, started on first use and
stopped at exit; every `Stack` gets a database of its own in it (`new_database_url`). The server
refuses to run as root, so as root its files belong to the `postgres` user the package creates.

TEST_DATABASE=postgres makes every `Stack` use it, each database a copy of one migrated template
(scripts/test.sh runs the faults and queue suites that way after the whole suite on SQLite).
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

from tests.support.stack import free_port

_server: "PostgresServer | None" = None


def wanted() -> bool:
    return os.environ.get("TEST_DATABASE", "sqlite") == "postgres"


def bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does)")
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self):
        self.bin = bin_dir()
        self.dir = tempfile.mkdtemp(prefix="videoservice-pg-")
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # fsync off: a test cluster lives as long as its tests; max_connections for many workers + webs
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300", "start")
        atexit.register(self.stop)

    def _run(self, tool: str, *args: str) -> str:
        argv = [os.path.join(self.bin, tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if out.returncode:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
        return out.stdout

    def sql(self, statement: str) -> str:
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                         "-v", "ON_ERROR_STOP=1", "-q", "-c", statement)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        if os.path.isdir(self.data):
            try:
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def server() -> PostgresServer:
    global _server
    if _server is None:
        _server = PostgresServer()
    return _server


def new_database_url() -> str:
    """A fresh, empty database on this process's server."""
    return server().create_database()


_template: str | None = None


def copy_of_template(url: str, migrate) -> None:
    """Replace the empty database at `url` (from new_database_url) with a copy of this process's
    migrated template, made on first use with `migrate(template_url)`."""
    global _template
    pg = server()
    if _template is None:
        template_url = pg.create_database()
        migrate(template_url)
        _template = template_url.rsplit("/", 1)[1]
    name = url.rsplit("/", 1)[1]
    pg.sql(f'DROP DATABASE "{name}"')
    pg.sql(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"')
