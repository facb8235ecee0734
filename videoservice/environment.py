"""Every environment variable the service reads, typed, with its default and meaning, declared once:
`ServeEnvironment` (scripts/serve.py, command 1) and `ServiceEnvironment` (the Django settings, in
every web and worker process). A value of the wrong type stops start-up with the variable's name.

The tables in README.md ("Configuration") and docs/deploy.md ("Environment") are generated from
these classes; tests/test_docs.py fails when they drift:

    python -m videoservice.environment --write      # rewrite the tables in place
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-insecure-3c1b0f8e-videoservice-change-me"


def comma_list(value: str) -> list:
    return [item.strip() for item in value.split(",") if item.strip()]


def var(default, meaning: str, shown: Optional[str] = None, readme: bool = False):
    """A variable: its default, what it does, how the default reads in the tables (`shown`), and
    whether README's short table lists it too (docs/deploy.md lists all)."""
    return Field(default, description=meaning, json_schema_extra={"shown": shown, "readme": readme})


class _Environment(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore",
                                      validate_default=False)


class ServeEnvironment(_Environment):
    """Read by `./scripts/serve.sh` (scripts/serve.py)."""

    HOST: str = var("127.0.0.1", "address Daphne and Flower bind to (passed to the settings as `BIND_ADDRESS`). On "
                    "loopback anyone local may use the service anonymously; on any other address (`0.0.0.0`) "
                    "sign-in or an API token is required, and `SECRET_KEY`, `ALLOWED_HOSTS` and "
                    "`FLOWER_BASIC_AUTH` must be set; put a TLS proxy in front", readme=True)
    FLOWER_BASIC_AUTH: str = var("", "`user:password` for Flower; required when `HOST` is not loopback",
                                 shown="empty", readme=True)
    PORT: int = var(8000, "Daphne: web UI, HTTP API, websocket", readme=True)
    FLOWER_PORT: int = var(5555, "Flower", readme=True)
    REDIS_URL: str = var("redis://127.0.0.1:6379/0", "broker, result store and channel layer; when it answers, no "
                         "Redis is started; otherwise a local `redis-server` is started with its data (AOF) in "
                         "`REDIS_DIR`", readme=True)
    REDIS_DIR: str = var("var/redis", "where the Redis that serve.py starts keeps its data", readme=True)
    WORKER_QUEUES: str = var("builtin,describe,celery", "queues the started worker consumes (one queue per model; "
                             "`describe` for video understanding)", readme=True)
    WORKER_CONCURRENCY: int = var(1, "worker processes (keep 1 per GPU)", readme=True)
    WORKER_GPUS: str = var("auto", "one worker per GPU `nvidia-smi` lists, each with `CUDA_VISIBLE_DEVICES` pinned "
                           "(one CPU worker without GPUs); `0,2` picks GPUs; `none`: one unpinned worker",
                           readme=True)
    SERVE_ROLE: str = var("all", "`web` (Daphne, webhooks, Flower) or `worker` (workers only) for the hosts of a "
                          "fleet (docs/deploy.md, \"A fleet\")", readme=True)
    WEBSOCKET_MAX_MESSAGE_BYTES: int = var(64 * 1024 * 1024, "Daphne's websocket message (and frame) cap; "
                                           "completions carry the whole MP4 in base64", readme=True)
    READY_TIMEOUT: float = var(180.0, "seconds to wait for `GET /healthz` at start-up", readme=True)


