"""OpenAI-compatible routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/completions``.

Each request becomes one ordinary job (same budget gate, admission, queue and worker as
``POST /infer``); this module only translates OpenAI's wire shapes to ours and back.
Options we cannot honour are refused with a 400 naming their ``param``, never silently
dropped; every error is OpenAI's error object (``errors.py``), so OpenAI's clients raise
what they would raise against OpenAI.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from services.gateway.api.native import submission_headers
from services.gateway.auth import Principal
from services.gateway.fleet.served import Served
from services.gateway.http.openapi import Reply, operation
from services.gateway.http.problems import REQUEST_ID, Problem, json_response, read_json
from services.gateway.http.state import STATE, GatewayState
from services.gateway.http.streams import relayed_events
from services.gateway.jobs.service import TextDelta
from services.gateway.openai_api.bodies import (
    OWNER,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    CompletionRequest,
    Delta,
    InputMessage,
    Model,
    ModelList,
    OpenAIFinish,
    SamplingOptions,
    TextChoice,
    TextCompletion,
)
from services.gateway.openai_api.errors import (
    OPENAI_ERRORS,
    OpenAIErrorResponse,
    job_failure,
    openai_error,
    wait_timeout,
)
from services.gateway.openai_api.models import listed, served_for
from services.protocol.messages import (
    ChatMessage,
    DoneEvent,
    ErrorEvent,
    GenerateRequest,
    GenerateResult,
    Usage,
)

routes = web.RouteTableDef()
DEFAULT_MAX_TOKENS = 128
_SUMMARY_CHARS = 200  # GenerateRequest.prompt of a chat job: only a summary for logs

# ----------------------------------------------------------------------------- handlers

_UNSUPPORTED: tuple[tuple[str, Any, str], ...] = (
    ("n", lambda v: v in (None, 1), "only n=1 is supported"),
    ("best_of", lambda v: v in (None, 1), "only best_of=1 is supported"),
    ("logprobs", lambda v: not v, "logprobs are not supported"),
    ("top_logprobs", lambda v: not v, "logprobs are not supported"),
    ("presence_penalty", lambda v: not v, "penalties are not supported"),
    ("frequency_penalty", lambda v: not v, "penalties are not supported"),
    ("logit_bias", lambda v: not v, "logit_bias is not supported"),
    ("tools", lambda v: not v, "tool calling is not supported"),
    ("tool_choice", lambda v: v in (None, "none", "auto"), "tool calling is not supported"),
    ("response_format", lambda v: not v or v.get("type") == "text", "only text output"),
    ("echo", lambda v: not v, "echo is not supported"),
    ("suffix", lambda v: not v, "suffix is not supported"),
)


def _check_supported(body: SamplingOptions) -> None:
    errors = [
        {"path": f"$.{name}", "message": message}
        for name, ok, message in _UNSUPPORTED
        if not ok(getattr(body, name, None))
    ]
    if errors:
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise Problem(
            422, "unsupported-parameter", "Unsupported parameter", detail=detail, errors=errors
        )


async def _decode(request: web.Request, kind: type[SamplingOptions]) -> Any:
    body = await read_json(request, kind)
    _check_supported(body)
    return body


def _limit_path(body: SamplingOptions) -> str:
    """The field that set the job's token limit (``max_completion_tokens`` wins)."""
    chosen = getattr(body, "max_completion_tokens", None)
    return "$.max_completion_tokens" if chosen else "$.max_tokens"


def _generate_request(body: Any, *, prompt: str, chat: bool) -> GenerateRequest:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    limit = getattr(body, "max_completion_tokens", None) or body.max_tokens
    return GenerateRequest(
        prompt=prompt,
        max_new_tokens=limit or DEFAULT_MAX_TOKENS,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
        chat=chat,
    )


def _turn(message: InputMessage) -> ChatMessage:
    text = (
        message.content
        if isinstance(message.content, str)
        else "".join(p.text for p in message.content)
    )
    return ChatMessage(role="system" if message.role == "developer" else message.role, content=text)


_FAILURE_REPLIES: dict[int, Reply] = {
    409: Reply(
        description="The job was cancelled (`DELETE /jobs/{id}`).", body=OpenAIErrorResponse
    ),
    502: Reply(description="The worker failed the job.", body=OpenAIErrorResponse),
    504: Reply(
        description=(
            "Not done within the gateway's wait timeout (the job goes on: poll `Location`), "
            "or the job waited past its deadline before a worker took it."
        ),
        body=OpenAIErrorResponse,
        headers=("Location",),
    ),
}
_NOTE = (
    "OpenAI-compatible: one job like `POST /infer` (same queue, limits and `Idempotency-Key`). "
    "`model` names the served model or an alias of it (`GET /v1/models`); absent, the served "
    "one; any other is a 404 `model_not_found`. Unsupported options (`n` > 1, `logprobs`, "
    "penalties, `logit_bias`, `tools`, non-text `response_format`) are a 400 naming their "
    "`param`. A prompt plus `max_tokens` that cannot fit the model's context is a 400 "
    "`context_length_exceeded`. Errors are OpenAI's error object. With `stream: true` the "
    "answer is SSE with bare `data:` lines (no `event:`), each a chunk, then `data: [DONE]`; "
    'a failure mid-stream is `data: {"error": {...}}` (the same object), then `data: [DONE]`.'
)


