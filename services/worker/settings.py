"""The worker's one frozen settings object, built once at start-up."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from services.protocol import names

DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
DEMO_MODEL = "demo"  # the tiny random model (tests, benchmarks): its answers are noise
SMOLLM2_MODEL = "smollm2"  # SmolLM2-135M-Instruct from PyPI: the default when offline
ENGINES = ("auto", "static", "transformers")  # TINYLLAMA_ENGINE


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Everything the worker needs; nothing else reads the environment."""

    env: str = "local"
    worker_id: str = ""
    redis_url: str = dataclasses.field(default="redis://127.0.0.1:6379/0", repr=False)
    queue_name: str = names.QUEUE_NAME
    model: str = DEFAULT_MODEL  # hub id | folder | s3:// | path.gguf | smollm2 | demo
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    threads: int = 1
    cache_dir: Path = Path.home() / ".cache" / "tinyllama"
    max_batch: int = 32  # concurrent sequences; ARQ's max_jobs is matched to it
    max_batch_tokens: int = 512  # tokens per forward pass (chunked prefill)
    cache_tokens: int = 32_768  # KV cache, in tokens, for all sequences (static: max_batch slots)
    block_size: int = 32  # KV cache page size, in tokens
    cuda_graphs: str = "auto"  # auto (on for CUDA) | on | off
    engine: str = "auto"  # auto (static for Llama, else transformers) | static | transformers
    max_new_tokens: int = 2_048
    poll_delay_s: float = 0.005
    heartbeat_s: float = 2.0
    heartbeat_ttl_s: float = 15.0
    lease_s: float = 10.0  # a dead worker's jobs run again after this long
    result_ttl_s: int = 86_400
    job_timeout_s: float = 600.0
    drain_timeout_s: float = 30.0
    delivery_timeout_s: float = 30.0  # Redis takes no events this long: the job fails
    warmup: bool = True
    idle_unit_s: float = 60.0  # one "idle minute" (tests shorten it)
    metrics_port: int = 9101  # Prometheus /metrics of this worker; 0 = off
    metrics_host: str = "127.0.0.1"  # where it binds: TINYLLAMA_HOST, as the gateway's port
    publish_metrics: bool = False  # CloudWatch WorkerHeartbeat for the alarms (AWS)


def load_settings(environ: Mapping[str, str]) -> WorkerSettings:
    """Settings from the registry (``TINYLLAMA_ENV``'s path) with ``environ`` on top.

    Malformed values are errors, never silently defaulted.
    """
    from services.registry import keys
    from services.registry.layering import layered_environ, redis_url_with_password
    from services.registry.values import present, read_fields

    environ = layered_environ(
        environ,
        sources={
            keys.REDIS_URL: "REDIS_URL",
            keys.QUEUE_NAME: "TINYLLAMA_QUEUE_NAME",
            keys.MODEL_ID: "TINYLLAMA_MODEL",
        },
    )
    values: dict[str, object] = read_fields(
        environ,
        fields={
            "env": ("TINYLLAMA_ENV", str),
            "worker_id": ("TINYLLAMA_WORKER_ID", str),
            "redis_url": ("REDIS_URL", str),
            "queue_name": ("TINYLLAMA_QUEUE_NAME", str),
            "model": ("TINYLLAMA_MODEL", str),
            "device": ("TINYLLAMA_DEVICE", str),
            "dtype": ("TINYLLAMA_DTYPE", str),
            "cuda_graphs": ("TINYLLAMA_CUDA_GRAPHS", str),
            "engine": ("TINYLLAMA_ENGINE", str),
            "threads": ("TINYLLAMA_THREADS", int),
            "max_batch": ("TINYLLAMA_MAX_BATCH", int),
            "max_batch_tokens": ("TINYLLAMA_MAX_BATCH_TOKENS", int),
            "cache_tokens": ("TINYLLAMA_CACHE_TOKENS", int),
            "block_size": ("TINYLLAMA_BLOCK_SIZE", int),
            "max_new_tokens": ("TINYLLAMA_MAX_NEW_TOKENS", int),
            "poll_delay_s": ("TINYLLAMA_POLL_DELAY", float),
            "heartbeat_s": ("TINYLLAMA_HEARTBEAT", float),
            "lease_s": ("TINYLLAMA_LEASE", float),
            "idle_unit_s": ("TINYLLAMA_IDLE_UNIT_S", float),
            "metrics_port": ("TINYLLAMA_METRICS_PORT", int),
            "metrics_host": ("TINYLLAMA_HOST", str),
            "job_timeout_s": ("TINYLLAMA_JOB_TIMEOUT", float),
            "drain_timeout_s": ("TINYLLAMA_DRAIN_TIMEOUT", float),
            "delivery_timeout_s": ("TINYLLAMA_DELIVERY_TIMEOUT", float),
            "publish_metrics": ("TINYLLAMA_PUBLISH_METRICS", bool),
            "warmup": ("TINYLLAMA_WARMUP", bool),
        },
    )
    if (value := present(environ, "TINYLLAMA_CACHE_DIR")) is not None:
        values["cache_dir"] = Path(value).expanduser()
    if present(environ, "REDIS_PASSWORD"):
        url = str(values.get("redis_url", WorkerSettings.redis_url))
        values["redis_url"] = redis_url_with_password(url, present(environ, "REDIS_PASSWORD"))
    settings = dataclasses.replace(WorkerSettings(), **values)
    if not settings.worker_id:
        settings = dataclasses.replace(settings, worker_id=f"{socket.gethostname()}-{os.getpid()}")
    if settings.cuda_graphs not in ("auto", "on", "off"):
        raise ValueError("TINYLLAMA_CUDA_GRAPHS must be auto, on or off")
    if settings.engine not in ENGINES:
        raise ValueError(
            f"TINYLLAMA_ENGINE must be one of {', '.join(ENGINES)}, not {settings.engine!r}"
        )
    if settings.lease_s <= settings.heartbeat_s:
        raise ValueError("TINYLLAMA_LEASE must be longer than TINYLLAMA_HEARTBEAT (leases renew)")
    if settings.delivery_timeout_s <= 0:
        raise ValueError("TINYLLAMA_DELIVERY_TIMEOUT must be > 0")
    if settings.max_batch < 1 or settings.cache_tokens < settings.block_size:
        raise ValueError(
            "TINYLLAMA_MAX_BATCH must be >= 1 and TINYLLAMA_CACHE_TOKENS >= block size"
        )
    return settings
