"""The Celery application. Configuration lives in Django settings (CELERY_* names, env-driven).

Start one worker per GPU (or one on a CPU host), consuming the queues of the models it serves:

    celery -A worker worker -P prefork -c 1 -E -Q builtin -n builtin@%h

Flower: celery -A worker flower --address=127.0.0.1 --port=5555 --read_only=True
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")

app = Celery("videoservice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("worker.tasks",)
