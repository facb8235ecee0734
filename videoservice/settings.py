"""Settings for the video service; everything an operator changes comes from the environment,
read once through `videoservice.environment.ServiceEnvironment` (typed; each variable's default and
meaning are there, and in the table of docs/deploy.md, "Environment", generated from it)."""
from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from videoservice.environment import ServiceEnvironment, comma_list, load
from videoservice.launch import is_loopback

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


ENV = load(ServiceEnvironment, ImproperlyConfigured)


def database_from_url(url: str) -> dict:
    """DATABASE_URL through dj-database-url (sqlite:///relative/or//absolute/path, sqlite:///:memory:,
    postgres[ql]://user:pass@host:port/name?options), with our SQLite settings and pooled PostgreSQL
    connections; a relative SQLite path is relative to the repository."""
    import dj_database_url

    db = dj_database_url.parse(url, conn_max_age=ENV.DB_CONN_MAX_AGE, conn_health_checks=True)
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
            "timeout": ENV.DB_BUSY_TIMEOUT_S,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


BIND_ADDRESS = ENV.BIND_ADDRESS.strip() or "127.0.0.1"
LOOPBACK = is_loopback(BIND_ADDRESS)
SECRET_KEY = ENV.SECRET_KEY
DEBUG = ENV.DEBUG
ALLOWED_HOSTS = comma_list(ENV.ALLOWED_HOSTS)
CSRF_TRUSTED_ORIGINS = comma_list(ENV.CSRF_TRUSTED_ORIGINS)
REQUIRE_AUTH = (not LOOPBACK) if ENV.REQUIRE_AUTH is None else ENV.REQUIRE_AUTH
if refusal := ENV.public_bind_refusal(LOOPBACK):
    raise ImproperlyConfigured(refusal)

HTTPS = (not LOOPBACK) if ENV.HTTPS is None else ENV.HTTPS
if HTTPS:
    SECURE_SSL_REDIRECT = ENV.SECURE_SSL_REDIRECT
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # probes from inside the host speak plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = ENV.SECURE_HSTS_SECONDS
    SECURE_HSTS_INCLUDE_SUBDOMAINS = ENV.SECURE_HSTS_INCLUDE_SUBDOMAINS
    SECURE_HSTS_PRELOAD = ENV.SECURE_HSTS_PRELOAD
if ENV.SECURE_PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# No "daphne" app: the service runs under Daphne itself (videoservice/launch.py), and the app would
# load Daphne and install Twisted's reactor in every worker and manage.py process.
INSTALLED_APPS = [
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

if ENV.DATABASE_URL:
    DATABASES = {"default": database_from_url(ENV.DATABASE_URL)}
else:
    DATABASES = {"default": sqlite_database(ENV.SQLITE_PATH or str(VAR_DIR / "db.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SESSION_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = ENV.STATIC_ROOT or str(VAR_DIR / "static")
MEDIA_ROOT = ENV.MEDIA_ROOT or str(VAR_DIR / "media")
MEDIA_URL = ENV.MEDIA_URL


def media_storage() -> dict:
    """STORAGES["default"]: the local MEDIA_ROOT, or an S3-compatible bucket when S3_BUCKET is set."""
    bucket = ENV.S3_BUCKET.strip()
    if not bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket,
        "endpoint_url": ENV.S3_ENDPOINT_URL or None,
        "region_name": ENV.S3_REGION,
        "location": ENV.S3_PREFIX.strip("/"),
        "default_acl": None,  # objects stay private: downloads go through the web tier or a presigned URL
        "file_overwrite": False,
        "querystring_auth": True,
        "querystring_expire": ENV.S3_URL_EXPIRE_S,
    }}


STORAGES = {
    "default": media_storage(),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
S3_DOWNLOADS = ENV.S3_DOWNLOADS

# ---------------------------------------------------------------- Redis: channel layer + Celery
REDIS_URL = ENV.REDIS_URL
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
                       "max_connections": ENV.CHANNEL_LAYER_MAX_CONNECTIONS}],
            "capacity": ENV.CHANNEL_CAPACITY,
            "expiry": 60,
        },
    },
}

