"""A job's progress as Server-Sent Events: the response and the job service's relay, together."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from services.gateway.http.problems import REQUEST_ID
from services.gateway.http.state import STATE
from services.gateway.jobs.service import Relayed

log = logging.getLogger("tinyllama.gateway.streams")
Failed = Callable[[EventSourceResponse], Awaitable[None]]


@contextlib.asynccontextmanager
async def relayed_events(
    request: web.Request,
    job_id: str,
    *,
    subject: str,
    headers: dict[str, str],
    failed: Failed,
) -> AsyncIterator[tuple[EventSourceResponse, AsyncIterator[Relayed]]]:
    """An open SSE response (pings keep ALBs from cutting it) and the job's relayed events.

    The stream caps are checked before the response starts (a 429 is still possible
    then). Once it has started, a failure can no longer become an error response: the
    block's exception is logged, ``failed`` writes the route's own last event, and the
    stream ends. Leaving the block closes the relay first, so a client that went away
    (or a consumer that stopped early) cancels the job at once.
    """
    state = request.app[STATE]

    def connected() -> bool:
        return request.transport is not None and not request.transport.is_closing()

    async with (
        state.jobs.follow(job_id, subject=subject, connected=connected) as events,
        sse_response(
            request,
            allow_all_methods=True,
            ping_interval=state.settings.sse_ping_s,
            headers=headers,
        ) as response,
    ):
        try:
            yield response, events
        except ConnectionResetError:
            pass  # the client left: closing the relay cancels its job
        except Exception:
            log.exception("stream failed", extra={"request_id": request.get(REQUEST_ID, "")})
            with contextlib.suppress(ConnectionResetError):
                await failed(response)