def _completion_operation(
    *, operation_id: str, request: type, body: type, chunk: type
) -> dict[str, Any]:
    """The declaration of one OpenAI-compatible completion route (chat or text)."""
    return {
        "operation_id": operation_id,
        "summary": f"OpenAI-compatible {body.__name__}: wait for it, or stream it",
        "tag": "inference",
        "description": _NOTE,
        "request": request,
        "headers": ("IdempotencyKey",),
        "replies": {
            200: Reply(
                description="The finished completion; with `stream: true`, SSE chunks.",
                body=body,
                events={"message": chunk},
                headers=("Location", "X-Job-Id", "X-Budget-Warning"),
            ),
            **_FAILURE_REPLIES,
        },
        "problems": (400, 401, 402, 404, 413, 415, 429, 503),
        "errors": OPENAI_ERRORS,
    }


@routes.get("/v1/models")
@operation(
    operation_id="listModels",
    summary="OpenAI-compatible: the served model and its aliases, warm or scaled to zero",
    tag="inference",
    description=(
        "The model live workers serve or, while none is live (the fleet scaled to zero), the "
        "one they served last: a request for it starts the fleet. Then the configured aliases "
        "(`TINYLLAMA_MODEL_ALIASES`). Every id listed is accepted as `model`."
    ),
    replies={200: Reply(description="The models `model` may name.", body=ModelList)},
    problems=(401,),
    errors=OPENAI_ERRORS,
)
async def list_models(request: web.Request) -> web.Response:
    """The served model (live, else the last one served) and its aliases."""
    state = request.app[STATE]
    await state.authenticator.authenticate(request.headers.get("Authorization"))
    served = await state.jobs.served.read()
    return json_response(ModelList(data=listed(served, state.settings.model_aliases)))


@routes.get("/v1/models/{model}")
@operation(
    operation_id="retrieveModel",
    summary="OpenAI-compatible: one model `GET /v1/models` lists (a `/` in an id is `%2F`)",
    tag="inference",
    path_params={"model": {"type": "string"}},
    replies={200: Reply(description="The model.", body=Model)},
    problems=(401, 404),
    errors=OPENAI_ERRORS,
)
async def retrieve_model(request: web.Request) -> web.Response:
    """One model ``GET /v1/models`` lists; any other id is a 404 ``model_not_found``."""
    state = request.app[STATE]
    await state.authenticator.authenticate(request.headers.get("Authorization"))
    model = request.match_info["model"]
    served = await served_for(state, model)
    models = listed(served, state.settings.model_aliases)
    return json_response(next(m for m in models if m.id == model))


@routes.post("/v1/chat/completions")
@operation(
    **_completion_operation(
        operation_id="createChatCompletion",
        request=ChatCompletionRequest,
        body=ChatCompletion,
        chunk=ChatCompletionChunk,
    )
)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer a conversation: the worker renders the turns with the model's chat template."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    body: ChatCompletionRequest = await _decode(request, ChatCompletionRequest)
    served = await served_for(state, body.model)
    turns = [_turn(m) for m in body.messages]
    state.jobs.check_prompt(sum(len(t.content) for t in turns), path="$.messages")
    last = next((t.content for t in reversed(turns) if t.role == "user" and t.content), "")
    summary = last[:_SUMMARY_CHARS] or "(chat)"
    generate = _generate_request(body, prompt=summary, chat=True)
    await state.jobs.check_fits(
        generate,
        texts=[t.content for t in turns],
        prompt_path="$.messages",
        limit_path=_limit_path(body),
        served=served,
    )
    return await _answer(
        request, state, principal, body, served=served, generate=generate, messages=turns
    )


@routes.post("/v1/completions")
@operation(
    **_completion_operation(
        operation_id="createCompletion",
        request=CompletionRequest,
        body=TextCompletion,
        chunk=TextCompletion,
    )
)
async def completions(request: web.Request) -> web.StreamResponse:
    """Continue one prompt as plain text."""
    state = request.app[STATE]
    principal = await state.authenticator.authenticate(request.headers.get("Authorization"))
    body: CompletionRequest = await _decode(request, CompletionRequest)
    served = await served_for(state, body.model)
    state.jobs.check_prompt(len(body.prompt), path="$.prompt")
    generate = _generate_request(body, prompt=body.prompt, chat=False)
    await state.jobs.check_fits(
        generate,
        texts=[body.prompt],
        prompt_path="$.prompt",
        limit_path=_limit_path(body),
        served=served,
    )
    return await _answer(
        request, state, principal, body, served=served, generate=generate, messages=[]
    )


