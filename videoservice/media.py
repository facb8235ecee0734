"""Reading stored media (videos, start images) for downloads, from the local disk or a bucket.

Django's storage API opens a whole file; an S3 object opened through django-storages is first
downloaded in full to a temporary file. A `Range` request for 1 MiB of a 2 GiB video must not
fetch 2 GiB, so reads of a bucket go to the object itself: a ranged GET for a range, a streamed
body for the whole file (settings.STORAGES; S3_BUCKET turns the bucket on).
"""
from __future__ import annotations

from django.core.files.storage import default_storage


def _s3_object(name: str):
    """The boto3 Object behind a stored name, or None when the storage is not a bucket."""
    bucket = getattr(default_storage, "bucket", None)
    if bucket is None:
        return None
    from storages.utils import clean_name

    return bucket.Object(default_storage._normalize_name(clean_name(name)))  # the key S3Storage gives the name


def size(name: str) -> int:
    return default_storage.size(name)


def read_range(name: str, start: int, end: int) -> bytes:
    """Bytes start..end (inclusive) of a stored file."""
    obj = _s3_object(name)
    if obj is not None:
        return obj.get(Range=f"bytes={start}-{end}")["Body"].read()
    with default_storage.open(name, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start + 1)


def open_stream(name: str):
    """A file-like object (read(n)) over the whole stored file, streamed rather than downloaded first."""
    obj = _s3_object(name)
    if obj is not None:
        return obj.get()["Body"]
    return default_storage.open(name, "rb")


def presigned_url(name: str) -> str | None:
    """A time-limited URL of the object in the bucket (S3_URL_EXPIRE_S), or None for local files."""
    if getattr(default_storage, "bucket", None) is None:
        return None
    return default_storage.url(name)


def is_missing(exc: Exception) -> bool:
    """Whether a storage error says the file is not there (removed by hand, a lost volume, a
    lifecycle rule on the bucket)."""
    if isinstance(exc, FileNotFoundError):
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
