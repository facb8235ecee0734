"""Settings for the video service; everything an operator changes comes from the environment.

Environment (defaults in brackets):
  SECRET_KEY            [an insecure development key; set it off loopback]
  DEBUG                 [0]
  ALLOWED_HOSTS         [localhost,127.0.0.1,[::1]]  comma separated; also checked against the
                        websocket Origin header
  CSRF_TRUSTED_ORIGINS  [empty] comma separated origins (https://example.org) behind a proxy
  DATABASE_URL          [sqlite:///<repo>/var/db.sqlite3]  sqlite:///ABS/PATH or
                        postgres://USER:PASS@HOST:PORT/NAME (needs psycopg installed)
  SQLITE_PATH           used when DATABASE_URL is unset
  REDIS_URL             [redis://127.0.0.1:6379/0]  channel layer, Celery broker and results
  CELERY_BROKER_URL / CELERY_RESULT_BACKEND  [REDIS_URL]
  CHANNEL_LAYER_MAX_CONNECTIONS [1000]  Redis connections one web process's channel layer may hold
  MEDIA_ROOT            [<repo>/var/media]  where videos and start images are stored
  MEDIA_URL             [/media/]
  S3_BUCKET             [unset: MEDIA_ROOT]  store videos, previews and start images in this
                        S3-compatible bucket instead (AWS S3, MinIO, R2; django-storages). Every
                        web and worker host then needs only the bucket, no shared folder. With it:
                        S3_ENDPOINT_URL (MinIO/R2: https://host:port; unset: AWS), S3_REGION
                        [us-east-1], S3_PREFIX [empty: the bucket root], credentials from
                        AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or boto3's usual chain), and
                        S3_DOWNLOADS [proxy]: proxy (web hosts stream the object, with Range) or
                        redirect (302 to a presigned URL valid S3_URL_EXPIRE_S [3600] seconds)
  WEBSOCKET_MAX_MESSAGE_BYTES [67108864]  what Daphne's --websocket-max-message-size is set to
                        (it also caps what the server sends: base64 completions)
  WS_MAX_CLIENT_MESSAGE_BYTES [12582912]  largest message a client may send (error too_large)
  MAX_PROMPT_CHARS [1000], MAX_IMAGE_BYTES [8388608], MAX_IMAGE_PIXELS [16777216]
  MAX_QUEUED_JOBS [200] (all owners), MAX_QUEUED_PER_OWNER [20], MAX_QUEUED_PER_ADDRESS
                        [MAX_QUEUED_PER_OWNER] (anonymous owners, per client IP)  -> error queue_full
  INLINE_VIDEO_MAX_BYTES [32 MiB, less if WEBSOCKET_MAX_MESSAGE_BYTES is lower]  larger videos are announced by url only (video: null)
  JOB_TIME_LIMIT_S [3600]  hard limit for one generation (soft limit 60 s earlier)
  JOB_VISIBILITY_TIMEOUT_S [43200]  broker redelivery timeout; keep it above the longest
                        queue wait + generation
  JOB_MAX_ATTEMPTS [2]  deliveries of one job (a worker lost mid-job re-queues it once)
  JOB_HEARTBEAT_S [5], JOB_HEARTBEAT_TIMEOUT_S [60], JOB_REAPER_INTERVAL_S [30]  the reaper of jobs
                        whose worker vanished (worker/reaper.py)
  BROKER_RESTORE_INTERVAL_S [kombu's ~100 s]  sweep for messages past the visibility timeout
  PROGRESS_INTERVAL_S [0.5]  at most one progress message per this many seconds per job
  DISPATCH_ORDER        [fair]  the order waiting jobs run in (videoservice/dispatch.py): fair
                        (front, priority, then owners take turns) or fifo
  WEBHOOK_ALLOW_PRIVATE [0]  1: webhooks may point at loopback / private addresses (tests, LANs)
  WEBHOOK_MAX_ATTEMPTS  [8]  tries of one webhook delivery (back-off 1, 2, 4 ... 60 s)
  WEBHOOK_TIMEOUT_S     [10]  one delivery, connection to response headers, in all
  STREAM_IDLE_S         [600]  GET /api/jobs/<id>/stream ends after this long without a piece
  LOGIN_FAILURES_PER_ACCOUNT [10], LOGIN_FAILURES_PER_ADDRESS [50] within LOGIN_FAILURE_WINDOW_S [900]:
                        failed sign-ins after which the account / the address is refused (logged)
  DB_BUSY_TIMEOUT_S     [30]  SQLite: how long a write waits for another's lock before it fails
                        (the API answers 503 + Retry-After; a worker skips a progress write and
                        retries a job's final write for DB_RETRY_S [300])
  STREAM_VIDEO          [1]  send video_chunk events / fill /api/jobs/<id>/stream while a job runs
                        (0: the video is encoded once its last frame is made, as a plain MP4 job)
  WORKER_WARMUP [1]  load the model of the worker's first queue right after start
  WORKER_MAX_MEMORY_MB [8192]  a pool process whose peak memory passed this is replaced after its
                        job (memory a big job took is given back; the next job loads its model again); 0: never
  LIVE_MAX_DURATION_S [1800], LIVE_DEFAULT_DURATION_S [300]  a live job's max_duration_s: its ceiling
                        and its default
  LIVE_IDLE_S [30]      a live job ends when no subscriber has received a chunk for this long
  LIVE_MAX_LEAD_S [2]   seconds of video a live job makes ahead of playback before it waits (pacing:
                        a steer shows within about a chunk, a fast GPU does not race ahead)
  LIVE_STATUS_EVERY [2] a live_status event (real-time factor, lead) every this many chunks
  LIVE_MAX_PER_OWNER [1] live jobs one owner may have queued or running (each holds a worker)
  LOG_FORMAT    [plain]  json: one JSON object per log line, with job_id, model and worker as fields

Who may do what (docs/deploy.md, "Authentication"):
  BIND_ADDRESS          [127.0.0.1]  the address Daphne listens on (scripts/serve.py sets it from
                        HOST). Loopback (127.x, ::1, localhost): anonymous use is allowed. Any
                        other address: authentication is required (session login or API token),
                        and start-up refuses (ImproperlyConfigured) without a real SECRET_KEY
                        (>= 50 characters, not the development key) and an explicit ALLOWED_HOSTS
                        (without "*").
  REQUIRE_AUTH          [0 on loopback, 1 elsewhere]  may be turned on on loopback, never off elsewhere
  HTTPS                 [0 on loopback, 1 elsewhere]  served over TLS (directly or by a proxy): SSL
                        redirect, secure cookies, HSTS
  SECURE_PROXY_SSL_HEADER [0]  1: trust X-Forwarded-Proto: https from the proxy in front
  SECURE_HSTS_SECONDS   [31536000 with HTTPS]; SECURE_HSTS_INCLUDE_SUBDOMAINS, SECURE_HSTS_PRELOAD [1 with HTTPS]

Limits on what clients send (error codes in docs/protocol.md):
  SUBMISSIONS_PER_MINUTE [30]  accepted submissions (generate / POST /api/jobs) per user (or
                        anonymous owner) in any 60 s window, counted in Redis -> rate_limited
  WS_MESSAGES_PER_MINUTE [600]  messages of any kind per websocket connection (token bucket of
                        this size, refilled at this rate / 60 per second) -> rate_limited
  MAX_VIDEO_PIXELS      [134217728]  frames x width x height of the final video -> invalid_field
  MAX_INPUT_FRAME_PIXELS [16777216]  width x height of an uploaded video's frames -> too_large
  MAX_INPUT_VIDEO_PIXELS [8589934592]  frames x width x height of an uploaded video (the stated or
                        estimated frame count at upload; counted again while the worker decodes) -> too_large
  (and WS_MAX_CLIENT_MESSAGE_BYTES, MAX_PROMPT_CHARS, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS,
  MAX_QUEUED_JOBS, MAX_QUEUED_PER_OWNER above)
"""
from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """DATABASE_URL through dj-database-url (sqlite:///relative/or//absolute/path, sqlite:///:memory:,
    postgres[ql]://user:pass@host:port/name?options), with our SQLite settings and pooled PostgreSQL
    connections; a relative SQLite path is relative to the repository."""
    import dj_database_url

    db = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        path = db["NAME"] or ":memory:"
        if path != ":memory:" and not os.path.isabs(path):
            path = str(BASE_DIR / path)
        return sqlite_database(path)
    return db


