"""A job's progress as Server-Sent Events: the response and the job service's relay, together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_sse import sse_response

from services.gateway.http.state import STATE
from services.gateway.jobs.service import Relayed


@contextlib.asynccontextmanager
async def relayed_events(
    request: web.Request, job_id: str, *, headers: dict[str, str]
) -> AsyncIterator[tuple[web.StreamResponse, AsyncIterator[Relayed]]]:
    """An open SSE response (pings keep ALBs from cutting it) and the job's relayed events.

    Leaving the block closes the relay first, so a client that went away (or a
    consumer that stopped early) cancels the job at once.
    """
    state = request.app[STATE]

    def connected() -> bool:
        return request.transport is not None and not request.transport.is_closing()

    async with (
        sse_response(
            request,
            allow_all_methods=True,
            ping_interval=state.settings.sse_ping_s,
            headers=headers,
        ) as response,
        contextlib.aclosing(state.jobs.relay(job_id, connected=connected)) as events,
    ):
        yield response, events
