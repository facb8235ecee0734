"""Logs: plain text by default; LOG_FORMAT=json gives one JSON object per line, with the job being
worked on as fields (`job_id`, `model`, `worker`: set around a job by worker/tasks.py)."""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging

_job: contextvars.ContextVar = contextvars.ContextVar("job", default={})


@contextlib.contextmanager
def job_context(**fields):
    token = _job.set({**_job.get(), **fields})
    try:
        yield
    finally:
        _job.reset(token)


class JobFields(logging.Filter):
    """Puts the current job's fields on every record (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _job.get()
        for name in ("job_id", "model", "worker"):
            if not hasattr(record, name):
                setattr(record, name, current.get(name))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "job_id": getattr(record, "job_id", None),
                "model": getattr(record, "model", None), "worker": getattr(record, "worker", None)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
