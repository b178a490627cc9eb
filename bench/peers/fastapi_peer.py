"""The reference peer for ``make bench-gateway``: our enqueue path, built the original way.

FastAPI + uvicorn (uvloop and httptools when installed, as ``uvicorn[standard]``
brings them), python-jose verifying RS256 against the JWKS (read once at
start), a pydantic model equivalent to ``GenerateRequest``, and ARQ's stock
``ArqRedis.enqueue_job`` with its default (pickle) serializer. It answers
``POST /infer?mode=async`` with 202 and the job; nothing else is implemented.

Run: ``uvicorn bench.peers.fastapi_peer:app`` with ``PEER_JWKS_PATH``,
``PEER_ISSUER``, ``PEER_CLIENT_IDS`` (comma-separated), ``REDIS_URL`` and
``PEER_QUEUE_NAME`` in the environment.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from arq import create_pool
from arq.connections import RedisSettings
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from jose import JWTError, jwt
from pydantic import BaseModel, ConfigDict, Field

JOB_FUNCTION = "generate"
DEADLINE_S = 300.0


StopSequence = Annotated[str, Field(min_length=1, max_length=64)]


class GenerateRequest(BaseModel):
    """Same fields, bounds and strictness as ``services.protocol.messages.GenerateRequest``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[str, Field(min_length=1, max_length=32_768)]
    max_new_tokens: Annotated[int, Field(ge=1, le=4_096)] = 128
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0, le=1_000)] = 0
    stop: Annotated[list[StopSequence], Field(max_length=4)] = []
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    chat: bool = False
    idle: Annotated[int, Field(ge=1, le=30)] = 5


class JobResponse(BaseModel):
    """What the client gets back."""

    id: str
    status: str
    created_at: float
    deadline: float
    url: str


class Settings:
    """Read once at import, the way the original service did."""

    jwks_path = os.environ.get("PEER_JWKS_PATH", "")
    issuer = os.environ.get("PEER_ISSUER", "")
    client_ids = frozenset(filter(None, os.environ.get("PEER_CLIENT_IDS", "").split(",")))
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    queue_name = os.environ.get("PEER_QUEUE_NAME", "arq:queue")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Fetch the JWKS once and open the ARQ pool (stock serializer: pickle)."""
    jwks = json.loads(Path(Settings.jwks_path).read_text())  # noqa: ASYNC240 (once, at start)
    app.state.keys = {key["kid"]: key for key in jwks["keys"]}
    app.state.redis = await create_pool(RedisSettings.from_dsn(Settings.redis_url))
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


async def current_user(request: Request, authorization: str = Header(default="")) -> str:
    """Verify the bearer token (signature, iss, exp, token_use, client_id); return ``sub``.

    ``async def`` keeps it on the event loop: a plain ``def`` dependency would hop to
    FastAPI's thread pool on every request and make the peer slower than it needs to be.
    """
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = request.app.state.keys[kid]
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            issuer=Settings.issuer,
            options={"verify_aud": False},
        )
    except (JWTError, KeyError):
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"}) from None
    if claims.get("token_use") != "access" or claims.get("client_id") not in Settings.client_ids:
        raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    return claims["sub"]


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@app.post("/infer", status_code=202, response_model=JobResponse)
async def infer(
    body: GenerateRequest,
    request: Request,
    mode: Literal["wait", "async", "stream"] = Query(default="wait"),
    subject: str = Depends(current_user),
) -> JobResponse:
    """Queue one prompt and answer 202 with the job (only ``mode=async`` is implemented)."""
    if mode != "async":
        raise HTTPException(501, "only mode=async is implemented by the peer")
    now = time.time()
    job_id = uuid.uuid4().hex
    payload = {
        "job_id": job_id,
        "subject": subject,
        "request": body.model_dump(),
        "enqueued_at": now,
        "deadline": now + DEADLINE_S,
        "request_id": request.headers.get("X-Request-Id", ""),
    }
    job = await request.app.state.redis.enqueue_job(
        JOB_FUNCTION, payload=payload, _job_id=job_id, _queue_name=Settings.queue_name
    )
    if job is None:
        raise HTTPException(409, "duplicate job id")
    return JobResponse(
        id=job_id, status="queued", created_at=now, deadline=now + DEADLINE_S, url=f"/jobs/{job_id}"
    )
