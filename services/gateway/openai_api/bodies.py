"""OpenAI's wire shapes (requests, answers, chunks) as Structs, for ``openai_api``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from services.protocol.messages import (
    MAX_PROMPT_CHARS,
    MAX_STOP_SEQUENCES,
    NewTokens,
    Prompt,
    Seed,
    StopSequence,
    Temperature,
    TopP,
    Usage,
)

OpenAIFinish = Literal["stop", "length"]
OWNER = "tinyllama"

# ------------------------------------------------------------------------ request bodies

Stop = StopSequence | Annotated[list[StopSequence], Meta(max_length=MAX_STOP_SEQUENCES)] | None


class StreamOptions(msgspec.Struct, kw_only=True, frozen=True):
    """``stream_options``: ``include_usage`` adds a last chunk with token counts."""

    include_usage: bool = False


class SamplingOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Fields both routes share; the unsupported ones are checked after decoding."""

    model: str = ""  # the served model, an alias of it, or "" (the served one); else a 404
    max_tokens: NewTokens | None = None
    temperature: Temperature | None = None  # OpenAI's default is 1.0
    top_p: TopP | None = None
    stop: Stop = None
    seed: Seed | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class TextPart(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One text part of a message's content (images and audio are not supported)."""

    type: Literal["text"]
    text: str


class InputMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One turn; ``developer`` is read as ``system``, parts are joined."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)] | list[TextPart]
    name: str | None = None


class ChatCompletionRequest(SamplingOptions, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/chat/completions``: OpenAI's chat body, the parts this server serves."""

    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    max_completion_tokens: NewTokens | None = None  # wins over max_tokens
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


class CompletionRequest(SamplingOptions, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/completions``: one string prompt, continued as-is."""

    prompt: Prompt
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


# ----------------------------------------------------------------------- response bodies


class Model(msgspec.Struct, kw_only=True, frozen=True):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER


class ModelList(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /v1/models``: the models live workers serve (empty while none is ready)."""

    object: Literal["list"] = "list"
    data: list[Model]


# OpenAI's description requires some fields that this server never fills (``logprobs``,
# ``refusal``): they are typed ``None`` with no default, so every answer carries them as
# null and the schema lists them as required, as OpenAI's does.


class AssistantMessage(msgspec.Struct, kw_only=True, frozen=True):
    """The generated turn."""

    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None


class Delta(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a chunk adds: the role first, then content."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChoice(msgspec.Struct, kw_only=True, frozen=True):
    """The one choice of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: OpenAIFinish
    logprobs: None


class ChunkChoice(msgspec.Struct, kw_only=True, frozen=True):
    """The one choice of a chat chunk; ``finish_reason`` only on the last."""

    index: int = 0
    delta: Delta
    finish_reason: OpenAIFinish | None = None


class TextChoice(msgspec.Struct, kw_only=True, frozen=True):
    """The one choice of a text completion (``finish_reason`` null on stream chunks)."""

    index: int = 0
    text: str
    finish_reason: OpenAIFinish | None
    logprobs: None


class _Answer(msgspec.Struct, kw_only=True, frozen=True):
    """The header every answer and chunk carries."""

    id: str
    created: int
    model: str


class ChatCompletion(_Answer, kw_only=True, frozen=True):
    """``chat.completion``: the answer of a finished chat job."""

    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatCompletionChunk(_Answer, kw_only=True, frozen=True):
    """SSE ``data:`` of a streamed chat; the ``include_usage`` chunk has no choices."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextCompletion(_Answer, kw_only=True, frozen=True):
    """``text_completion``: the answer of a finished job, or one streamed chunk of it.

    ``usage`` is left out of chunks but the ``include_usage`` one (OpenAI's is not nullable).
    """

    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]
    usage: Usage | UnsetType = UNSET
