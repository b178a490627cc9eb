"""msgpack for everything on Redis: whoever can write Redis must not run code.

ARQ pickles by default; both sides pass these functions instead.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.protocol.messages import Heartbeat, JobEvent, JobPayload

_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(JobEvent)


def _encode_fallback(obj: Any) -> Any:
    # ARQ stores a failed job's exception as its result; keep its text only.
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    # msgspec's enc_hook protocol: NotImplementedError means "not a type I can encode".
    raise NotImplementedError(f"cannot serialize {type(obj).__name__}")


_job_encoder = msgspec.msgpack.Encoder(enc_hook=_encode_fallback)
_job_decoder = msgspec.msgpack.Decoder()


def serialize_job(data: dict[str, Any]) -> bytes:
    """ARQ ``job_serializer``: a job or result dict to msgpack."""
    return _job_encoder.encode(data)


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """ARQ ``job_deserializer``: msgpack back to plain Python data (never objects)."""
    return _job_decoder.decode(raw)


def encode_payload(payload: JobPayload) -> dict[str, Any]:
    """A payload as plain builtins, the form ARQ passes as job kwargs."""
    return msgspec.to_builtins(payload)


def decode_payload(data: dict[str, Any]) -> JobPayload:
    """Job kwargs back into a validated payload."""
    return msgspec.convert(data, JobPayload)


def encode_event(event: JobEvent) -> bytes:
    """One event as the bytes stored in the job's stream entry."""
    return _event_encoder.encode(event)


def decode_event(raw: bytes) -> JobEvent:
    """Bytes from a stream entry back into an event."""
    return _event_decoder.decode(raw)


_heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)


def encode_heartbeat(beat: Heartbeat) -> bytes:
    """A heartbeat as stored under the worker's key."""
    return _event_encoder.encode(beat)


def decode_heartbeat(raw: bytes) -> Heartbeat:
    """A stored heartbeat back into its Struct."""
    return _heartbeat_decoder.decode(raw)