def sqlite_database(path: str) -> dict:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # web and worker processes write the same file: WAL, wait for locks, take the write lock up front
        "OPTIONS": {
            "timeout": env_float("DB_BUSY_TIMEOUT_S", 30.0),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def is_loopback(address: str) -> bool:
    import ipaddress

    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


DEV_SECRET_KEY = "dev-insecure-3c1b0f8e-videoservice-change-me"
BIND_ADDRESS = os.environ.get("BIND_ADDRESS", "").strip() or "127.0.0.1"
LOOPBACK = is_loopback(BIND_ADDRESS)
SECRET_KEY = os.environ.get("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
REQUIRE_AUTH = env_bool("REQUIRE_AUTH", not LOOPBACK)
if not LOOPBACK:
    # Off loopback the service faces a network: refuse to start half-configured.
    if not REQUIRE_AUTH:
        raise ImproperlyConfigured(f"BIND_ADDRESS={BIND_ADDRESS} is not loopback: REQUIRE_AUTH cannot be off "
                                   "(anonymous use is only allowed on 127.0.0.1 / ::1)")
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            f"BIND_ADDRESS={BIND_ADDRESS} is not loopback: set SECRET_KEY to a random string of at least 50 "
            "characters (python -c 'import secrets; print(secrets.token_urlsafe(50))')")
    if not os.environ.get("ALLOWED_HOSTS", "").strip() or "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            f"BIND_ADDRESS={BIND_ADDRESS} is not loopback: set ALLOWED_HOSTS to the host names clients use "
            "(comma separated, no '*'); the websocket Origin is checked against it too")
    if DEBUG:
        raise ImproperlyConfigured(f"BIND_ADDRESS={BIND_ADDRESS} is not loopback: DEBUG must be off")

