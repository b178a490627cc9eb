"""The HTTP server around the app: slow clients are cut off, bad requests answered quietly.

aiohttp has no header read timeout: a client that sends a request one byte at a
time (slowloris) holds a connection, a task and a file descriptor for as long as it
likes. Here a request's headers must be complete ``header_timeout_s`` after its
first byte, or the connection is closed. Idle keep-alive connections are left to
aiohttp's keep-alive timeout (longer than the ALB's), so the load balancer's pooled
connections are never cut. A malformed request (a 10 KB header, a bad request line)
gets a problem+json 400 or 431 and one INFO line that never quotes what was sent:
aiohttp's own handler logs it at ERROR with the first bytes of the offending
header, which may be a bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from services.gateway.http.problems import PROBLEM_CONTENT_TYPE, Problem, problem_body

log = logging.getLogger("tinyllama.gateway.server")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol, plus a deadline on each request's headers."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._armed_at_count = 0
        self._answered = 0  # requests whose handling has ended

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does; start the clock on a request's first byte, stop it when whole.

        Only bytes that arrive while no request is in flight start it: a request's body,
        and anything sent while its (long, streamed) response goes out, never do.
        """
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm()
        elif data and self._header_timer is None and self._request_count == self._answered:
            self._armed_at_count = self._request_count
            self._header_timer = self._loop.call_later(self._header_timeout_s, self._too_slow)

    async def _handle_request(self, *args: Any, **kwargs: Any) -> Any:
        """aiohttp's request handling, counted: the connection is idle once it returns."""
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._answered += 1

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._request_count == self._armed_at_count and self.transport is not None:
            log.info("closed a connection whose request headers took too long")
            self.force_close()  # closes the transport too

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the header clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: problem+json, logged without its content."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            problem = Problem(431, "headers-too-large", "Request header fields too large")
        else:
            problem = Problem(400, "bad-request", "Malformed HTTP request")
        log.info("refused a malformed request: %s", type(exc).__name__)
        response = web.Response(
            status=problem.status,
            body=msgspec.json.encode(problem_body(problem)),
            content_type=PROBLEM_CONTENT_TYPE,
        )
        response.force_close()  # the parser lost its place: this connection is done
        return response


class GuardedServer(web.Server):
    """aiohttp's server, building ``GuardedRequestHandler`` connections."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        """One connection's protocol."""
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server guards its connections (see the module docstring)."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout_s=self._header_timeout_s,
            **plain._kwargs,
        )


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    header_timeout_s: float,
    shutdown_timeout_s: float = 60.0,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop taking connections and drain."""
    runner = GuardedRunner(
        app,
        header_timeout_s=header_timeout_s,
        access_log=None,
        keepalive_timeout=310,  # longer than the ALB's 300 s idle timeout
        shutdown_timeout=shutdown_timeout_s,
        handle_signals=False,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await stop.wait()
    finally:
        await runner.cleanup()
