"""Run the whole service in the foreground and supervise it (`python -m scripts.serve`, started by
scripts/serve.sh; the command lines come from videoservice/launch.py).

Children, each in its own process group, their output prefixed with a tag:
  redis   redis-server with AOF persistence under var/redis (skipped when REDIS_URL answers)
  web     Daphne serving videoservice.asgi (HTTP API, web UI, websocket lobby)
  worker  one Celery worker (prefork, 1 process, events on for Flower); on a host with GPUs one
          per GPU instead (gpu0, gpu1 ...: CUDA_VISIBLE_DEVICES pinned, node names apart)
  hooks   a Celery worker for webhook deliveries (threads), queue `webhooks`
  flower  Flower, the Celery monitor

A child that dies is restarted (with back-off; a child that keeps dying stops the service, as
during start-up). Ctrl-C / SIGTERM, at any moment (start-up included), stops the children, all
at once and Redis last: SIGTERM to each process group, then SIGKILL after a grace period. If
serve.py itself is killed (SIGKILL), the kernel kills its children (PR_SET_PDEATHSIG; Celery's
pool processes die with their parent the same way): no orphan stack is left to hold jobs.

Environment: videoservice/environment.py, `ServeEnvironment` (typed; the table in README.md,
"Configuration", is generated from it).

SERVE_ROLE (all): which part of a fleet this host runs (docs/deploy.md, "A fleet"):
  all     everything above (one machine)
  web     web, hooks and Flower (no worker): the web tier of a fleet
  worker  the worker(s) only, on a Redis, database and media storage that other hosts run
WORKER_GPUS (auto): auto = one worker per GPU that `nvidia-smi` lists (within CUDA_VISIBLE_DEVICES
when that is set), one CPU worker when there is none; a list (0,1,3) pins those; none = one
worker, no pinning.

HOST is passed on as BIND_ADDRESS: on any address but loopback the settings require
authentication, a real SECRET_KEY and ALLOWED_HOSTS, and Flower is only started behind basic
auth (FLOWER_BASIC_AUTH; Flower reads it from the environment, so it is not on the command line).
With REQUIRE_AUTH=1 on loopback Flower is behind basic auth too: FLOWER_BASIC_AUTH, or a generated
password shown in the start-up banner.

The worker's node name is `<first queue>-<PORT>@<host>` (`<first queue>-<PORT>-gpu<N>@<host>` per
GPU), so two stacks on one host (different
PORTs, one Redis) show up as two workers; which jobs a worker may take over does not depend on it
(worker/reaper.py).
"""
from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from videoservice.launch import BIN, celery_worker_argv, daphne_argv, flower_argv, is_loopback

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"redis": "31", "web": "32", "worker": "33", "hooks": "34", "flower": "35", "serve": "36"}
WORKER_STOP_GRACE_S = 20.0  # a warm Celery shutdown finishes the current denoising step
ROLES = ("all", "web", "worker")
MAX_RESTARTS = 5  # within RESTART_WINDOW_S
RESTART_WINDOW_S = 60.0

_print_lock = threading.Lock()
_tty = sys.stdout.isatty()


def say(tag: str, line: str) -> None:
    prefix = f"{tag:>6} |"
    if _tty:
        prefix = f"\033[{COLOURS.get(tag, '0')}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(f"{prefix} {line}\n")
        sys.stdout.flush()


PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = {"redis": signal.SIGTERM}  # redis flushes its append-only file; the rest is killed


def _die_with(parent_pid: int, sig: int):
    """preexec_fn: the child gets `sig` when serve.py dies, however it dies (Linux)."""
    def preexec():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
        except (OSError, AttributeError):  # not Linux: Ctrl-C / SIGTERM still stop everything
            return
        if os.getppid() != parent_pid:  # serve.py died before prctl took effect
            os._exit(1)
    return preexec