class ServiceEnvironment(_Environment):
    """Read by the Django settings (videoservice/settings.py) in every web and worker process."""

    # ---- who may use it (docs/deploy.md, "Authentication")
    SECRET_KEY: str = var(DEV_SECRET_KEY, "required off loopback: 50+ random characters (start-up refuses "
                          "otherwise)", shown="a development key", readme=True)
    DEBUG: bool = var(False, "Django's debug mode (never off loopback)")
    BIND_ADDRESS: str = var("127.0.0.1", "the address Daphne listens on (serve.py sets it from `HOST`): loopback "
                            "allows anonymous use; any other address requires sign-in or a token, a real "
                            "`SECRET_KEY` and an explicit `ALLOWED_HOSTS`")
    ALLOWED_HOSTS: str = var("localhost,127.0.0.1,[::1]", "host names served, comma separated; the websocket "
                             "`Origin` is checked against it; off loopback it must be set explicitly (no `*`)",
                             readme=True)
    CSRF_TRUSTED_ORIGINS: str = var("", "comma separated origins (`https://video.example.org`) behind a TLS proxy",
                                    shown="empty", readme=True)
    REQUIRE_AUTH: Optional[bool] = var(None, "sign-in or an API token for everything; may be turned on on "
                                       "loopback, never off elsewhere", shown="`0` on loopback, `1` elsewhere")
    HTTPS: Optional[bool] = var(None, "served over TLS (directly or by a proxy): SSL redirect, secure cookies, HSTS",
                                shown="`0` on loopback, `1` elsewhere", readme=True)
    SECURE_SSL_REDIRECT: bool = var(True, "with `HTTPS`: redirect plain HTTP (not `/healthz`)")
    SECURE_HSTS_SECONDS: int = var(31536000, "with `HTTPS`: HSTS max-age")
    SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = var(True, "with `HTTPS`: HSTS includeSubDomains")
    SECURE_HSTS_PRELOAD: bool = var(True, "with `HTTPS`: HSTS preload")
    SECURE_PROXY_SSL_HEADER: bool = var(False, "`1`: trust `X-Forwarded-Proto: https` from the proxy in front")
    LOGIN_FAILURES_PER_ACCOUNT: int = var(10, "failed sign-ins of one account within `LOGIN_FAILURE_WINDOW_S` "
                                          "after which it is refused (logged)")
    LOGIN_FAILURES_PER_ADDRESS: int = var(50, "failed sign-ins from one client address within "
                                          "`LOGIN_FAILURE_WINDOW_S` after which it is refused")
    LOGIN_FAILURE_WINDOW_S: int = var(900, "the window failed sign-ins are counted in")
    # ---- storage
    DATABASE_URL: str = var("", "`sqlite:///ABS/PATH` or `postgres://user:pass@host:5432/name` (psycopg)",
                            shown="`sqlite:///var/db.sqlite3`", readme=True)
    SQLITE_PATH: str = var("", "the SQLite file when `DATABASE_URL` is unset", shown="`var/db.sqlite3`")
    DB_CONN_MAX_AGE: int = var(60, "seconds a database connection is kept for reuse")
    DB_BUSY_TIMEOUT_S: float = var(30.0, "SQLite: how long a write waits for another's lock before it fails (the "
                                   "API answers 503 + Retry-After)")
    DB_RETRY_S: float = var(300.0, "how long a worker retries a job's final database write (it skips a progress "
                            "write)")
    STATIC_ROOT: str = var("", "where `collectstatic` puts static files", shown="`var/static`")
    MEDIA_ROOT: str = var("", "where videos, previews and start images are stored", shown="`var/media`",
                          readme=True)
    MEDIA_URL: str = var("/media/", "URL prefix of stored media")
    S3_BUCKET: str = var("", "store media in this S3-compatible bucket instead (AWS S3, MinIO, R2; "
                         "django-storages): every host then needs only the bucket; credentials from "
                         "`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or boto3's usual chain", shown="unset",
                         readme=True)
    S3_ENDPOINT_URL: str = var("", "MinIO / R2: `https://host:port` (unset: AWS)", shown="unset")
    S3_REGION: str = var("us-east-1", "the bucket's region")
    S3_PREFIX: str = var("", "a folder inside the bucket", shown="the bucket root")
    S3_URL_EXPIRE_S: int = var(3600, "lifetime of presigned download URLs")
    S3_DOWNLOADS: Literal["proxy", "redirect"] = var("proxy", "`proxy`: the web tier streams objects (with "
                                                     "Range); `redirect`: 302 to a presigned URL")
    # ---- Redis: channel layer, broker, results
    REDIS_URL: str = var("redis://127.0.0.1:6379/0", "channel layer, Celery broker and results")
    CELERY_BROKER_URL: str = var("", "the broker, if not `REDIS_URL`", shown="`REDIS_URL`")
    CELERY_RESULT_BACKEND: str = var("", "the result store, if not `REDIS_URL`", shown="`REDIS_URL`")
    CHANNEL_LAYER_MAX_CONNECTIONS: int = var(1000, "Redis connections one web process's channel layer may hold")
    CHANNEL_CAPACITY: int = var(500, "messages a channel (a connection) may have waiting")
    # ---- what clients may send (error codes in docs/protocol.md)
    WEBSOCKET_MAX_MESSAGE_BYTES: Optional[int] = var(None, "what Daphne's `--websocket-max-message-size` is set "
                                                     "to (it also caps what the server sends: base64 completions)",
                                                     shown="`67108864`")
    WEBSOCKET_MAX_MESSAGE_SIZE: Optional[int] = var(None, "the older name of `WEBSOCKET_MAX_MESSAGE_BYTES`",
                                                    shown="unset")
    WS_MAX_CLIENT_MESSAGE_BYTES: int = var(12 * 1024 * 1024, "largest message (or HTTP body) a client may send "
                                           "-> `too_large`", readme=True)
    MAX_PROMPT_CHARS: int = var(1000, "prompt length -> `invalid_field`", readme=True)
    MAX_IMAGE_BYTES: int = var(8 * 1024 * 1024, "start image file size -> `too_large`", readme=True)
    MAX_IMAGE_PIXELS: int = var(4096 * 4096, "start image width x height -> `too_large`", readme=True)
    MAX_VIDEO_PIXELS: int = var(2 ** 27, "frames x width x height of the final video -> `invalid_field`",
                                readme=True)
    MAX_INPUT_FRAME_PIXELS: int = var(4096 * 4096, "width x height of an uploaded video's frames -> `too_large`")
    MAX_INPUT_VIDEO_PIXELS: int = var(2 ** 33, "frames x width x height of an uploaded video (stated or estimated "
                                      "at upload; counted again while the worker decodes) -> `too_large`")
    MAX_QUEUED_JOBS: int = var(200, "waiting jobs of all owners -> `queue_full`", readme=True)
    MAX_QUEUED_PER_OWNER: int = var(20, "waiting jobs of one owner -> `queue_full`", readme=True)
    MAX_QUEUED_PER_ADDRESS: Optional[int] = var(None, "waiting anonymous jobs per client IP -> `queue_full`",
                                                shown="`MAX_QUEUED_PER_OWNER`", readme=True)
    SUBMISSIONS_PER_MINUTE: int = var(30, "accepted submissions per user (or anonymous owner) in any 60 s, counted "
                                      "in Redis -> `rate_limited`", readme=True)
    WS_MESSAGES_PER_MINUTE: int = var(600, "messages of any kind per websocket connection (a token bucket) -> "
                                      "`rate_limited`", readme=True)
    INLINE_VIDEO_MAX_BYTES: Optional[int] = var(None, "larger videos are announced by URL only (`video: null`)",
                                                shown="32 MiB, less if `WEBSOCKET_MAX_MESSAGE_BYTES` is lower")
    # ---- jobs and workers
    PROGRESS_INTERVAL_S: float = var(0.5, "at most one progress message per this many seconds per job")
    STREAM_VIDEO: bool = var(True, "`video_chunk` events and `/api/jobs/<id>/stream` while a job runs (`0`: one "
                             "MP4 at the end)", readme=True)
    DISPATCH_ORDER: Literal["fair", "fifo"] = var("fair", "the order waiting jobs run in: `fair` (front, priority, "
                                                  "then owners take turns) or `fifo` (docs/queue.md)", readme=True)
    WEBHOOK_ALLOW_PRIVATE: bool = var(False, "`1`: webhooks may point at loopback / private addresses (tests, LANs)",
                                      readme=True)
    WEBHOOK_MAX_ATTEMPTS: int = var(8, "tries of one webhook delivery (back-off 1, 2, 4 ... 60 s)", readme=True)
    WEBHOOK_TIMEOUT_S: float = var(10.0, "one webhook delivery, connection to response headers, in all")
    STREAM_IDLE_S: float = var(600.0, "`GET /api/jobs/<id>/stream` ends after this long without a piece (queued "
                               "behind others, or its worker lost)")
    JOB_TIME_LIMIT_S: int = var(3600, "hard limit of one job (the soft limit is 60 s earlier)")
    JOB_VISIBILITY_TIMEOUT_S: int = var(12 * 3600, "broker redelivery timeout; keep it above the longest queue "
                                        "wait + job")
    JOB_MAX_ATTEMPTS: int = var(2, "deliveries of one job (a worker lost mid-job re-queues it once)")
    JOB_HEARTBEAT_S: float = var(5.0, "how often the process running a job refreshes its heartbeat")
    JOB_HEARTBEAT_TIMEOUT_S: float = var(60.0, "a running job with an older heartbeat is settled by the reaper")
    JOB_REAPER_INTERVAL_S: float = var(30.0, "how often every worker's reaper looks (worker/reaper.py)")
    BROKER_RESTORE_INTERVAL_S: Optional[float] = var(None, "how often a worker sweeps for messages past the "
                                                     "visibility timeout", shown="kombu's ~100 s")
    WORKER_WARMUP: bool = var(True, "load the model of the worker's first queue right after start")
    WORKER_MAX_MEMORY_MB: int = var(8192, "a pool process whose peak memory passed this is replaced after its job "
                                    "(`0`: never)")
    # ---- live jobs (worker/live.py): endless video, steered while it plays
    LIVE_MAX_DURATION_S: float = var(1800.0, "the longest `max_duration_s` a live job may ask for")
    LIVE_DEFAULT_DURATION_S: float = var(300.0, "a live job's `max_duration_s` when not given (at most "
                                         "`LIVE_MAX_DURATION_S`)")
    LIVE_IDLE_S: float = var(30.0, "a live job ends when no subscriber has received a chunk for this long")
    LIVE_MAX_LEAD_S: float = var(2.0, "seconds of video a live job makes ahead of playback before it waits (a "
                                 "steer shows within about a chunk)")
    LIVE_STATUS_EVERY: int = var(2, "a `live_status` event (real-time factor, lead) every this many chunks")
    LIVE_MAX_PER_OWNER: int = var(1, "live jobs one owner may have queued or running (each holds a worker)")
    LOG_FORMAT: Literal["plain", "json"] = var("plain", "`json`: one JSON object per log line, with job_id, model "
                                               "and worker", readme=True)
    LOG_LEVEL: str = var("INFO", "the root logger's level")

    def public_bind_refusal(self, loopback: bool) -> Optional[str]:
        """Why the service must not start with these values (None: it may). Off loopback it faces a
        network: no anonymous use, a real SECRET_KEY, explicit ALLOWED_HOSTS, no DEBUG."""
        if loopback:
            return None
        where = f"BIND_ADDRESS={self.BIND_ADDRESS.strip()} is not loopback"
        if self.REQUIRE_AUTH is False:
            return f"{where}: REQUIRE_AUTH cannot be off (anonymous use is only allowed on 127.0.0.1 / ::1)"
        key = self.SECRET_KEY
        if key == DEV_SECRET_KEY or len(key) < 50 or len(set(key)) < 5:
            return (f"{where}: set SECRET_KEY to a random string of at least 50 characters "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(50))')")
        if "ALLOWED_HOSTS" not in self.model_fields_set or "*" in comma_list(self.ALLOWED_HOSTS):
            return (f"{where}: set ALLOWED_HOSTS to the host names clients use (comma separated, no '*'); "
                    "the websocket Origin is checked against it too")
        if self.DEBUG:
            return f"{where}: DEBUG must be off"
        return None


