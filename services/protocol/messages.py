"""Request, result, event and heartbeat Structs: the shape of every message.

The gateway decodes client bodies straight into these; the worker decodes
queue payloads into them. ``forbid_unknown_fields`` makes a typo an error
instead of a silently ignored option.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MAX_PROMPT_CHARS = 32_768
MAX_NEW_TOKENS = 4_096
MAX_STOP_SEQUENCES = 4

Prompt = Annotated[str, Meta(min_length=1, max_length=MAX_PROMPT_CHARS)]
NewTokens = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_NEW_TOKENS,
        description=(
            f"At most {MAX_NEW_TOKENS}, and the prompt plus this must fit the served model's "
            "context (2048 tokens for TinyLlama-1.1B; `GET /ready` names the model): a request "
            "that cannot fit is refused before it is queued."
        ),
    ),
]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
TopK = Annotated[int, Meta(ge=0, le=1_000)]
StopSequence = Annotated[str, Meta(min_length=1, max_length=64)]
IdleMinutes = Annotated[int, Meta(ge=1, le=30)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]

FinishReason = Literal["stop", "length", "cancelled", "error"]
JobStatus = Literal["queued", "starting", "running", "succeeded", "failed", "cancelled", "expired"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What a client asks for: one completion of one prompt."""

    prompt: Prompt
    max_new_tokens: NewTokens = 128
    temperature: Temperature = 0.0
    top_p: TopP = 1.0
    top_k: TopK = 0
    stop: Annotated[list[StopSequence], Meta(max_length=MAX_STOP_SEQUENCES)] = []
    seed: Seed | None = None
    chat: bool = False
    idle: IdleMinutes = 5


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Token counts of one job."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(msgspec.Struct, kw_only=True, frozen=True):
    """Where a job's time went, in seconds."""

    queued_s: float
    first_token_s: float | None
    generation_s: float
    total_s: float


class GenerateResult(msgspec.Struct, kw_only=True, frozen=True):
    """The final answer of a job."""

    text: str
    finish_reason: FinishReason
    model: str
    usage: Usage
    timings: Timings


ChatRole = Literal["system", "user", "assistant"]


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One turn of a conversation (the OpenAI-compatible chat route sends these)."""

    role: ChatRole
    content: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)]


class JobPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What travels on the queue: the request plus who asked and until when.

    With ``messages``, the worker renders them with the tokenizer's chat template
    and ``request.prompt`` is only a summary for logs.
    """

    job_id: str
    subject: str
    request: GenerateRequest
    enqueued_at: float
    deadline: float
    request_id: str = ""
    messages: list[ChatMessage] = []


class TokenEvent(msgspec.Struct, tag="token", kw_only=True, frozen=True):
    """A text delta. ``seq`` counts generated tokens; ``offset`` is the delta's start in the text.

    A job re-run after a crash publishes the same offsets again, so a reader
    that skips text before the offset it has already shown sees one coherent
    text.
    """

    seq: int
    offset: int
    text: str
    token_ids: list[int] = []


class StatusEvent(msgspec.Struct, tag="status", kw_only=True, frozen=True):
    """A job changed state (``running`` when a worker picked it up)."""

    status: JobStatus
    worker: str = ""


class DoneEvent(msgspec.Struct, tag="done", kw_only=True, frozen=True):
    """The last event of a successful (or cancelled) job."""

    result: GenerateResult


class ErrorEvent(msgspec.Struct, tag="error", kw_only=True, frozen=True):
    """The last event of a failed job: a stable code and a message for humans."""

    code: str
    message: str
    status: JobStatus = "failed"


JobEvent = TokenEvent | StatusEvent | DoneEvent | ErrorEvent


class Heartbeat(msgspec.Struct, kw_only=True, frozen=True):
    """What a live worker says about itself every few seconds."""

    worker_id: str
    model: str
    device: str
    ready: bool
    capacity: int
    active_jobs: int
    tokens_per_s: float
    sent_at: float
    demo_model: bool = False
    # What one request can hold: the model's context, or the KV cache if that is smaller.
    # None from workers older than this field; the gateway then leaves the check to them.
    context_length: int | None = None
    # The longest entry of the tokenizer's vocabulary, in characters: no token stands for
    # more text than this, so a prompt needs at least len(text) / this many tokens.
    max_token_chars: int | None = None
