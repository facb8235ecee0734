"""Webhooks: a job's events POSTed to a URL the submitter gave, signed, retried, never in the way.

A job may carry `webhook` (an http/https URL) and `webhook_events` (a subset of EVENTS; default
DEFAULT_EVENTS). For each of its events that is asked for, a `WebhookDelivery` row is written and
the Celery task `worker.tasks.deliver_webhooks(job_id)` (queue `webhooks`, a worker of its own:
delivery never blocks a generation) POSTs the rows of that job in order: a failure (an error
status, a refused connection, a time-out) is retried with back-off (1, 2, 4 ... 60 s,
WEBHOOK_MAX_ATTEMPTS tries) before the job's next event is sent, so a receiver sees them in order.
This module holds the rules, the body and the transport; the rows' bookkeeping is the model's
(videoservice/models.py: WebhookDelivery.record, WebhookDelivery.deliver_pending).

The body is JSON: {"event": "completed", "job_id", "data": the event as the websocket has it
(without base64 payloads), "job": the job as GET /api/jobs/<id> has it, "sent_at"}. Signatures,
both with the user's secret (`manage.py webhook_secret USER`, or GET /api/account/webhook-secret):
- Standard Webhooks (https://www.standardwebhooks.com, which stock verifiers check): `webhook-id`
  (the delivery's id, the same on every retry), `webhook-timestamp` (unix seconds) and
  `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`; the key is the
  secret's UTF-8 bytes, i.e. a verifier's secret is `whsec_` + base64 of it;
- (like Stripe's) `X-Videoservice-Signature: t=<unix seconds>,v1=<hex>` where hex is HMAC-SHA256
  of `<t>.<body bytes>`; receivers recompute it and reject old `t` values. Also sent:
  `X-Videoservice-Event`, `X-Videoservice-Delivery` (= webhook-id).

Only http and https; a host that resolves to a loopback, private, link-local or reserved address
is refused (at submission, and again when delivering) unless WEBHOOK_ALLOW_PRIVATE=1: a webhook
must not reach into the operator's network. A delivery connects to the very address it checked
(no second lookup for a rebinding DNS to answer differently), never follows a redirect (a 3xx is a
failed try: a receiver cannot bounce the signed POST elsewhere), uses no proxy, reads only the
status and headers, and gives up after WEBHOOK_TIMEOUT_S in all (a receiver that dribbles bytes
cannot hold a delivery thread).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import threading
import time
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
QUEUE = "webhooks"
DELIVER_TASK = "worker.tasks.deliver_webhooks"


class Refused(OSError):
    """A webhook URL that may not be delivered to (its message says why)."""


def url_problem(url: str) -> str | None:
    """Why this URL may not be a webhook (None when it may)."""
    try:
        _checked_address(url, resolve=not settings.WEBHOOK_ALLOW_PRIVATE)
    except Refused as exc:
        return str(exc)
    return None


def _checked_address(url: str, resolve: bool = True) -> str | None:
    """The address to connect to for this URL (resolved once), after the checks; Refused when it may not
    be used. Without `resolve` (a submission with WEBHOOK_ALLOW_PRIVATE), only the form is checked."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("webhook must be an http:// or https:// URL")
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError):
        raise Refused(f"webhook host {parts.hostname!r} does not resolve") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            if not address.is_global:
                raise Refused(f"webhook host {parts.hostname!r} is a private or local address ({address}); "
                              "refused (WEBHOOK_ALLOW_PRIVATE=1 allows it)")
    return str(addresses[0])


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def event_body(job, event) -> tuple | None:
    """(the webhook's event name, the JSON body to POST) for this event of a job (a Job row), or None when
    the job asked for no webhook of it (the rows are written by models.WebhookDelivery.record)."""
    payload = event if isinstance(event, dict) else event.payload()
    name = FROM_EVENT.get(payload["type"])
    if not job.webhook or name not in (job.webhook_events or ()):
        return None
    body = {"event": name, "job_id": str(job.pk), "data": {k: v for k, v in payload.items() if k not in BULKY},
            "job": job.as_dict(job.owner), "sent_at": timezone.now().isoformat()}
    return name, json.dumps(body, separators=(",", ":"))


def backoff(attempts: int) -> float:
    return min(60.0, 2.0 ** (attempts - 1))


def post(url: str, body: bytes, headers: dict) -> int:
    """POST to the address checked just now and return the status, without following a redirect
    (raises OSError on a refused URL, a connection failure or WEBHOOK_TIMEOUT_S passing)."""
    address = _checked_address(url)  # again: the name may resolve elsewhere by now
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    # the Host header and TLS (SNI, certificate) use the URL's name; the socket goes to `address`
    connection = kind(parts.hostname, parts.port, timeout=settings.WEBHOOK_TIMEOUT_S)
    connection._create_connection = lambda where, *args: socket.create_connection((address, where[1]), *args)
    timed_out = threading.Event()

    def abort():  # socket time-outs count per read: wake a read that a dribbling receiver keeps alive
        timed_out.set()
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    deadline = threading.Timer(settings.WEBHOOK_TIMEOUT_S, abort)
    deadline.start()
    try:
        connection.request("POST", (parts.path or "/") + ("?" + parts.query if parts.query else ""), body=body,
                           headers={"Content-Type": "application/json", "User-Agent": "videoservice", **headers})
        status = connection.getresponse().status  # its body is never read
    except http.client.HTTPException as exc:
        if not timed_out.is_set():
            raise OSError(f"{type(exc).__name__}: {exc}") from None
    except OSError:
        if not timed_out.is_set():
            raise
    finally:
        deadline.cancel()
        connection.close()
    if timed_out.is_set():  # (an aborted read can also look like the end of the headers)
        raise TimeoutError(f"no answer within {settings.WEBHOOK_TIMEOUT_S:g} s")
    return status


def standard_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value (key: the secret's UTF-8 bytes)."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def send(url: str, secret: str, delivery_id: str, event: str, body: str) -> str:
    """One try at POSTing a delivery, signed both ways: "" when the receiver took it, else what went wrong."""
    data = body.encode()
    stamp = int(time.time())
    headers = {"webhook-id": delivery_id, "webhook-timestamp": str(stamp),
               "webhook-signature": standard_signature(secret, delivery_id, stamp, data),
               "X-Videoservice-Signature": f"t={stamp},v1={signature(secret, stamp, data)}",
               "X-Videoservice-Event": event, "X-Videoservice-Delivery": delivery_id}
    try:
        status = post(url, data, headers)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= status < 300:
        return ""
    return f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
