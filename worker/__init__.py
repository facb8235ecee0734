"""Celery app for the generation workers (`celery -A worker worker -Q builtin ...`)."""
from worker.celery import app

__all__ = ["app"]