class Child:
    def __init__(self, tag: str, argv: list, env: dict, is_worker: bool = False):
        self.tag, self.argv, self.env, self.is_worker = tag, argv, env, is_worker
        self.proc: subprocess.Popen | None = None
        self.restarts: list = []
        self.ready = False  # a Celery worker said " ready."

    def start(self) -> None:
        check_stop()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with(os.getpid(), DEATH_SIGNAL.get(self.tag, signal.SIGKILL)),
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        say("serve", f"started {self.tag} (pid {self.proc.pid}): {' '.join(map(str, self.argv))}")

    def _pump(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self.ready = self.ready or (self.is_worker and line.endswith(" ready."))
            say(self.tag, line)
        proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the main process (Celery stops its pool itself), SIGKILL to the group after
        the grace period, and to any straggler left in the group once the main process is gone."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WORKER_STOP_GRACE_S if self.is_worker else 10.0)
            except subprocess.TimeoutExpired:
                say("serve", f"{self.tag} did not stop in time: SIGKILL")
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        say("serve", f"stopped {self.tag} (exit {self.proc.returncode})")


class Stop(BaseException):
    """Ctrl-C / SIGTERM. Not an Exception: the readiness probes catch those, and must not swallow it."""


_stop_requests: list = []  # the signals that asked serve.py to stop


def _on_signal(signum, frame):
    # Only noted here: an exception raised from a handler lands wherever the main thread is, a
    # finalizer run by the garbage collector included, which swallows it (a SIGTERM was lost so).
    _stop_requests.append(signal.Signals(signum).name)


def check_stop() -> None:
    if _stop_requests:
        raise Stop(_stop_requests[0])


def redis_reachable(url: str) -> bool:
    try:
        import redis
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(check, timeout: float, children: list, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_stop()
        if check():
            return
        for child in children:
            if not child.alive():
                raise SystemExit(f"{child.tag} exited (code {child.proc.returncode}) while waiting for {what}")
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def auth_required(host: str, env: dict) -> bool:
    """As the settings decide it: off loopback always, on loopback when REQUIRE_AUTH is on."""
    return not is_loopback(host) or env.get("REQUIRE_AUTH", "").strip().lower() in ("1", "true", "yes", "on")


def flower_command(host: str, port: int, env: dict) -> tuple:
    """(Flower's command line, the generated password or None). Whenever the service requires
    authentication, Flower does too: FLOWER_BASIC_AUTH (user:password) from `env` (required off
    loopback), else, on loopback, a generated one put into `env`."""
    auth = env.get("FLOWER_BASIC_AUTH", "").strip()
    generated = None
    if auth and any(":" not in pair or not pair.split(":", 1)[1] for pair in auth.split(",")):
        raise SystemExit("FLOWER_BASIC_AUTH must be user:password[,user2:password2]")
    if not auth and not is_loopback(host):
        raise SystemExit(f"HOST={host} is not loopback: set FLOWER_BASIC_AUTH=user:password so that Flower "
                         "is not open to the network")
    if not auth and auth_required(host, env):
        generated = secrets.token_urlsafe(16)
        env["FLOWER_BASIC_AUTH"] = f"flower:{generated}"
    # with FLOWER_BASIC_AUTH in its environment Flower asks for that user and password
    return flower_argv(host, port), generated


def visible_gpus(env: dict) -> list:
    """The GPUs to start one worker each on (WORKER_GPUS), as CUDA_VISIBLE_DEVICES values; [] for
    one unpinned worker. nvidia-smi, not torch: serve.py must not initialise CUDA itself."""
    choice = env.get("WORKER_GPUS", "auto").strip().lower()
    if choice == "none":
        return []
    if choice != "auto":
        gpus = [g.strip() for g in choice.split(",") if g.strip()]
        if not gpus:
            raise SystemExit(f"WORKER_GPUS={choice!r}: expected auto, none or a list such as 0,1")
        return gpus
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode:
        return []
    listed = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    pinned = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return [g for g in listed if g in pinned] if pinned else listed


def worker_children(queues: str, concurrency: int, port: int, env: dict) -> list:
    """One Celery worker, or one per GPU with that GPU alone visible to it."""
    def worker(tag: str, node: str, worker_env: dict) -> Child:
        return Child(tag, celery_worker_argv(queues, node, concurrency), worker_env, is_worker=True)

    name = f"{queues.split(',')[0]}-{port}"
    gpus = visible_gpus(env)
    if not gpus:
        return [worker("worker", f"{name}@%h", env)]
    return [worker(f"gpu{gpu}", f"{name}-gpu{gpu}@%h", {**env, "CUDA_VISIBLE_DEVICES": gpu}) for gpu in gpus]


def healthz(url: str):
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode(errors="replace")
    except Exception:
        return None, ""


def main() -> int:
    # the handlers first: a SIGTERM during start-up must stop it cleanly, and the import below
    # (pydantic) takes a second on a busy host
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    from videoservice.environment import ServeEnvironment, load

    config = load(ServeEnvironment)
    host, port, flower_port, redis_url = config.HOST, config.PORT, config.FLOWER_PORT, config.REDIS_URL
    queues, concurrency, role = config.WORKER_QUEUES, config.WORKER_CONCURRENCY, config.SERVE_ROLE
    ready_timeout = config.READY_TIMEOUT
    if role not in ROLES:
        say("serve", f"refusing to start: SERVE_ROLE={role!r} is not one of {', '.join(ROLES)}")
        return 1
    serves_web = role in ("all", "web")

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")
    env["REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["BIND_ADDRESS"] = host  # the settings require authentication off loopback
    try:
        flower_cmd, flower_password = flower_command(host, flower_port, env) if serves_web else (None, None)
        workers = worker_children(queues, concurrency, port, env) if role in ("all", "worker") else []
    except SystemExit as exc:
        say("serve", f"refusing to start: {exc}")
        return 1

    for name, p in (("PORT", port), ("FLOWER_PORT", flower_port)) if serves_web else ():
        if not port_free(host, p):
            raise SystemExit(f"{name}={p} is already in use on {host}: stop the other server or choose another {name}")

    children: list = []
    t0 = time.monotonic()
    try:
        if serves_web:  # a worker host leaves the schema to the web tier (two hosts migrating at once race)
            say("serve", "migrating the database")
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
            check_stop()

        if redis_reachable(redis_url):
            say("serve", f"using the Redis at {redis_url}")
        else:
            parsed = urlparse(redis_url)
            if role == "worker" or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise SystemExit(f"REDIS_URL={redis_url} does not answer (only a local Redis is started, "
                                 "and only with SERVE_ROLE=all or web)")
            data_dir = ROOT / config.REDIS_DIR  # (an absolute REDIS_DIR stays as it is)
            data_dir.mkdir(parents=True, exist_ok=True)
            redis = Child("redis", [
                "redis-server", "--bind", "127.0.0.1", "--port", str(parsed.port or 6379),
                "--dir", str(data_dir), "--appendonly", "yes", "--daemonize", "no",
                "--save", "300 10", "--loglevel", "warning",
            ], env)
            redis.start()
            children.append(redis)
            wait_until(lambda: redis_reachable(redis_url), 30, children, "redis")

        if serves_web:
            web = daphne_argv(host, port, config.WEBSOCKET_MAX_MESSAGE_BYTES, proxy_headers=True)
            children.append(Child("web", web, env))
        children.extend(workers)
        if serves_web:
            # webhook deliveries: threads of their own, so that a slow receiver never holds a generation up
            children.append(Child("hooks", celery_worker_argv("webhooks", f"webhooks-{port}@%h", 4, pool="threads"),
                                  env))
            children.append(Child("flower", flower_cmd, env))
        for child in children:
            if not child.proc:
                child.start()

        display_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{display_host}:{port}"
        state = {"body": ""}

        def ready():  # database and Redis answer, and so does a worker (ours, or with SERVE_ROLE=web anyone's)
            if not all(worker.ready for worker in workers):
                return False
            if not serves_web:
                return True
            state["status"], state["body"] = healthz(f"{base}/healthz?timeout=1")
            try:
                return state["status"] == 200 and (role == "web" or bool(json.loads(state["body"]).get("workers")))
            except ValueError:
                return False

        wait_until(ready, ready_timeout, children, f"{base}/healthz" if serves_web else "the workers")
        say("serve", f"ready in {time.monotonic() - t0:.1f} s: {state['body'][:300]}")
        banner = [""]
        if serves_web:
            banner += [
                f"  Web UI     {base}/",
                f"  Websocket  ws://{display_host}:{port}/ws/lobby/",
                f"  API        {base}/api/models  {base}/api/jobs",
                f"  Health     {base}/healthz",
                f"  Flower     http://{display_host}:{flower_port}/"
                + (f"  (user flower, password {flower_password})" if flower_password else ""),
            ]
        banner += [f"  Worker     {child.argv[child.argv.index('-n') + 1].replace('%h', socket.gethostname())}"
                   + (f"  (CUDA_VISIBLE_DEVICES={child.env['CUDA_VISIBLE_DEVICES']})" if child.tag.startswith("gpu")
                      else "") for child in workers]
        banner += [f"  Redis      {redis_url}", "", "  Press Ctrl-C to stop.", ""]
        with _print_lock:
            print("\n".join(banner), flush=True)

        while True:  # supervise: restart what dies, give up on a crash loop
            time.sleep(1)
            check_stop()
            for child in children:
                if child.alive():
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(child.restarts) > MAX_RESTARTS:
                    raise SystemExit(f"{child.tag} keeps dying (exit {child.proc.returncode}); stopping")
                say("serve", f"{child.tag} exited with {child.proc.returncode}; restarting")
                time.sleep(min(2 ** len(child.restarts) / 4, 5))
                child.start()
    except Stop as exc:
        say("serve", f"{exc}: stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        say("serve", f"failed: {exc}")
        return 1
    except SystemExit as exc:
        say("serve", f"failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(children)


def stop_all(children: list) -> None:
    """Every child but Redis at once, each within its own grace period (in turn, a slow start-up
    made the graces add up to most of a minute), then Redis, which a worker's warm shutdown
    still talks to."""
    stopping = [threading.Thread(target=child.stop) for child in children if child.tag != "redis"]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
    for child in children:
        if child.tag == "redis":
            child.stop()


if __name__ == "__main__":
    sys.exit(main())