HTTPS = env_bool("HTTPS", not LOOPBACK)
if HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # probes from inside the host speak plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

INSTALLED_APPS = [
    "daphne",  # `manage.py runserver` serves ASGI (websockets) too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # serves the interactive API docs' static files (/api/docs works offline)
    "videoservice",
]

MIDDLEWARE = [
    "videoservice.api.json_errors_middleware",  # a 405 under /api/ answers the API's JSON error
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "videoservice.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = None
ASGI_APPLICATION = "videoservice.asgi.application"

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
else:
    DATABASES = {"default": sqlite_database(os.environ.get("SQLITE_PATH", str(VAR_DIR / "db.sqlite3")))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SESSION_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT", str(VAR_DIR / "static"))
MEDIA_ROOT = os.environ.get("MEDIA_ROOT", str(VAR_DIR / "media"))
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")


def media_storage() -> dict:
    """STORAGES["default"]: the local MEDIA_ROOT, or an S3-compatible bucket when S3_BUCKET is set."""
    bucket = os.environ.get("S3_BUCKET", "").strip()
    if not bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket,
        "endpoint_url": os.environ.get("S3_ENDPOINT_URL") or None,
        "region_name": os.environ.get("S3_REGION", "us-east-1"),
        "location": os.environ.get("S3_PREFIX", "").strip("/"),
        "default_acl": None,  # objects stay private: downloads go through the web tier or a presigned URL
        "file_overwrite": False,
        "querystring_auth": True,
        "querystring_expire": env_int("S3_URL_EXPIRE_S", 3600),
    }}


