"""``python -m services.worker``: serve generation jobs until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Pin CPU threads before torch loads, then run the worker."""
    from services.protocol.process import reset_signals
    from services.worker.settings import load_settings

    reset_signals()

    try:
        settings = load_settings(os.environ)
    except ValueError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    # torch reads these once, at import; the generation thread ignores set_num_threads.
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import asyncio

    from services.protocol.logs import configure_logging
    from services.worker.loading import ModelLoadError
    from services.worker.main import serve

    configure_logging(level=os.environ.get("TINYLLAMA_LOG_LEVEL", "INFO"))
    try:
        asyncio.run(serve(settings))
    except ModelLoadError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):  # stopped before it was ready
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
