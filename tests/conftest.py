"""Fixtures that run the service on real parts: redis-server, a Celery worker process and Daphne.

`live_service` (session scope, started on first use) gives each part its own free port and a
temporary folder for the SQLite database, media and logs; everything is stopped at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Every service process reads this model configuration (VIDEO_MODELS_CONFIG): a tiny LTX-Video
# (T2V + I2V) next to the built-in model. Registering it loads nothing; its checkpoint folder is
# built, and a worker for its queue started, only by tests/test_service_diffusers.py.
TINY_LTX = "tiny-ltx"
TINY_LTX_QUEUE = "tiny-ltx-cpu"
TINY_LTX_ENTRY = {
    "path": "checkpoints/tiny-ltx", "pipeline": ["ltx", "ltx-i2v"], "dtype": "float32",
    "defaults": {"steps": 2, "width": 32, "height": 32, "frames": 9, "fps": 8},
    "limits": {"min_size": 32, "max_size": 128, "max_frames": 25, "max_steps": 1000},
    "max_sequence_length": 16, "queue": TINY_LTX_QUEUE,
}


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
    def __init__(self, name: str, argv: list, env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def live_service(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed (apt-get install redis-server; scripts/test.sh does)")
    tmp = tmp_path_factory.mktemp("service")
    redis_port, web_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "videoservice.settings",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # two small cores, often busy: one torch thread is faster
        "WEBSOCKET_MAX_MESSAGE_BYTES": str(WS_MAX_MESSAGE_BYTES),
        "LOG_LEVEL": "INFO",
    })
    env.pop("DEBUG", None)
    models_config = tmp / "models.json"  # relative paths resolve against its folder
    models_config.write_text(json.dumps({TINY_LTX: TINY_LTX_ENTRY}))
    env["VIDEO_MODELS_CONFIG"] = str(models_config)
    procs: list = []
    try:
        redis = Proc("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--daemonize", "no"], env, tmp)
        procs.append(redis)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                       check=True, timeout=120)
        worker = Proc("worker", [str(BIN / "celery"), "-A", "worker", "worker", "-P", "prefork", "-c", "1",
                                 "-Q", "builtin,describe", "-E", "-n", "test-builtin@%h", "--without-mingle",
                                 "--without-gossip", "--loglevel", "INFO"], env, tmp)
        procs.append(worker)
        web = Proc("web", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(web_port),
                           "--websocket-max-message-size", str(WS_MAX_MESSAGE_BYTES),
                           # browsers send a message as one frame; daphne's frame cap is 1 MiB too
                           "--websocket-max-frame-size", str(WS_MAX_MESSAGE_BYTES),
                           "videoservice.asgi:application"], env, tmp)
        procs.append(web)
        base = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 120
        while True:
            for p in procs:
                if not p.alive():
                    pytest.fail(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
            try:
                status, _, body = http("GET", f"{base}/healthz?timeout=1", timeout=5)
                if status == 200 and json.loads(body)["workers"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service not ready:\nweb:\n{web.tail()}\nworker:\n{worker.tail()}")
            time.sleep(0.3)
        yield {
            "base": base,
            "ws": f"ws://127.0.0.1:{web_port}/ws/lobby/",
            "origin": base,
            "env": env,
            "tmp": tmp,
            "procs": {p.name: p for p in procs},
            "models_config": models_config,
            "tiny_ltx_path": tmp / "checkpoints" / "tiny-ltx",
        }
    finally:
        for p in reversed(procs):
            p.stop(grace=20 if p.name == "worker" else 5)


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
from django.contrib.auth import get_user_model
User = get_user_model()
User.objects.create_user("dave", password="dave-pass-Xy7!")
User.objects.create_superuser("root", password="root-pass-Qw3!")
"""


@pytest.fixture(scope="session")
def strict_service(live_service):
    """A second Daphne on the live service's Redis, database and worker, configured as when bound to a
    non-loopback address (STRICT_ENV). Users: alice, bob, carol (API tokens), boss (staff, token),
    dave (password, for session login), root (superuser with a password, for the admin)."""
    env = {**live_service["env"], **STRICT_ENV}
    tokens = {}
    for user, extra in (("alice", []), ("bob", []), ("carol", []), ("boss", ["--staff"])):
        out = subprocess.run([sys.executable, "manage.py", "create_api_token", user, "--create-user",
                              "--name", "tests", *extra], cwd=ROOT, env=env, check=True, timeout=120,
                             capture_output=True, text=True)
        tokens[user] = out.stdout.strip()
    subprocess.run([sys.executable, "manage.py", "shell", "-c", STRICT_USERS], cwd=ROOT, env=env, check=True,
                   timeout=120)
    port = free_port()
    web = Proc("web-strict", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                              "--websocket-max-message-size", str(WS_MAX_MESSAGE_BYTES),
                              "--websocket-max-frame-size", str(WS_MAX_MESSAGE_BYTES),
                              "videoservice.asgi:application"], env, live_service["tmp"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if not web.alive():
                pytest.fail(f"strict web exited:\n{web.tail()}")
            try:
                if http("GET", f"{base}/healthz?timeout=1", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"strict web not ready:\n{web.tail()}")
            time.sleep(0.3)
        yield {"base": base, "ws": f"ws://127.0.0.1:{port}/ws/lobby/", "origin": base, "env": env,
               "tokens": tokens, "proc": web}
    finally:
        web.stop(grace=5)