STORAGES = {
    "default": media_storage(),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
S3_DOWNLOADS = os.environ.get("S3_DOWNLOADS", "proxy")
if S3_DOWNLOADS not in ("proxy", "redirect"):
    raise ImproperlyConfigured(f"S3_DOWNLOADS must be proxy or redirect, not {S3_DOWNLOADS!r}")

# ---------------------------------------------------------------- Redis: channel layer + Celery
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        # RedisChannelLayer (lists), not the pub/sub layer: the latter drops large messages.
        # socket_timeout None: redis-py 8's 5 s default kills idle consumers (channels_redis#422).
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # max_connections: redis-py 8's asyncio pool allows 100 by default and raises
            # MaxConnectionsError beyond; a burst of 100 websocket connects (bench/bench_load.py)
            # needs more, each handshake's group_add holds one while Redis answers
            "hosts": [{"address": REDIS_URL, "socket_timeout": None,
                       "max_connections": env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 1000)}],
            "capacity": env_int("CHANNEL_CAPACITY", 500),
            "expiry": 60,
        },
    },
}

WEBSOCKET_MAX_MESSAGE_BYTES = env_int("WEBSOCKET_MAX_MESSAGE_BYTES",
                                      env_int("WEBSOCKET_MAX_MESSAGE_SIZE", 64 * 1024 * 1024))
