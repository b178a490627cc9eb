"""Build the registry a process should use from its bootstrap variables.

Only these variables are read, and only when :func:`open_registry` is called
(never at import time):

- ``TINYLLAMA_ENV``: environment name, default ``local``.
- ``TINYLLAMA_REGISTRY``: ``file`` (default) or ``ssm``.
- ``TINYLLAMA_REGISTRY_FILE``: the file backend's file, default
  ``var/registry.json`` relative to the working directory; a missing file is
  an empty registry.

The SSM backend takes region, credentials and endpoint from boto3's own
chain (``AWS_REGION``, ``AWS_ENDPOINT_URL_SSM``, profiles, roles).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.registry.backend import Backend
from services.registry.errors import RegistryError
from services.registry.files import FileBackend
from services.registry.registry import Registry

ENV_VAR = "TINYLLAMA_ENV"
BACKEND_VAR = "TINYLLAMA_REGISTRY"
FILE_VAR = "TINYLLAMA_REGISTRY_FILE"

DEFAULT_ENV = "local"
DEFAULT_BACKEND = "file"
DEFAULT_FILE = "var/registry.json"
BACKENDS = ("file", "ssm")


def open_registry(*, environ: Mapping[str, str]) -> Registry:
    """Return the registry named by ``environ`` (pass ``os.environ`` at start-up)."""
    env = environ.get(ENV_VAR) or DEFAULT_ENV
    return Registry(env, open_backend(environ=environ))


def open_backend(*, environ: Mapping[str, str]) -> Backend:
    """Return the backend named by ``TINYLLAMA_REGISTRY`` in ``environ``."""
    kind = (environ.get(BACKEND_VAR) or DEFAULT_BACKEND).strip().lower()
    if kind == "file":
        return FileBackend(environ.get(FILE_VAR) or DEFAULT_FILE)
    if kind == "ssm":
        # Imported here so that the file backend works where boto3 is not installed.
        from services.registry.ssm import SsmBackend, create_ssm_client

        return SsmBackend(create_ssm_client())
    raise RegistryError(
        f"unknown registry backend {kind!r} in {BACKEND_VAR}: use one of {', '.join(BACKENDS)}"
    )