WEBSOCKET_MAX_MESSAGE_BYTES = ENV.WEBSOCKET_MAX_MESSAGE_BYTES or ENV.WEBSOCKET_MAX_MESSAGE_SIZE or 64 * 1024 * 1024
WS_MAX_CLIENT_MESSAGE_BYTES = ENV.WS_MAX_CLIENT_MESSAGE_BYTES
DATA_UPLOAD_MAX_MEMORY_SIZE = WS_MAX_CLIENT_MESSAGE_BYTES
MAX_PROMPT_CHARS = ENV.MAX_PROMPT_CHARS
MAX_IMAGE_BYTES = ENV.MAX_IMAGE_BYTES
MAX_IMAGE_PIXELS = ENV.MAX_IMAGE_PIXELS
MAX_QUEUED_JOBS = ENV.MAX_QUEUED_JOBS
MAX_QUEUED_PER_OWNER = ENV.MAX_QUEUED_PER_OWNER
MAX_QUEUED_PER_ADDRESS = ENV.MAX_QUEUED_PER_OWNER if ENV.MAX_QUEUED_PER_ADDRESS is None else ENV.MAX_QUEUED_PER_ADDRESS
SUBMISSIONS_PER_MINUTE = ENV.SUBMISSIONS_PER_MINUTE
WS_MESSAGES_PER_MINUTE = ENV.WS_MESSAGES_PER_MINUTE
MAX_VIDEO_PIXELS = ENV.MAX_VIDEO_PIXELS
# input videos are checked before they are decoded (and decoded scaled down, a few frames kept)
MAX_INPUT_FRAME_PIXELS = ENV.MAX_INPUT_FRAME_PIXELS
MAX_INPUT_VIDEO_PIXELS = ENV.MAX_INPUT_VIDEO_PIXELS
# base64 grows by 4/3 and the message has to fit WEBSOCKET_MAX_MESSAGE_BYTES
INLINE_VIDEO_MAX_BYTES = ENV.INLINE_VIDEO_MAX_BYTES or min(32 * 1024 * 1024,
                                                           (WEBSOCKET_MAX_MESSAGE_BYTES - 65536) * 3 // 4)
PROGRESS_INTERVAL_S = ENV.PROGRESS_INTERVAL_S
STREAM_VIDEO = ENV.STREAM_VIDEO
DISPATCH_ORDER = ENV.DISPATCH_ORDER
WEBHOOK_ALLOW_PRIVATE = ENV.WEBHOOK_ALLOW_PRIVATE
WEBHOOK_MAX_ATTEMPTS = ENV.WEBHOOK_MAX_ATTEMPTS
WEBHOOK_TIMEOUT_S = ENV.WEBHOOK_TIMEOUT_S
STREAM_IDLE_S = ENV.STREAM_IDLE_S
JOB_TIME_LIMIT_S = ENV.JOB_TIME_LIMIT_S
JOB_VISIBILITY_TIMEOUT_S = ENV.JOB_VISIBILITY_TIMEOUT_S
JOB_MAX_ATTEMPTS = ENV.JOB_MAX_ATTEMPTS
# worker/reaper.py: the process running a job refreshes Job.heartbeat_at every JOB_HEARTBEAT_S; a
# running job whose heartbeat is older than JOB_HEARTBEAT_TIMEOUT_S (or whose pool process is gone,
# seen from the same worker) is re-queued or failed by the reaper, run at worker start-up and every
# JOB_REAPER_INTERVAL_S inside every worker
JOB_HEARTBEAT_S = ENV.JOB_HEARTBEAT_S
JOB_HEARTBEAT_TIMEOUT_S = ENV.JOB_HEARTBEAT_TIMEOUT_S
JOB_REAPER_INTERVAL_S = ENV.JOB_REAPER_INTERVAL_S
# how often a worker looks for unacknowledged messages older than the visibility timeout (kombu's
# default sweep is ~100 s); None: kombu's default
BROKER_RESTORE_INTERVAL_S = ENV.BROKER_RESTORE_INTERVAL_S
WORKER_WARMUP = ENV.WORKER_WARMUP
DB_RETRY_S = ENV.DB_RETRY_S
# sign-in throttling (videoservice/auth.py ThrottledModelBackend): failures counted in Redis per
# account and per client address within the window; over either, sign-ins are refused unchecked
AUTHENTICATION_BACKENDS = ["videoservice.auth.ThrottledModelBackend"]
LOGIN_FAILURES_PER_ACCOUNT = ENV.LOGIN_FAILURES_PER_ACCOUNT
LOGIN_FAILURES_PER_ADDRESS = ENV.LOGIN_FAILURES_PER_ADDRESS
LOGIN_FAILURE_WINDOW_S = ENV.LOGIN_FAILURE_WINDOW_S
# live jobs (worker/live.py): endless video, steered while it plays
LIVE_MAX_DURATION_S = ENV.LIVE_MAX_DURATION_S
LIVE_DEFAULT_DURATION_S = min(ENV.LIVE_DEFAULT_DURATION_S, LIVE_MAX_DURATION_S)
LIVE_IDLE_S = ENV.LIVE_IDLE_S
LIVE_MAX_LEAD_S = ENV.LIVE_MAX_LEAD_S
LIVE_STATUS_EVERY = ENV.LIVE_STATUS_EVERY
LIVE_MAX_PER_OWNER = ENV.LIVE_MAX_PER_OWNER

# Celery reads the CELERY_* names below (worker/celery.py: namespace="CELERY").
CELERY_BROKER_URL = ENV.CELERY_BROKER_URL or REDIS_URL
CELERY_RESULT_BACKEND = ENV.CELERY_RESULT_BACKEND or REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_VISIBILITY_TIMEOUT_S}
if BROKER_RESTORE_INTERVAL_S is not None:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(unacked_restore_interval=BROKER_RESTORE_INTERVAL_S,
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
CELERY_WORKER_MAX_MEMORY_PER_CHILD = ENV.WORKER_MAX_MEMORY_MB * 1024 or None

LOG_FORMAT = ENV.LOG_FORMAT
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "videoservice.logs.JsonFormatter"}},
    "filters": {"job": {"()": "videoservice.logs.JobFields"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["job"],
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": ENV.LOG_LEVEL},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
