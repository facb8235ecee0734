"""Prometheus metrics at GET /metrics (prometheus-client's text format).

Read from the shared state at scrape time, so every web process answers for the whole fleet (no
multiprocess files, nothing pushed): the jobs by status and model, queue depth and the oldest
waiting job's age per queue, job and step durations as histograms of the finished jobs, webhook
deliveries, the workers answering a ping, and open websocket connections (each Daphne process
keeps its count in Redis, refreshed while it runs).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket

from django.db.models import Count, F, FloatField, Min, Q
from django.db.models.functions import Cast
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from videoservice import bus, redis_clients
from videoservice.api import ServiceAuth, error_response
from videoservice.contract import RequestError
from videoservice.models import Job, WebhookDelivery

JOB_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CONNECTIONS_KEY = "videoservice:ws-connections:"
CONNECTIONS_TTL_S = 90
LIVE_RATE_KEY = "videoservice:live-rate:"
LIVE_RATE_TTL_S = 60
_connections = {"count": 0, "task": None}


def _histogram(name: str, doc: str, rows, buckets) -> HistogramMetricFamily:
    """A histogram of `value` per model from (model, value) rows."""
    family = HistogramMetricFamily(name, doc, labels=["model"])
    by_model: dict = {}
    for model, value in rows:
        by_model.setdefault(model, []).append(value)
    for model, values in sorted(by_model.items()):
        cumulative = [(str(b), sum(v <= b for v in values)) for b in buckets] + [("+Inf", len(values))]
        family.add_metric([model], cumulative, sum_value=sum(values))
    return family


class ServiceCollector:
    def collect(self):
        jobs = GaugeMetricFamily("videoservice_jobs", "Jobs by status and model", labels=["status", "model"])
        for row in Job.objects.values("status", "model").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["status"], row["model"]], row["n"])
        yield jobs

        now = timezone.now()
        depth = GaugeMetricFamily("videoservice_queue_depth", "Jobs waiting, per queue", labels=["queue"])
        oldest = GaugeMetricFamily("videoservice_queue_oldest_wait_seconds", "Age of the oldest waiting job",
                                   labels=["queue"])
        for row in Job.objects.filter(status=Job.Status.QUEUED).values("queue").annotate(
                n=Count("id"), first=Min("created_at")).order_by():
            depth.add_metric([row["queue"]], row["n"])
            oldest.add_metric([row["queue"]], (now - row["first"]).total_seconds())
        yield depth
        yield oldest

        done = Job.objects.filter(status=Job.Status.SUCCEEDED, elapsed_s__isnull=False)
        yield _histogram("videoservice_job_duration_seconds", "Worker time of finished jobs",
                         done.values_list("model", "elapsed_s"), JOB_BUCKETS)
        per_step = done.filter(total_steps__gt=0).annotate(
            per=F("elapsed_s") / Cast("total_steps", FloatField())).values_list("model", "per")
        yield _histogram("videoservice_step_duration_seconds", "Worker time per denoising step of finished jobs",
                         per_step, STEP_BUCKETS)

        deliveries = CounterMetricFamily("videoservice_webhook_deliveries", "Webhook deliveries by state",
                                         labels=["state"])
        counts = WebhookDelivery.objects.aggregate(
            delivered=Count("id", filter=Q(delivered_at__isnull=False)), given_up=Count("id", filter=Q(gave_up=True)),
            pending=Count("id", filter=Q(delivered_at__isnull=True, gave_up=False)))
        for state, n in counts.items():
            deliveries.add_metric([state], n)
        yield deliveries

        workers = GaugeMetricFamily("videoservice_workers", "Celery workers answering a ping")
        try:
            workers.add_metric([], len(bus.ping_workers(0.3)))
        except Exception:
            workers.add_metric([], 0)
        yield workers

        connections = GaugeMetricFamily("videoservice_websocket_connections", "Open websocket connections")
        connections.add_metric([], websocket_connections())
        yield connections

        live = GaugeMetricFamily("videoservice_live_jobs", "Live jobs running, per model", labels=["model"])
        for row in Job.objects.filter(live=True, status=Job.Status.RUNNING).values("model").annotate(
                n=Count("id")).order_by():
            live.add_metric([row["model"]], row["n"])
        yield live
        rates = GaugeMetricFamily("videoservice_live_realtime_factor",
                                  "Seconds of video a running live job makes per wall-clock second",
                                  labels=["job_id", "model"])
        for job_id, model, rate in live_rates():
            rates.add_metric([job_id, model], rate)
        yield rates


def _redis():
    return redis_clients.new(timeout=2)


def websocket_connections() -> int:
    client = _redis()
    try:
        keys = list(client.scan_iter(CONNECTIONS_KEY + "*"))
        return sum(int(v or 0) for v in client.mget(keys)) if keys else 0
    finally:
        client.close()


def record_live_rate(job_id: str, model: str, rate: float) -> None:
    """A live job's real-time factor (worker/live.py, with each live_status), kept LIVE_RATE_TTL_S."""
    client = _redis()
    try:
        client.set(f"{LIVE_RATE_KEY}{job_id}", json.dumps([model, rate]), ex=LIVE_RATE_TTL_S)
    except Exception:  # metrics must never cost a chunk
        pass
    finally:
        client.close()


def live_rates() -> list:
    """(job id, model, real-time factor) of the live jobs that reported lately."""
    client = _redis()
    try:
        keys = list(client.scan_iter(LIVE_RATE_KEY + "*"))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    return [(key.decode()[len(LIVE_RATE_KEY):], *json.loads(value)) for key, value in zip(keys, values) if value]


def _process_key() -> str:
    return f"{CONNECTIONS_KEY}{socket.gethostname()}:{os.getpid()}"


async def _write_count() -> None:
    client = redis_clients.new_async(connect_timeout=2)
    try:
        await client.set(_process_key(), _connections["count"], ex=CONNECTIONS_TTL_S)
    finally:
        await client.aclose()


async def _refresh() -> None:
    while True:
        await asyncio.sleep(CONNECTIONS_TTL_S / 3)
        try:
            await _write_count()
        except Exception:
            pass


async def connection_opened(delta: int = 1) -> None:
    """A consumer's connect (+1) / disconnect (-1): this process's count in Redis."""
    _connections["count"] += delta
    if _connections["task"] is None:
        _connections["task"] = asyncio.get_running_loop().create_task(_refresh())
    try:
        await _write_count()
    except Exception:  # metrics must never cost a connection
        pass


def metrics_view(request):
    try:
        ServiceAuth()(request)  # the API's rules: open on loopback, a login or a token otherwise
    except RequestError as err:
        return error_response(err)
    registry = CollectorRegistry()
    registry.register(ServiceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