WS_MAX_CLIENT_MESSAGE_BYTES = env_int("WS_MAX_CLIENT_MESSAGE_BYTES", 12 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = WS_MAX_CLIENT_MESSAGE_BYTES
MAX_PROMPT_CHARS = env_int("MAX_PROMPT_CHARS", 1000)
MAX_IMAGE_BYTES = env_int("MAX_IMAGE_BYTES", 8 * 1024 * 1024)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 4096 * 4096)
MAX_QUEUED_JOBS = env_int("MAX_QUEUED_JOBS", 200)
MAX_QUEUED_PER_OWNER = env_int("MAX_QUEUED_PER_OWNER", 20)
MAX_QUEUED_PER_ADDRESS = env_int("MAX_QUEUED_PER_ADDRESS", MAX_QUEUED_PER_OWNER)
SUBMISSIONS_PER_MINUTE = env_int("SUBMISSIONS_PER_MINUTE", 30)
WS_MESSAGES_PER_MINUTE = env_int("WS_MESSAGES_PER_MINUTE", 600)
MAX_VIDEO_PIXELS = env_int("MAX_VIDEO_PIXELS", 2 ** 27)
# input videos are checked before they are decoded (and decoded scaled down, a few frames kept)
MAX_INPUT_FRAME_PIXELS = env_int("MAX_INPUT_FRAME_PIXELS", 4096 * 4096)
MAX_INPUT_VIDEO_PIXELS = env_int("MAX_INPUT_VIDEO_PIXELS", 2 ** 33)
# base64 grows by 4/3 and the message has to fit WEBSOCKET_MAX_MESSAGE_BYTES
INLINE_VIDEO_MAX_BYTES = env_int("INLINE_VIDEO_MAX_BYTES",
                                 min(32 * 1024 * 1024, (WEBSOCKET_MAX_MESSAGE_BYTES - 65536) * 3 // 4))
PROGRESS_INTERVAL_S = env_float("PROGRESS_INTERVAL_S", 0.5)
STREAM_VIDEO = env_bool("STREAM_VIDEO", True)
DISPATCH_ORDER = os.environ.get("DISPATCH_ORDER", "fair")  # fair (priority, then owners take turns) | fifo
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_TIMEOUT_S = env_float("WEBHOOK_TIMEOUT_S", 10.0)
# GET /api/jobs/<id>/stream ends when the job's stream sends nothing for this long (queued behind
# others, or its worker lost)
STREAM_IDLE_S = env_float("STREAM_IDLE_S", 600.0)
DB_RETRY_S = env_float("DB_RETRY_S", 300.0)
# sign-in throttling (videoservice/auth.py ThrottledModelBackend): failures counted in Redis per
# account and per client address within the window; over either, sign-ins are refused unchecked
AUTHENTICATION_BACKENDS = ["videoservice.auth.ThrottledModelBackend"]
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 10)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 50)
LOGIN_FAILURE_WINDOW_S = env_int("LOGIN_FAILURE_WINDOW_S", 900)
JOB_TIME_LIMIT_S = env_int("JOB_TIME_LIMIT_S", 3600)
JOB_VISIBILITY_TIMEOUT_S = env_int("JOB_VISIBILITY_TIMEOUT_S", 12 * 3600)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 2)
# worker/reaper.py: the process running a job refreshes Job.heartbeat_at every JOB_HEARTBEAT_S; a
# running job whose heartbeat is older than JOB_HEARTBEAT_TIMEOUT_S (or whose pool process is gone,
# seen from the same worker) is re-queued or failed by the reaper, run at worker start-up and every
# JOB_REAPER_INTERVAL_S inside every worker
JOB_HEARTBEAT_S = env_float("JOB_HEARTBEAT_S", 5.0)
JOB_HEARTBEAT_TIMEOUT_S = env_float("JOB_HEARTBEAT_TIMEOUT_S", 60.0)
JOB_REAPER_INTERVAL_S = env_float("JOB_REAPER_INTERVAL_S", 30.0)
# how often a worker looks for unacknowledged messages older than the visibility timeout (kombu's
# default sweep is ~100 s); empty: kombu's default
BROKER_RESTORE_INTERVAL_S = os.environ.get("BROKER_RESTORE_INTERVAL_S", "")
WORKER_WARMUP = env_bool("WORKER_WARMUP", True)
# live jobs (worker/live.py): endless video, steered while it plays
LIVE_MAX_DURATION_S = env_float("LIVE_MAX_DURATION_S", 1800.0)  # the ceiling a request may ask for
LIVE_DEFAULT_DURATION_S = min(env_float("LIVE_DEFAULT_DURATION_S", 300.0), LIVE_MAX_DURATION_S)
LIVE_IDLE_S = env_float("LIVE_IDLE_S", 30.0)  # ends when no subscriber received a chunk for this long
LIVE_MAX_LEAD_S = env_float("LIVE_MAX_LEAD_S", 2.0)  # seconds of video made ahead of playback, at most
LIVE_STATUS_EVERY = env_int("LIVE_STATUS_EVERY", 2)  # a live_status event every this many chunks
LIVE_MAX_PER_OWNER = env_int("LIVE_MAX_PER_OWNER", 1)  # live jobs queued or running per owner

# Celery reads the CELERY_* names below (worker/celery.py: namespace="CELERY").
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_VISIBILITY_TIMEOUT_S}
if BROKER_RESTORE_INTERVAL_S:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(unacked_restore_interval=float(BROKER_RESTORE_INTERVAL_S),
                                           unacked_restore_throttle=1)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_VISIBILITY_TIMEOUT_S}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_SOFT_TIME_LIMIT = max(JOB_TIME_LIMIT_S - 60, 30)
CELERY_TASK_TIME_LIMIT = JOB_TIME_LIMIT_S
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# billiard compares the pool process's peak RSS (ru_maxrss) after each task: one big job recycles it
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("WORKER_MAX_MEMORY_MB", 8192) * 1024 or None

LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")  # plain | json (one object a line, with job_id, model, worker)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "videoservice.logs.JsonFormatter"}},
    "filters": {"job": {"()": "videoservice.logs.JobFields"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["job"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