def load(kind: type, error: type = SystemExit):
    """The environment read through `kind`; `error` naming each variable of the wrong type."""
    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}"
                             for err in exc.errors())
        raise error(f"invalid environment: {problems}") from None


def table(kind: type, readme_only: bool = False) -> str:
    """The Markdown table of a class's variables (README's short one: those marked `readme`)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in kind.model_fields.items():
        extra = field.json_schema_extra
        if readme_only and not extra["readme"]:
            continue
        default = extra["shown"] or f"`{field.default if not isinstance(field.default, bool) else int(field.default)}`"
        rows.append(f"| `{name}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


# the generated tables: (file, marker name, class, README's short selection)
TABLES = [("README.md", "serve", ServeEnvironment, True), ("README.md", "service", ServiceEnvironment, True),
          ("docs/deploy.md", "service", ServiceEnvironment, False)]


def _marked(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- environment:{name} [^>]*-->\n)(.*?)(<!-- /environment:{name} -->)", re.S)


def stale_tables() -> list:
    """(file, marker) of each generated table that differs from its class."""
    stale = []
    for path, name, kind, short in TABLES:
        found = _marked(name).search((ROOT / path).read_text())
        if found is None or found.group(2) != table(kind, short):
            stale.append((path, name))
    return stale


def write_tables() -> None:
    for path, name, kind, short in TABLES:
        text = (ROOT / path).read_text()
        text, count = _marked(name).subn(lambda m: m.group(1) + table(kind, short) + m.group(3), text)
        if count != 1:
            raise SystemExit(f"{path}: no <!-- environment:{name} ... --> block")
        (ROOT / path).write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m videoservice.environment --write")
    write_tables()
