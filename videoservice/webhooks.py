"""Webhooks: a job's events POSTed to a URL the submitter gave, signed, retried, never in the way.

A job may carry `webhook` (an http/https URL) and `webhook_events` (a subset of EVENTS; default
DEFAULT_EVENTS). For each of its events that is asked for, a `WebhookDelivery` row is written and
the Celery task `worker.tasks.deliver_webhooks(job_id)` (queue `webhooks`, a worker of its own:
delivery never blocks a generation) POSTs the rows of that job in order: a failure (an error
status, a refused connection, a time-out) is retried with back-off (1, 2, 4 ... 60 s,
WEBHOOK_MAX_ATTEMPTS tries) before the job's next event is sent, so a receiver sees them in order.

The body is JSON: {"event": "completed", "job_id", "data": the event as the websocket has it
(without base64 payloads), "job": the job as GET /api/jobs/<id> has it, "sent_at"}. Signature
(like Stripe's): the header `X-Videoservice-Signature: t=<unix seconds>,v1=<hex>` where hex is
HMAC-SHA256 of `<t>.<body bytes>` with the user's secret (`manage.py webhook_secret USER`, or
GET /api/account/webhook-secret); receivers recompute it and reject old `t` values. Also sent:
`X-Videoservice-Event`, `X-Videoservice-Delivery` (a delivery's id, the same on every retry).

Only http and https; a host that resolves to a loopback, private, link-local or reserved address
is refused (at submission, and again when delivering) unless WEBHOOK_ALLOW_PRIVATE=1: a webhook
must not reach into the operator's network.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

EVENTS = ("start", "progress", "completed", "failed", "cancelled")
DEFAULT_EVENTS = ("start", "completed", "failed", "cancelled")
FROM_EVENT = {"started": "start", "progress": "progress", "generation_complete": "completed",
              "description_complete": "completed", "generation_failed": "failed", "description_failed": "failed",
              "cancelled": "cancelled"}
BULKY = ("video", "preview", "init", "data")
TIMEOUT_S = 10.0
QUEUE = "webhooks"
DELIVER_TASK = "worker.tasks.deliver_webhooks"


def url_problem(url: str) -> str | None:
    """Why this URL may not be a webhook (None when it may)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook must be an http:// or https:// URL"
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        return f"webhook host {parts.hostname!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            return (f"webhook host {parts.hostname!r} is a private or local address ({address}); refused "
                    "(WEBHOOK_ALLOW_PRIVATE=1 allows it)")
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def record(job, event) -> None:
    """A job's event: written for its webhook (when it asked for this one) and handed to delivery."""
    payload = event if isinstance(event, dict) else event.payload()
    name = FROM_EVENT.get(payload["type"])
    if not job.webhook or name not in (job.webhook_events or ()):
        return
    from videoservice import bus
    from videoservice.models import WebhookDelivery

    body = {"event": name, "job_id": str(job.pk), "data": {k: v for k, v in payload.items() if k not in BULKY},
            "job": job.as_dict(job.owner), "sent_at": timezone.now().isoformat()}
    WebhookDelivery.objects.create(job=job, event=name, body=json.dumps(body, separators=(",", ":")))
    try:
        bus.app.send_task(DELIVER_TASK, args=[str(job.pk)], queue=QUEUE, ignore_result=True)
    except Exception:  # the row waits; the next event or the reaper's sweep sends it
        log.exception("could not hand the webhook delivery of job %s over", job.pk)


def backoff(attempts: int) -> float:
    return min(60.0, 2.0 ** (attempts - 1))


def post(url: str, body: bytes, headers: dict) -> int:
    """POST and return the status (raises OSError on a connection failure or time-out)."""
    import urllib.error
    import urllib.request

    problem = url_problem(url)  # again: the name may resolve elsewhere by now
    if problem:
        raise OSError(problem)
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "videoservice",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def deliver(job_id: str) -> float | None:
    """POST the job's pending deliveries in order. Returns seconds after which to try again (a
    delivery failed and has tries left), or None when there is nothing left to send now."""
    from videoservice.models import Job, WebhookDelivery, WebhookSecret

    job = Job.objects.select_related("user").filter(pk=job_id).first()
    if job is None or not job.webhook or job.user is None:
        return None
    secret = WebhookSecret.of(job.user)
    for delivery in WebhookDelivery.objects.filter(job=job, delivered_at__isnull=True, gave_up=False):
        now = timezone.now()
        if delivery.next_try_at and delivery.next_try_at > now:
            return (delivery.next_try_at - now).total_seconds()
        body = delivery.body.encode()
        stamp = int(time.time())
        headers = {"X-Videoservice-Signature": f"t={stamp},v1={signature(secret, stamp, body)}",
                   "X-Videoservice-Event": delivery.event, "X-Videoservice-Delivery": str(delivery.pk)}
        try:
            status = post(job.webhook, body, headers)
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        delivery.attempts += 1
        if not error:
            delivery.delivered_at = timezone.now()
            delivery.save(update_fields=["attempts", "delivered_at"])
            continue
        delivery.last_error = error[:500]
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            log.warning("webhook of job %s: giving up on %s after %d tries (%s)", job.pk, delivery.event,
                        delivery.attempts, error)
            delivery.gave_up = True
            delivery.save(update_fields=["attempts", "last_error", "gave_up"])
            continue
        wait = backoff(delivery.attempts)
        delivery.next_try_at = timezone.now() + timedelta(seconds=wait)
        delivery.save(update_fields=["attempts", "last_error", "next_try_at"])
        return wait
    return None
