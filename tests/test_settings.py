"""DATABASE_URL parsing (pure function, no Django set-up needed)."""
from videoservice.settings import BASE_DIR, database_from_url


def test_postgres_url():
    db = database_from_url("postgres://vid%40eo:p%3Ass@db.example:5433/videos?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == \
        ("videos", "vid@eo", "p:ss", "db.example", "5433")
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_sqlite_urls(tmp_path):
    assert database_from_url(f"sqlite:///{tmp_path}/x.sqlite3")["NAME"] == f"{tmp_path}/x.sqlite3"
    assert database_from_url("sqlite:///:memory:")["NAME"] == ":memory:"
    rel = database_from_url("sqlite:///var/test-rel.sqlite3")
    assert rel["NAME"] == str(BASE_DIR / "var" / "test-rel.sqlite3")
    assert rel["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
