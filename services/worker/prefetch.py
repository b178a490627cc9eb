"""``python -m services.worker.prefetch``: put the model in the cache, load nothing.

A GPU host runs this once while it warms up for the warm pool (the lifecycle
script in ``cdk/gpu_host.py``), with the host folder that the worker task later
mounts as its cache. The worker then loads from its own volume: no hub or S3
download while a request waits for the first token.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from services.worker.loading import ModelLoadError, resolve_source
from services.worker.settings import WorkerSettings, load_settings

log = logging.getLogger("tinyllama.worker.prefetch")


def prefetch(settings: WorkerSettings) -> str:
    """Fetch (or convert) ``settings.model`` into the cache; return where it now lies.

    ``s3://`` prefixes are mirrored and GGUF files converted by ``resolve_source``
    itself; a hub id is downloaded whole into ``HF_HOME`` (the cache volume).
    """
    where, name, _ = resolve_source(settings)
    if where == settings.model and not Path(where).expanduser().is_dir():
        from huggingface_hub import snapshot_download

        where = snapshot_download(where)
    log.info("model in cache", extra={"model": name, "path": where})
    return where


def main() -> int:
    """Prefetch the configured model; exit 2 on a configuration or download error."""
    from services.protocol.logs import configure_logging

    configure_logging(level=os.environ.get("TINYLLAMA_LOG_LEVEL", "INFO"))
    try:
        print(prefetch(load_settings(os.environ)))
    except (ValueError, OSError, ModelLoadError) as exc:
        print(f"prefetch: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
