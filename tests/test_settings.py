"""DATABASE_URL parsing (pure function, no Django set-up needed)."""
from videoservice.settings import BASE_DIR, database_from_url


def test_postgres_url():
    db = database_from_url("postgres://vid%40eo:p%3Ass@db.example:5433/videos?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == \
        ("videos", "vid@eo", "p:ss", "db.example", 5433)
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_sqlite_urls(tmp_path):
    assert database_from_url(f"sqlite:///{tmp_path}/x.sqlite3")["NAME"] == f"{tmp_path}/x.sqlite3"
    assert database_from_url("sqlite:///:memory:")["NAME"] == ":memory:"
    rel = database_from_url("sqlite:///var/test-rel.sqlite3")
    assert rel["NAME"] == str(BASE_DIR / "var" / "test-rel.sqlite3")
    assert rel["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


# ---------------------------------------------------------------- bind address, auth, deploy check
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from videoservice.environment import ServiceEnvironment  # noqa: E402
from videoservice.launch import is_loopback  # noqa: E402

GOOD_KEY = "prod-" + "Zq8#vW2!pL5@" * 5
SETTINGS_VARS = ("BIND_ADDRESS", "SECRET_KEY", "ALLOWED_HOSTS", "REQUIRE_AUTH", "HTTPS", "DEBUG", "SECURE_SSL_REDIRECT",
                 "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD")


def settings_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS and k != "DATABASE_URL"}
    env.update({"DJANGO_SETTINGS_MODULE": "videoservice.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3")})
    env.update(extra)
    return env


def load_settings(tmp_path, **extra):
    code = ("import json, videoservice.settings as s; print(json.dumps({'auth': s.REQUIRE_AUTH, "
            "'loopback': s.LOOPBACK, 'ssl': getattr(s, 'SECURE_SSL_REDIRECT', False)}))")
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=settings_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=60)


def test_loopback_default_is_anonymous(tmp_path):
    import json

    for bind in ("", "127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert ServiceEnvironment(BIND_ADDRESS=bind).public_bind_refusal(is_loopback(bind.strip() or "127.0.0.1")) \
            is None
    out = load_settings(tmp_path, BIND_ADDRESS="::1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"auth": False, "loopback": True, "ssl": False}
    out = load_settings(tmp_path, REQUIRE_AUTH="1")  # may be turned on on loopback
    assert json.loads(out.stdout)["auth"] is True


HALF_CONFIGURED = (
    ({}, "SECRET_KEY"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"SECRET_KEY": "dev-insecure-3c1b0f8e-videoservice-change-me"}, "SECRET_KEY"),
    ({"SECRET_KEY": GOOD_KEY}, "ALLOWED_HOSTS"),
    ({"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS"),
    ({"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "video.example.org", "REQUIRE_AUTH": "0"}, "REQUIRE_AUTH"),
    ({"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "video.example.org", "DEBUG": "1"}, "DEBUG"),
)


def test_public_bind_refuses_half_configured_settings(monkeypatch):
    """The rule, read from the environment as the settings read it (in this process: one case each)."""
    for name in SETTINGS_VARS:
        monkeypatch.delenv(name, raising=False)
    for bind in ("0.0.0.0", "192.168.1.20", "::", "video.example.org"):
        assert not is_loopback(bind)
        for extra, word in HALF_CONFIGURED:
            with monkeypatch.context() as env:
                for name, value in {"BIND_ADDRESS": bind, **extra}.items():
                    env.setenv(name, value)
                refusal = ServiceEnvironment().public_bind_refusal(loopback=False)
            assert refusal and word in refusal.partition("is not loopback:")[2] and bind in refusal, \
                (bind, extra, refusal)
    ready = {"BIND_ADDRESS": "0.0.0.0", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "video.example.org"}
    for name, value in ready.items():
        monkeypatch.setenv(name, value)
    assert ServiceEnvironment().public_bind_refusal(loopback=False) is None


def test_a_service_bound_off_loopback_does_not_start_half_configured(tmp_path):
    """The refusal stops the process that loads the settings (Daphne, a worker, manage.py alike)."""
    import json

    for extra, word in (HALF_CONFIGURED[0], HALF_CONFIGURED[4]):
        out = load_settings(tmp_path, BIND_ADDRESS="192.168.1.20", **extra)
        assert out.returncode != 0, extra
        assert "ImproperlyConfigured" in out.stderr and word in out.stderr.splitlines()[-1], out.stderr[-500:]
    out = load_settings(tmp_path, BIND_ADDRESS="0.0.0.0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="video.example.org")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"auth": True, "loopback": False, "ssl": True}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = settings_env(tmp_path, BIND_ADDRESS="0.0.0.0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="video.example.org")
    out = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                         cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues (0 silenced)." in out.stdout
    assert "WARNING" not in out.stdout + out.stderr
    # the loopback development defaults are not production-ready, and the check says so
    out = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                         cwd=BASE_DIR, env=settings_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "security.W009" in out.stdout + out.stderr


def test_media_storage_is_the_local_disk_or_the_bucket(tmp_path):
    import json

    code = "import json, videoservice.settings as s; print(json.dumps(s.STORAGES['default']))"

    def storage(**extra):
        out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=settings_env(tmp_path, **extra),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert storage(S3_BUCKET="")["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    bucket = storage(S3_BUCKET="videos", S3_ENDPOINT_URL="http://minio:9000", S3_PREFIX="/media/")
    assert bucket["BACKEND"] == "storages.backends.s3.S3Storage"
    assert bucket["OPTIONS"]["bucket_name"] == "videos" and bucket["OPTIONS"]["endpoint_url"] == "http://minio:9000"
    assert bucket["OPTIONS"]["location"] == "media" and bucket["OPTIONS"]["default_acl"] is None
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
                         env=settings_env(tmp_path, S3_DOWNLOADS="sideways"))
    assert out.returncode != 0 and "S3_DOWNLOADS='sideways': Input should be 'proxy' or 'redirect'" in out.stderr


def test_compose_fleet_profile_wires_postgres_and_minio():
    import yaml

    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("postgres", "minio", "minio-bucket"):
        assert "fleet" in services[name]["profiles"], name
    app_env = compose["x-app-env"]
    wanted = {"S3_BUCKET", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"}
    assert wanted <= set(app_env)
    worker = services["worker"]
    assert worker["command"] == ["python", "-m", "scripts.serve"] and worker["environment"]["SERVE_ROLE"] == "worker"
    fleet_env = dict(line.split("=", 1) for line in (BASE_DIR / "deploy" / "fleet.env").read_text().splitlines()
                     if line and not line.startswith("#"))
    assert fleet_env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in fleet_env["DATABASE_URL"]
    assert fleet_env["S3_ENDPOINT_URL"] == "http://minio:9000"
