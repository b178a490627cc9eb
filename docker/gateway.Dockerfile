# The gateway image: aiohttp + the JWT/queue code, no torch.
#
#   docker build -f docker/gateway.Dockerfile -t tinyllama-gateway .
#
# Build context: the repo root (.dockerignore keeps it small). CDK builds this
# same file for Fargate (cdk/stack.py), compose for a laptop.

# --- builder: resolve the exact pins into a venv that the runtime copies whole.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY requirements/gateway.txt /tmp/requirements/gateway.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/gateway.txt

# --- runtime: the venv, the code, an unprivileged user; no compilers, no pip cache.
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TINYLLAMA_HOST=0.0.0.0 \
    TINYLLAMA_PORT=8080
# /keys: where compose's dev-keys volume mounts (the dev issuer's JWKS); created
# here so that a fresh named volume inherits the app user's ownership.
RUN groupadd --system --gid 10001 tinyllama \
    && useradd --system --uid 10001 --gid tinyllama --home-dir /app --shell /usr/sbin/nologin tinyllama \
    && mkdir -p /app /keys \
    && chown tinyllama:tinyllama /app /keys
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY services ./services
COPY clients ./clients
USER 10001:10001
EXPOSE 8080
# aiohttp's run_app turns SIGTERM into a graceful shutdown (cleanup_ctx closes Redis).
STOPSIGNAL SIGTERM
# slim has no curl: ask /health with the standard library, on the port the app binds.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TINYLLAMA_PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "services.gateway"]