async def _answer(
    request: web.Request,
    state: GatewayState,
    principal: Principal,
    body: SamplingOptions,
    *,
    served: Served,
    generate: GenerateRequest,
    messages: list[ChatMessage],
) -> web.StreamResponse:
    """Submit the job like ``POST /infer`` does, then wait for it or stream it."""
    submission = await state.jobs.submit(
        subject=principal.subject,
        request=generate,
        messages=messages,
        request_id=request.get(REQUEST_ID, ""),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    job_id = submission.job_id
    headers = submission_headers(submission)
    shape = _Shape(chat=bool(messages), job_id=job_id, created=int(submission.payload.enqueued_at))
    if body.stream:
        model = served.model.name if served.model else body.model or OWNER
        usage = bool(body.stream_options and body.stream_options.include_usage)
        headers["X-Job-Id"] = job_id
        return await _stream(
            request,
            shape,
            subject=principal.subject,
            model=model,
            usage=usage,
            headers=headers,
        )
    final = await state.jobs.wait(job_id)
    if final is None:
        raise wait_timeout(job_id, headers)
    if isinstance(final, ErrorEvent):
        raise job_failure(final.code, final.message)
    assert isinstance(final, DoneEvent)
    return json_response(shape.completion(final.result), headers=headers)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Shape:
    """Which OpenAI object family a job answers in, with its id and creation time."""

    chat: bool
    job_id: str
    created: int

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{self.job_id}"

    def completion(self, result: GenerateResult) -> ChatCompletion | TextCompletion:
        finish = _finish_reason(result)
        common = {"id": self.id, "created": self.created, "model": result.model}
        if self.chat:
            message = AssistantMessage(content=result.text, refusal=None)
            choice = ChatChoice(message=message, finish_reason=finish, logprobs=None)
            return ChatCompletion(**common, choices=[choice], usage=result.usage)
        choices = [TextChoice(text=result.text, finish_reason=finish, logprobs=None)]
        return TextCompletion(**common, choices=choices, usage=result.usage)

    def chunk(self, model: str, *, delta: Delta, finish: Any = None) -> Any:
        common = {"id": self.id, "created": self.created, "model": model}
        if self.chat:
            return ChatCompletionChunk(
                **common, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
            )
        choice = TextChoice(text=delta.content or "", finish_reason=finish, logprobs=None)
        return TextCompletion(**common, choices=[choice])

    def usage_chunk(self, model: str, usage: Usage) -> Any:
        kind = ChatCompletionChunk if self.chat else TextCompletion
        return kind(id=self.id, created=self.created, model=model, choices=[], usage=usage)


def _finish_reason(result: GenerateResult) -> OpenAIFinish:
    if result.finish_reason in ("stop", "length"):
        return result.finish_reason
    raise job_failure(result.finish_reason, f"the job ended {result.finish_reason}")


async def _stream(
    request: web.Request,
    shape: _Shape,
    *,
    subject: str,
    model: str,
    usage: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    """SSE as OpenAI sends it: role chunk, content deltas, finish chunk, ``data: [DONE]``.

    A failure becomes ``data: {"error": ...}`` then ``data: [DONE]`` (OpenAI's clients
    raise it); a client that leaves mid-stream cancels its job (the job service's relay
    does that).
    """

    async def send(response: EventSourceResponse, value: object) -> None:
        await response.send(msgspec.json.encode(value).decode())

    async def send_error(response: EventSourceResponse, problem: Problem) -> None:
        await send(response, openai_error(problem))
        await response.send("[DONE]")

    async def failed(response: EventSourceResponse) -> None:
        await send_error(response, job_failure("internal", "the gateway failed while streaming"))

    async with relayed_events(
        request, shape.job_id, subject=subject, headers=headers, failed=failed
    ) as (response, events):
        if shape.chat:
            await send(response, shape.chunk(model, delta=Delta(role="assistant", content="")))
        async for item in events:
            if isinstance(item, TextDelta):
                await send(response, shape.chunk(model, delta=Delta(content=item.text)))
            elif isinstance(item, DoneEvent):
                try:
                    finish = _finish_reason(item.result)
                except Problem as problem:
                    await send_error(response, problem)
                    break
                await send(response, shape.chunk(model, delta=Delta(), finish=finish))
                if usage:
                    await send(response, shape.usage_chunk(model, item.result.usage))
                await response.send("[DONE]")
            elif isinstance(item, ErrorEvent):
                await send_error(response, job_failure(item.code, item.message))
    return response
