"""The Celery app of the workers: the web tier's (videoservice/bus.py, configured from the
CELERY_* settings), with this package's tasks registered.

Start one worker per GPU (or one on a CPU host), consuming the queues of the models it serves:

    celery -A worker worker -P prefork -c 1 -E -Q builtin -n builtin@%h

Flower: celery -A worker flower --address=127.0.0.1 --port=5555 --read_only=True
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videoservice.settings")

from videoservice.bus import app  # noqa: E402

app.conf.imports = ("worker.tasks",)
