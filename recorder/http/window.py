"""The routes of the daemon's window and the task that serves them.

    GET /metrics   Prometheus text exposition (metrics.py)
    GET /healthz   200 "ok", or 503 with a one-line reason (status.health)
    GET /status    JSON: per feed state and counts, storage (status.status)
    GET /          the live page, and its /api/feeds, /api/chart, /api/stream (live.py, added by
                   the supervisor)

`routes(sources)` returns a plain dict (the supervisor builds it); another part (the live page,
/api/...) adds its own entries to it, exact paths or "prefix/*", with no change to the listener.
"""

from __future__ import annotations

import json
import logging
import time

import trio

from . import metrics
from .listener import Handler, Listener, Request, Response, text
from .status import Snapshot, Sources, health, status, take_snapshot

log = logging.getLogger("recorder.http")


def snapshot_of(sources: Sources) -> Snapshot:
    return take_snapshot(sources, trio.current_time(), time.time())


def routes(sources: Sources) -> dict[str, Handler]:
    registry = metrics.make_registry(lambda: snapshot_of(sources))

    async def get_metrics(request: Request) -> Response:
        return Response(body=metrics.exposition(registry), content_type=metrics.CONTENT_TYPE)

    async def get_healthz(request: Request) -> Response:
        ok, reason = health(snapshot_of(sources))
        return text(200 if ok else 503, reason)

    async def get_status(request: Request) -> Response:
        body = json.dumps(status(snapshot_of(sources)), indent=1).encode()
        return Response(body=body + b"\n", content_type="application/json")

    return {"/metrics": get_metrics, "/healthz": get_healthz, "/status": get_status}


async def run_window(sources: Sources, listeners: list[trio.SocketListener],
                     table: dict[str, Handler] | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the routes on `listeners` (see open_listeners) until cancelled; `task_status.started(url)`."""
    http = sources.config.http
    listener = Listener(table if table is not None else routes(sources), max_connections=http.max_connections,
                        request_timeout=http.request_timeout)
    host, port = listeners[0].socket.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, listener.handle, listeners)
        log.info("serving /metrics, /healthz and /status on %s", url)
        task_status.started(url)

async def open_listeners(http) -> list[trio.SocketListener]:
    """Bind [http] listen (before anything else starts, so a taken port is a clear startup error)."""
    from ..errors import ConfigError

    try:
        return await trio.open_tcp_listeners(http.port, host=http.host)
    except OSError as exc:
        raise ConfigError(f"http.listen: cannot listen on {http.host}:{http.port}: {exc.strerror or exc}") from None
