"""The command lines of the service's processes, in one place: Daphne (the web tier) and Celery
workers, as scripts/serve.py, the test harness (tests/support/stack.py) and Docker start them.
No Django here: serve.py builds them before any settings exist.

    python -m videoservice.launch web     # the container's web process: Daphne on 0.0.0.0:8000
"""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ASGI_APP = "videoservice.asgi:application"
# Daphne's cap on a websocket message also applies to what it sends (base64 completions); many
# clients (Python websockets, browsers) send a message as one frame, so the 1 MiB frame cap goes too
DEFAULT_WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (brackets of an IPv6 literal allowed)."""
    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def ws_max_message_bytes(env) -> int:
    return int(env.get("WEBSOCKET_MAX_MESSAGE_BYTES") or env.get("WEBSOCKET_MAX_MESSAGE_SIZE")
               or DEFAULT_WS_MAX_MESSAGE_BYTES)


def daphne_argv(host: str, port: int, max_message_bytes: int = DEFAULT_WS_MAX_MESSAGE_BYTES,
                proxy_headers: bool = False) -> list:
    """Daphne serving the ASGI application (HTTP, static files, websockets)."""
    return [str(BIN / "daphne"), "-b", host, "-p", str(port),
            "--websocket-max-message-size", str(max_message_bytes),
            "--websocket-max-frame-size", str(max_message_bytes),
            *(["--proxy-headers"] if proxy_headers else []), ASGI_APP]


def celery_worker_argv(queues: str, node: str, concurrency: int = 1, pool: str = "prefork") -> list:
    """A Celery worker of the `worker` app on `queues` (events on, for Flower and /healthz)."""
    return [str(BIN / "celery"), "-A", "worker", "worker", "-P", pool, "-c", str(concurrency), "-E", "-Q", queues,
            "-n", node, "--loglevel", "INFO", "--without-mingle", "--without-gossip"]


def flower_argv(host: str, port: int) -> list:
    """Flower, read-only (basic auth comes from FLOWER_BASIC_AUTH in its environment)."""
    return [str(BIN / "celery"), "-A", "worker", "flower", f"--address={host}", f"--port={port}",
            "--read_only=True", "--persistent=False"]


def main(args: list) -> None:
    if args != ["web"]:
        raise SystemExit("usage: python -m videoservice.launch web")
    argv = daphne_argv("0.0.0.0", 8000, ws_max_message_bytes(os.environ), proxy_headers=True)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
